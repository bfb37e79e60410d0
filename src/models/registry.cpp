#include "xfer/models/registry.h"

#include <map>
#include <mutex>

#include "xfer/models/cnn.h"
#include "xfer/models/mlp.h"
#include "xfer/models/resnet.h"
#include "xfer/models/vit.h"

namespace xfer::models {
namespace {

struct Entry {
  Factory factory;
  std::string description;
  SizeFn size;
};

std::map<std::string, Entry>& table() {
  static std::map<std::string, Entry> t;
  return t;
}

std::mutex& table_mutex() {
  static std::mutex m;
  return m;
}

// The built-in models; called once, lazily, so static-initialisation order
// and dead-stripping of a static library cannot lose them.
void register_builtins_locked() {
  static bool done = false;
  if (done) return;
  done = true;
  table()["mlp"] = {make_mlp, "multi-layer perceptron (options: hidden, dropout)", mlp_size};
  table()["cnn"] = {make_cnn, "conv net for small images (options: widths, convs, hidden, dropout)",
                    cnn_size};
  table()["resnet"] = {make_small_resnet,
                       "small ResNet for 28x28 inputs, torchvision key names (options: widths, "
                       "blocks, pool_stages)",
                       small_resnet_size};
  table()["resnet18"] = {make_resnet18,
                         "torchvision ResNet-18, loads torchvision weights (options: small_input)",
                         resnet18_size};
  table()["resnet34"] = {make_resnet34,
                         "torchvision ResNet-34, loads torchvision weights (options: small_input)",
                         resnet34_size};
  table()["resnet50"] = {
      make_resnet50,
      "torchvision ResNet-50 (v1.5), loads torchvision weights (options: small_input)",
      resnet50_size};
  table()["vit"] = {make_vit,
                    "Vision Transformer, timm key names (options: patch_size, dim, depth, heads, "
                    "mlp_ratio, dropout)",
                    vit_size};
}

}  // namespace

void register_model(const std::string& name, Factory factory, std::string description,
                    SizeFn size) {
  std::lock_guard<std::mutex> lock(table_mutex());
  register_builtins_locked();
  table()[name] = {std::move(factory), std::move(description), std::move(size)};
}

namespace {

Entry find_checked(const std::string& name, const ModelOptions& options) {
  Entry entry;
  {
    std::lock_guard<std::mutex> lock(table_mutex());
    register_builtins_locked();
    auto it = table().find(name);
    if (it == table().end()) {
      std::string known;
      for (const auto& [k, v] : table()) known += (known.empty() ? "" : ", ") + k;
      throw UsageError(str_cat("--arch: unknown architecture '", name, "' (known: ", known, ")"));
    }
    entry = it->second;
  }
  XFER_CHECK(options.in_channels >= 1 && options.in_channels <= 64,
             "model: in_channels must be in [1, 64], got ", options.in_channels);
  XFER_CHECK(options.image_size >= 1, "model: image_size must be >= 1, got ", options.image_size);
  XFER_CHECK(options.num_classes >= 1, "model: num_classes must be >= 1, got ", options.num_classes);
  XFER_CHECK(options.arch_options.is_object(), "model: arch options must be a JSON object");
  return entry;
}

}  // namespace

Classifier create_model(const std::string& name, const ModelOptions& options) {
  return find_checked(name, options).factory(options);
}

std::optional<ModelSize> model_size(const std::string& name, const ModelOptions& options) {
  Entry entry = find_checked(name, options);
  if (!entry.size) return std::nullopt;
  return entry.size(options);
}

std::vector<std::string> model_names() {
  std::lock_guard<std::mutex> lock(table_mutex());
  register_builtins_locked();
  std::vector<std::string> names;
  for (const auto& [k, v] : table()) names.push_back(k);
  return names;
}

std::string model_description(const std::string& name) {
  std::lock_guard<std::mutex> lock(table_mutex());
  register_builtins_locked();
  auto it = table().find(name);
  return it == table().end() ? std::string() : it->second.description;
}

void check_arch_options(const std::string& arch, const Json& options,
                        const std::vector<std::string>& known) {
  XFER_CHECK_USAGE(options.is_object(), arch, ": arch options must be a JSON object");
  for (const auto& [key, value] : options.items()) {
    bool ok = false;
    for (const auto& k : known) ok = ok || k == key;
    if (!ok) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw UsageError(str_cat(arch, ": unknown arch option '", key, "' (known: ", list, ")"));
    }
  }
}

}  // namespace xfer::models
