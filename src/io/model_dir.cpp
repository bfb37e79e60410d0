#include "xfer/io/model_dir.h"

#include <cmath>
#include <filesystem>
#include <iomanip>
#include <map>
#include <sstream>

#include "xfer/core/error.h"
#include "xfer/core/runtime.h"
#include "xfer/core/sha256.h"
#include "xfer/models/lora.h"
#include "xfer/models/registry.h"
#include "xfer/models/torchscript.h"

namespace fs = std::filesystem;

namespace xfer::io {

Json ModelConfig::to_json() const {
  Json j{{"format", "xfer-model/1"},
              {"arch", arch},
              {"arch_options", arch_options},
              {"num_classes", num_classes},
              {"input_shape", input_shape},
              {"mean", mean},
              {"std", std},
              {"class_names", class_names}};
  // Only when not the default, so classifiers' config.json keep their form.
  if (task != "classifier") j["task"] = task;
  if (!lora_targets.empty()) {
    j["adapters"] = {{"lora", lora.to_json()}};
    j["adapters"]["lora"]["targets"] = lora_targets;
  }
  if (head.kind() != "linear") j["head"] = {{"kind", head.kind()}, {"scale", head.scale()}};
  return j;
}

namespace {
// A file of another format version is refused rather than half understood;
// a file without the field (hand-written) reads as the current version.
void check_format(const Json& j, const char* expected, const std::string& what) {
  if (!j.contains("format")) return;
  XFER_CHECK(j["format"].is_string() && j["format"].get<std::string>() == expected, what,
             ": format ", j["format"].dump(), " is not ", expected,
             " (written by another version of xfer?)");
}
}  // namespace

ModelConfig ModelConfig::from_json(const Json& j, const std::string& what) {
  XFER_CHECK(j.is_object(), what, ": expected a JSON object");
  check_format(j, "xfer-model/1", what);
  ModelConfig c;
  c.arch = json_get<std::string>(j, "arch", what);
  c.arch_options = json_get_or<Json>(j, "arch_options", Json::object(), what);
  XFER_CHECK(c.arch_options.is_object(), what, ": arch_options must be an object");
  c.num_classes = json_get<int64_t>(j, "num_classes", what);
  XFER_CHECK(c.num_classes >= 1 && c.num_classes <= 1'000'000, what,
             ": num_classes must be in [1, 1e6], got ", c.num_classes);
  c.input_shape = json_get<std::vector<int64_t>>(j, "input_shape", what);
  XFER_CHECK(c.input_shape.size() == 3, what, ": input_shape must be [C, H, W]");
  for (int64_t d : c.input_shape) {
    XFER_CHECK(d >= 1 && d <= 65536, what, ": input_shape entries must be in [1, 65536]");
  }
  c.mean = json_get_or<std::vector<double>>(j, "mean", {}, what);
  c.std = json_get_or<std::vector<double>>(j, "std", {}, what);
  XFER_CHECK(c.mean.size() == c.std.size(), what, ": mean and std differ in length");
  XFER_CHECK(c.mean.empty() || static_cast<int64_t>(c.mean.size()) == c.input_shape[0], what,
             ": mean/std must have one value per input channel");
  for (double s : c.std) XFER_CHECK(s > 0, what, ": std values must be > 0");
  c.class_names = json_get_or<std::vector<std::string>>(j, "class_names", {}, what);
  XFER_CHECK(c.class_names.empty() || static_cast<int64_t>(c.class_names.size()) == c.num_classes,
             what, ": class_names has ", c.class_names.size(), " names but num_classes is ",
             c.num_classes);
  c.task = json_get_or<std::string>(j, "task", "classifier", what);
  XFER_CHECK(c.task == "classifier" || c.task == "embedding", what,
             ": task must be classifier or embedding, got '", c.task, "'");
  XFER_CHECK(c.task == "classifier" || c.class_names.empty(), what, ": an embedding model has no class_names");
  if (j.contains("adapters") && !j["adapters"].is_null()) {
    const Json& a = j["adapters"];
    XFER_CHECK(a.is_object() && a.size() == 1 && a.contains("lora"), what,
               ": adapters must be {\"lora\": {...}}");
    c.lora = models::LoraOptions::from_json(a["lora"], what + " adapters.lora");
    c.lora_targets = json_get<std::vector<std::string>>(a["lora"], "targets", what + " adapters.lora");
    XFER_CHECK(!c.lora_targets.empty(), what, ": adapters.lora.targets is empty");
  }
  if (j.contains("head") && !j["head"].is_null()) {
    const Json& h = j["head"];
    XFER_CHECK(h.is_object(), what, ": head must be an object {\"kind\": ..., \"scale\": ...}");
    c.head.kind(json_get<std::string>(h, "kind", what + " head"));
    c.head.scale(json_get_or<double>(h, "scale", 10.0, what + " head"));
    XFER_CHECK(c.head.kind() == "linear" || c.head.kind() == "cosine", what,
               ": head.kind must be linear or cosine, got '", c.head.kind(), "'");
    XFER_CHECK(std::isfinite(c.head.scale()) && c.head.scale() > 0 && c.head.scale() <= 1000, what,
               ": head.scale must be in (0, 1000], got ", c.head.scale());
  }
  return c;
}

Json ModelCard::to_json() const {
  Json p = nullptr;
  if (parent) p = Json{{"id", parent->id}, {"path", parent->path}};
  return Json{{"format", "xfer-card/1"}, {"id", id},       {"parent", p},
              {"recipe", recipe},        {"data", data},   {"metrics", metrics},
              {"xfer_version", xfer_version}, {"created", created}};
}

ModelCard ModelCard::from_json(const Json& j, const std::string& what) {
  XFER_CHECK(j.is_object(), what, ": expected a JSON object");
  check_format(j, "xfer-card/1", what);
  ModelCard c;
  c.id = json_get<std::string>(j, "id", what);
  XFER_CHECK(c.id.size() == 64, what, ": id must be a sha256 hex digest");
  if (j.contains("parent") && !j["parent"].is_null()) {
    const Json& p = j["parent"];
    c.parent = Parent{json_get<std::string>(p, "id", what + " parent"),
                      json_get_or<std::string>(p, "path", "", what + " parent")};
  }
  c.recipe = json_get_or<Json>(j, "recipe", Json::object(), what);
  c.data = json_get_or<Json>(j, "data", Json::object(), what);
  c.metrics = json_get_or<Json>(j, "metrics", Json::object(), what);
  c.xfer_version = json_get_or<std::string>(j, "xfer_version", "", what);
  c.created = json_get_or<std::string>(j, "created", "", what);
  return c;
}

TensorFile state_dict(const torch::nn::Module& m) {
  TensorFile f;
  for (const auto& item : m.named_parameters(true)) f.add(item.key(), item.value().detach());
  for (const auto& item : m.named_buffers(true)) f.add(item.key(), item.value().detach());
  return f;
}

std::string LoadReport::summary() const {
  std::string s;
  auto list = [&](const char* label, const std::vector<std::string>& v) {
    if (v.empty()) return;
    s += str_cat(s.empty() ? "" : "; ", v.size(), " ", label, " (");
    for (size_t i = 0; i < v.size() && i < 3; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > 3) s += ", ...";
    s += ")";
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("shape mismatch", shape_mismatch);
  return s.empty() ? "all keys matched" : s;
}

LoadReport load_state_dict(torch::nn::Module& m, const TensorFile& file, bool strict,
                           const std::string& what) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& item : m.named_parameters(true)) targets[item.key()] = item.value();
  for (const auto& item : m.named_buffers(true)) targets[item.key()] = item.value();
  LoadReport report;
  std::map<std::string, const torch::Tensor*> sources;
  for (const auto& [k, t] : file.tensors) sources[k] = &t;
  for (const auto& [k, t] : targets) {
    auto it = sources.find(k);
    if (it == sources.end()) {
      report.missing.push_back(k);
    } else if (it->second->sizes() != t.sizes()) {
      report.shape_mismatch.push_back(str_cat(k, " ", it->second->sizes(), " vs ", t.sizes()));
    }
  }
  for (const auto& [k, t] : sources) {
    if (!targets.count(k)) report.unexpected.push_back(k);
  }
  XFER_CHECK(!strict || report.ok(), what, ": weights do not match the model: ", report.summary());
  // A floating-point parameter must come from floating-point data (and a
  // counter such as num_batches_tracked from integers): no silent conversion.
  for (const auto& [k, t] : targets) {
    auto it = sources.find(k);
    if (it == sources.end()) continue;
    XFER_CHECK(it->second->is_floating_point() == t.is_floating_point(), what, ": tensor '", k,
               "' has dtype ", it->second->scalar_type(), " but the model expects ",
               t.scalar_type());
  }
  torch::NoGradGuard no_grad;
  for (auto& [k, t] : targets) {
    auto it = sources.find(k);
    if (it == sources.end() || it->second->sizes() != t.sizes()) continue;
    t.copy_(it->second->to(t.device(), t.scalar_type()));
  }
  return report;
}

namespace {
models::ModelOptions model_options(const ModelConfig& config) {
  models::ModelOptions o;
  o.in_channels = config.input_shape.at(0);
  o.image_size = config.input_shape.at(1);
  o.num_classes = config.num_classes;
  o.arch_options = config.arch_options;
  return o;
}
}  // namespace

std::optional<models::ModelSize> config_model_size(const ModelConfig& config) {
  if (config.arch == "torchscript") return std::nullopt;
  return models::model_size(config.arch, model_options(config));
}

std::string format_count(double values) {
  if (std::fabs(values) < 9e15) return std::to_string(static_cast<long long>(values));
  std::ostringstream os;
  os << std::setprecision(3) << values;
  return os.str();
}

models::Classifier build_model(const ModelConfig& config, const std::string& dir) {
  if (config.arch == "torchscript") {
    const Json& a = config.arch_options;
    const std::string what = (fs::path(dir) / "config.json").string();
    auto file = json_get<std::string>(a, "file", what + " arch_options");
    XFER_CHECK(!dir.empty() && file.find('/') == std::string::npos && file != ".." && !file.empty(),
               what, ": arch_options.file must name a file inside the model directory");
    const std::string path = (fs::path(dir) / file).string();
    const std::string expected = json_get<std::string>(a, "sha256", what + " arch_options");
    XFER_CHECK(expected.size() == 64, what, ": arch_options.sha256 must be a sha256 hex digest");
    auto ts =
        models::TorchScriptClassifier(models::load_torchscript(path, expected),
                                      json_get<std::string>(a, "mode", what + " arch_options"),
                                      config.input_shape, config.num_classes);
    models::Classifier model = ts.ptr();
    if (!config.mean.empty()) model->set_normalization(config.mean, config.std);
    model->set_head_options(config.head);
    return model;
  }
  auto model = models::create_model(config.arch, model_options(config));
  if (!config.mean.empty()) model->set_normalization(config.mean, config.std);
  if (!config.lora_targets.empty()) models::add_lora(*model, config.lora, config.lora_targets);
  model->set_head_options(config.head);
  return model;
}

ModelCard save_model_dir(const std::string& dir, models::ClassifierImpl& model,
                         const ModelConfig& config, ModelCard card, Overwrite overwrite,
                         const std::vector<std::pair<std::string, std::string>>& extra_files) {
  XFER_CHECK(model.num_classes() == config.num_classes, dir, ": model has ", model.num_classes(),
             " classes but config says ", config.num_classes);
  StagedDir staged(dir, overwrite);
  TensorFile weights = state_dict(model);
  weights.metadata["format"] = "pt";
  weights.metadata["arch"] = config.arch;
  std::string bytes = serialize_safetensors(weights);
  write_file_atomic(staged.file("model.safetensors"), bytes);
  card.id = sha256_hex(bytes);
  card.xfer_version = version();
  if (card.created.empty()) card.created = utc_timestamp();
  for (const auto& [name, content] : extra_files) write_file_atomic(staged.file(name), content);
  write_json(staged.file("config.json"), config.to_json());
  write_json(staged.file("card.json"), card.to_json());
  staged.commit();
  return card;
}

void require_classifier(const LoadedModel& m, const std::string& what) {
  XFER_CHECK_USAGE(m.config.task == "classifier", m.path, " is a self-supervised ", m.config.task,
                   " model (its head is a projection, not classes): ", what,
                   " needs a classifier; fine-tune it first (xfer finetune --from ", m.path, ")");
}

LoadedModel load_model_dir(const std::string& dir) {
  std::error_code ec;
  XFER_CHECK(fs::is_directory(dir, ec), dir, ": not a model directory (no such folder)");
  for (const char* name : {"config.json", "model.safetensors", "card.json"}) {
    XFER_CHECK(fs::exists(fs::path(dir) / name, ec), dir, ": not a model directory (missing ",
               name, ")");
  }
  LoadedModel lm;
  lm.path = dir;
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const std::string card_path = (fs::path(dir) / "card.json").string();
  const std::string weights_path = (fs::path(dir) / "model.safetensors").string();
  lm.config = ModelConfig::from_json(read_json(config_path), config_path);
  lm.card = ModelCard::from_json(read_json(card_path), card_path);
  // One read serves both the hash check and the parse.
  const std::string weights = read_file(weights_path);
  std::string hash = sha256_hex(weights);
  XFER_CHECK(hash == lm.card.id, weights_path, ": sha256 ", hash.substr(0, 12),
             "... does not match the id in card.json (", lm.card.id.substr(0, 12),
             "...): the weights were changed after the card was written");
  TensorFile file = parse_safetensors(weights, weights_path);
  try {
    // The weights bound the model before it is built: a config.json that
    // describes billions of parameters must not allocate them to find out.
    if (auto size = config_model_size(lm.config)) {
      double values = 0;
      for (const auto& [k, t] : file.tensors) values += static_cast<double>(t.numel());
      XFER_CHECK(size->total <= values, "arch '", lm.config.arch, "' with these options and ",
                 lm.config.num_classes, " classes has ", format_count(size->total),
                 " values but model.safetensors holds ", format_count(values));
    }
    lm.model = build_model(lm.config, dir);
  } catch (const Error& e) {
    // A bad arch in a file is the file's fault, not a flag's: name the file, exit 1.
    throw Error(str_cat(config_path, ": ", e.what()));
  }
  load_state_dict(*lm.model, file, true, weights_path);
  lm.model->eval();
  return lm;
}

}  // namespace xfer::io
