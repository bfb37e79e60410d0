#include "xfer/models/torchscript.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>

#include <caffe2/serialize/read_adapter_interface.h>

#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/sha256.h"

namespace xfer::models {
namespace {
std::string alias(const std::string& dotted) {
  std::string name = dotted;
  for (size_t i; (i = name.find('.')) != std::string::npos;) name.replace(i, 1, "__");
  return "ts__" + name;
}
}  // namespace

namespace {

/// Serves an archive from bytes held in memory. A read past the end returns
/// what is there (LibTorch's MemoryReadAdapter copies whatever is asked).
class BytesReadAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BytesReadAdapter(std::string bytes) : bytes_(std::move(bytes)) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= bytes_.size()) return 0;
    n = static_cast<size_t>(std::min<uint64_t>(n, bytes_.size() - pos));
    std::memcpy(buf, bytes_.data() + pos, n);
    return n;
  }

 private:
  std::string bytes_;
};

}  // namespace

torch::jit::Module load_torchscript(const std::string& path, const std::string& expected_sha256,
                                    std::string* sha256) {
  std::error_code ec;
  XFER_CHECK(std::filesystem::is_regular_file(path, ec), path, ": no such file");
  std::string bytes = read_file(path);
  const std::string hash = sha256_hex(bytes);
  XFER_CHECK(expected_sha256.empty() || hash == expected_sha256, path, ": sha256 ", hash,
             " differs from the expected ", expected_sha256);
  if (sha256) *sha256 = hash;
  try {
    return torch::jit::load(std::make_shared<BytesReadAdapter>(std::move(bytes)), torch::kCPU);
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    auto nl = msg.find('\n');
    if (nl != std::string::npos) msg.resize(nl);
    throw Error(str_cat(path, ": not a readable TorchScript archive (", msg,
                        "); export with torch.jit.script(model).save(path) or torch.jit.trace"));
  }
}

TorchScriptClassifierImpl::TorchScriptClassifierImpl(torch::jit::Module module, std::string mode,
                                                     std::vector<int64_t> input_shape,
                                                     int64_t num_classes)
    : module_(std::move(module)), mode_(std::move(mode)) {
  XFER_CHECK(mode_ == "classifier" || mode_ == "backbone",
             "torchscript mode must be classifier or backbone, got '", mode_, "'");
  XFER_CHECK(input_shape.size() == 3, "torchscript: input shape must be C,H,W");
  // Alias the scripted parameters so optimisers, freezing and state dicts see
  // them; "." is not allowed in a parameter name, so it becomes "__".
  for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
    std::string name = p.name;
    for (size_t i; (i = name.find('.')) != std::string::npos;) name.replace(i, 1, "__");
    register_parameter("ts__" + name, p.value, p.value.requires_grad());
  }
  // Buffers too (BatchNorm running statistics), so state dicts are complete.
  for (const auto& b : module_.named_buffers(/*recurse=*/true)) {
    register_buffer(alias(b.name), b.value);
  }
  module_.eval();
  torch::Tensor out;
  {
    torch::NoGradGuard no_grad;
    auto probe = torch::zeros({2, input_shape[0], input_shape[1], input_shape[2]});
    try {
      auto iv = module_.forward({probe});
      XFER_CHECK(iv.isTensor(), "torchscript: forward must return one tensor");
      out = iv.toTensor();
    } catch (const c10::Error& e) {
      std::string msg = e.what_without_backtrace();
      auto nl = msg.find('\n');
      if (nl != std::string::npos) msg.resize(nl);
      throw Error(str_cat("torchscript: forward on a [2,", input_shape[0], ",", input_shape[1], ",",
                          input_shape[2], "] input failed: ", msg));
    }
  }
  XFER_CHECK(out.dim() >= 2 && out.size(0) == 2, "torchscript: output shape ", out.sizes(),
             " is not [batch, ...]");
  num_features_ = out.flatten(1).size(1);
  if (mode_ == "backbone") {
    init_head(num_features_, num_classes);
  } else {
    XFER_CHECK(num_classes <= 0 || num_classes == num_features_, "torchscript: the module outputs ",
               num_features_, " logits but ", num_classes, " classes were asked for");
  }
}

torch::Tensor TorchScriptClassifierImpl::forward_features(torch::Tensor x) {
  return module_.forward({x}).toTensor().flatten(1);
}

namespace {

bool is_batch_norm(const torch::jit::Module& m) {
  auto type = m.type()->name();
  return type && type->qualifiedName().find("BatchNorm") != std::string::npos;
}

}  // namespace

void TorchScriptClassifierImpl::train(bool on) {
  ClassifierImpl::train(on);
  module_.train(on);
  if (!on || pinned_eval().empty()) return;
  const auto& pinned = pinned_eval();
  for (const auto& item : module_.named_modules()) {
    if (std::find(pinned.begin(), pinned.end(), alias(item.name)) != pinned.end()) {
      torch::jit::Module m = item.value;
      m.eval();
    }
  }
}

std::vector<ParamStage> TorchScriptClassifierImpl::backbone_stages() const {
  std::vector<ParamStage> stages;
  for (const auto& child : module_.named_children()) {
    if (child.value.parameters(true).size() == 0) continue;
    stages.push_back({child.name, {alias(child.name)}});
  }
  std::vector<std::string> direct;
  for (const auto& p : module_.named_parameters(/*recurse=*/false)) direct.push_back(alias(p.name));
  if (!direct.empty()) {
    if (stages.empty()) stages.push_back({"stem", {}});
    stages.front().prefixes.insert(stages.front().prefixes.begin(), direct.begin(), direct.end());
  }
  return stages;
}

std::vector<std::string> TorchScriptClassifierImpl::batch_norm_layers() const {
  std::vector<std::string> names = ClassifierImpl::batch_norm_layers();
  for (const auto& item : module_.named_modules()) {
    if (!item.name.empty() && is_batch_norm(item.value)) names.push_back(alias(item.name));
  }
  return names;
}

bool TorchScriptClassifierImpl::layer_is_training(const std::string& name) const {
  for (const auto& item : module_.named_modules()) {
    if (alias(item.name) == name) return item.value.is_training();
  }
  return ClassifierImpl::layer_is_training(name);
}

}  // namespace xfer::models
