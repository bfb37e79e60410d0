#include "xfer/io/import.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>

#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/sha256.h"
#include "xfer/models/registry.h"
#include "xfer/models/torchscript.h"

namespace xfer::io {

std::string ImportReport::summary() const {
  std::string s = load.summary();
  if (!stripped_prefixes.empty()) {
    s += "; stripped prefixes";
    for (const auto& p : stripped_prefixes) s += " '" + p + "'";
  }
  if (head_dropped) s += "; head dropped (class count differs)";
  if (input_conv_adapted) s += "; " + input_conv_key + " adapted to the input channels";
  return s;
}

std::vector<std::string> strip_prefixes(TensorFile& file) {
  static const std::vector<std::string> kPrefixes = {"module.", "_orig_mod."};
  std::vector<std::string> removed;
  for (auto& [name, t] : file.tensors) {
    // Strip at the start only, repeatedly ("module._orig_mod.x" -> "x").
    for (bool again = true; again;) {
      again = false;
      for (const auto& prefix : kPrefixes) {
        if (name.compare(0, prefix.size(), prefix) == 0) {
          name = name.substr(prefix.size());
          again = true;
          if (std::find(removed.begin(), removed.end(), prefix) == removed.end()) {
            removed.push_back(prefix);
          }
        }
      }
    }
  }
  std::map<std::string, int> seen;
  for (const auto& [name, t] : file.tensors) {
    XFER_CHECK(++seen[name] == 1, "weights: two tensors map to '", name, "' after stripping prefixes");
  }
  return removed;
}

torch::Tensor adapt_input_conv(const torch::Tensor& weight, int64_t in_channels) {
  XFER_CHECK(weight.dim() == 4, "adapt_input_conv: expected a 4-d conv weight, got ", weight.sizes());
  XFER_CHECK(in_channels >= 1, "adapt_input_conv: in_channels must be >= 1");
  const int64_t c = weight.size(1);
  if (c == in_channels) return weight;
  XFER_CHECK(c >= 1 && weight.numel() > 0, "adapt_input_conv: an empty conv weight ",
             weight.sizes(), " cannot be adapted to ", in_channels, " input channels");
  auto w = weight.to(torch::kFloat);
  torch::Tensor out;
  if (in_channels == 1) {
    out = w.sum(1, /*keepdim=*/true);
  } else {
    int64_t repeat = (in_channels + c - 1) / c;
    out = w.repeat({1, repeat, 1, 1}).slice(1, 0, in_channels) * (double(c) / double(in_channels));
  }
  return out.to(weight.scalar_type());
}

ImportReport import_weights(models::ClassifierImpl& model, const std::string& path,
                            const ImportOptions& options) {
  ImportReport report;
  // One read: the id names exactly the bytes that are loaded.
  const std::string bytes = read_file(path);
  report.sha256 = sha256_hex(bytes);
  if (!options.expected_sha256().empty()) {
    XFER_CHECK(report.sha256 == options.expected_sha256(), path, ": sha256 ", report.sha256,
               " differs from the expected ", options.expected_sha256());
  }
  TensorFile file = parse_safetensors(bytes, path);
  report.stripped_prefixes = strip_prefixes(file);

  std::map<std::string, torch::Tensor> own;
  for (const auto& p : model.named_parameters(true)) own[p.key()] = p.value();
  const std::string hw = model.head_name() + ".weight", hb = model.head_name() + ".bias";

  // Drop the file's head when its class count differs from the model's, or when asked to.
  const bool replaced = options.drop_head() && (file.contains(hw) || file.contains(hb));
  if (replaced ||
      (model.has_head() && file.contains(hw) && file.at(hw).sizes() != own.at(hw).sizes() &&
       file.at(hw).dim() == 2 && file.at(hw).size(1) == own.at(hw).size(1))) {
    std::vector<std::pair<std::string, torch::Tensor>> kept;
    for (auto& kv : file.tensors) {
      if (kv.first != hw && kv.first != hb) kept.push_back(kv);
    }
    file.tensors = std::move(kept);
    report.head_dropped = true;
  }
  // Adapt the first convolution to the model's input channels.
  for (const auto& p : model.named_parameters(true)) {
    if (p.value().dim() != 4) continue;
    const auto& key = p.key();
    if (file.contains(key)) {
      const auto& fw = file.at(key);
      const auto& mw = p.value();
      if (fw.dim() == 4 && fw.size(0) == mw.size(0) && fw.size(2) == mw.size(2) &&
          fw.size(3) == mw.size(3) && fw.size(1) != mw.size(1)) {
        auto adapted = adapt_input_conv(fw, mw.size(1));
        for (auto& kv : file.tensors) {
          if (kv.first == key) kv.second = adapted;
        }
        report.input_conv_adapted = true;
        report.input_conv_key = key;
      }
    }
    break;  // only the first convolution
  }
  // (load_state_dict refuses integer data for a floating-point parameter and back)
  bool head_may_miss = options.allow_missing_head() || options.drop_head() || report.head_dropped;
  report.load = load_state_dict(model, file, /*strict=*/false, path);
  if (head_may_miss) {
    std::vector<std::string> missing;
    for (const auto& k : report.load.missing) {
      if (k != hw && k != hb) missing.push_back(k);
    }
    report.load.missing = missing;
  }
  XFER_CHECK(!options.strict() || report.load.ok(), path,
             ": weights do not match the model: ", report.load.summary());
  return report;
}

void ModelSource::validate(bool input_shape_from_data) const {
  int n = !dir.empty() + !weights.empty() + !torchscript.empty();
  XFER_CHECK_USAGE(n == 1, "give exactly one of --model, --weights or --torchscript");
  if (!weights.empty()) {
    XFER_CHECK_USAGE(!arch.empty(), "--weights needs --arch");
  }
  if (!weights_sha256.empty()) {
    const bool hex = weights_sha256.size() == 64 &&
                     std::all_of(weights_sha256.begin(), weights_sha256.end(), [](char c) {
                       return std::isxdigit(static_cast<unsigned char>(c));
                     });
    XFER_CHECK_USAGE(hex, "--weights-sha256 must be 64 hex digits (a sha256), got '",
                     weights_sha256, "'");
  }
  if (!torchscript.empty()) {
    XFER_CHECK_USAGE(torchscript_mode == "classifier" || torchscript_mode == "backbone",
                     "--torchscript-mode must be classifier or backbone, got '", torchscript_mode, "'");
    XFER_CHECK_USAGE(torchscript_mode == "classifier" || num_classes > 0,
                     "--torchscript-mode backbone needs --num-classes");
  }
  if (dir.empty() && !(input_shape_from_data && input_shape.empty())) {
    XFER_CHECK_USAGE(input_shape.size() == 3, "--input-shape must be C,H,W");
    XFER_CHECK_USAGE(mean.size() == std.size(), "--mean and --std must have the same length");
    XFER_CHECK_USAGE(mean.empty() || static_cast<int64_t>(mean.size()) == input_shape[0],
                     "--mean/--std need one value per input channel");
  }
}

LoadedModel load_model_source(const ModelSource& source, ImportReport* report) {
  source.validate();
  // Digests compare in lower case (PowerShell's Get-FileHash prints upper case).
  ModelSource s = source;
  for (auto& c : s.weights_sha256)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!s.dir.empty()) {
    // A model directory's id is the sha256 of its weights (checked on load).
    auto lm = load_model_dir(s.dir);
    XFER_CHECK(s.weights_sha256.empty() || lm.card.id == s.weights_sha256, s.dir,
               ": weights sha256 ", lm.card.id, " differs from the expected ", s.weights_sha256);
    return lm;
  }
  LoadedModel lm;
  lm.config.input_shape = s.input_shape;
  lm.config.mean = s.mean;
  lm.config.std = s.std;
  if (!s.weights.empty()) {
    lm.path = s.weights;
    lm.config.arch = s.arch;
    try {
      lm.config.arch_options = Json::parse(s.arch_options);
    } catch (const nlohmann::json::exception&) {
      throw UsageError(str_cat("--arch-options: not valid JSON: ", s.arch_options));
    }
    int64_t k = s.num_classes;
    if (k <= 0 && s.replace_head) k = 1;  // the caller sizes the new head
    {
      // The file bounds the backbone before anything is built: every value
      // takes at least a byte of it, so --arch-options describing far more
      // cannot be these weights (and must not allocate them to find out).
      ModelConfig sizing = lm.config;
      sizing.num_classes = std::max<int64_t>(k, 1);
      std::error_code ec;
      const auto bytes = std::filesystem::file_size(s.weights, ec);
      const auto size = config_model_size(sizing);
      if (size && !ec && size->total - size->head > static_cast<double>(bytes)) {
        // A pinned file that is not the expected one is the better message
        // (hashed here only on this path; import_weights checks the pin).
        if (!s.weights_sha256.empty()) {
          const std::string hash = sha256_file(s.weights);
          XFER_CHECK(hash == s.weights_sha256, s.weights, ": sha256 ", hash,
                     " differs from the expected ", s.weights_sha256);
        }
        throw Error(str_cat(s.weights, ": weights do not match the model: --arch ", s.arch,
                            " with --arch-options ", s.arch_options, " has ",
                            format_count(size->total - size->head),
                            " values before its head, more than the file holds (", bytes, " bytes)"));
      }
    }
    if (k <= 0) {
      // The class count comes from the file's head; build once to learn its name.
      models::ModelOptions probe;
      probe.in_channels = s.input_shape[0];
      probe.image_size = s.input_shape[1];
      probe.num_classes = 1;
      probe.arch_options = lm.config.arch_options;
      auto m = models::create_model(s.arch, probe);
      TensorFile f = read_safetensors(s.weights);
      strip_prefixes(f);
      const std::string hw = m->head_name() + ".weight";
      XFER_CHECK(f.contains(hw) && f.at(hw).dim() == 2, s.weights, ": no head tensor '", hw,
                 "' to take the class count from; pass --num-classes");
      k = f.at(hw).size(0);
      // The header sizes the model: the cap of a model directory's config.json.
      XFER_CHECK(k >= 1 && k <= 1000000 && f.at(hw).size(1) >= 1, s.weights, ": head tensor '", hw,
                 "' has shape ", f.at(hw).sizes(), " (expected [1..1000000 classes, features])");
    }
    lm.config.num_classes = k;
    lm.model = build_model(lm.config);
    auto r =
        import_weights(*lm.model, s.weights,
                       ImportOptions().expected_sha256(s.weights_sha256).drop_head(s.replace_head));
    lm.card.id = r.sha256;
    lm.card.recipe = {{"source", "weights"}, {"arch", s.arch}};
    if (report) *report = r;
  } else {
    lm.path = s.torchscript;
    std::error_code ec;
    XFER_CHECK(std::filesystem::is_regular_file(s.torchscript, ec), s.torchscript,
               ": no such file");
    // Pinned before any of its code is loaded or run.
    auto module = models::load_torchscript(s.torchscript, s.weights_sha256, &lm.card.id);
    auto ts = models::TorchScriptClassifier(module, s.torchscript_mode, s.input_shape,
                                            s.num_classes);
    lm.model = ts.ptr();
    if (!s.mean.empty()) lm.model->set_normalization(s.mean, s.std);
    lm.config.arch = "torchscript";
    lm.config.arch_options = {{"mode", s.torchscript_mode}};
    lm.config.num_classes = lm.model->num_classes();
    lm.card.recipe = {{"source", "torchscript"}, {"mode", s.torchscript_mode}};
  }
  // An imported model does not know its classes' names: they stay empty, so it
  // is taken to predict the classes of any data with as many (label_space_matches).
  lm.model->eval();
  return lm;
}

void check_model_for_data(const LoadedModel& lm, const data::Dataset& ds, const std::string& spec,
                          bool check_classes) {
  const auto& shape = lm.config.input_shape;
  const std::vector<int64_t> data_shape{ds.channels(), ds.height(), ds.width()};
  XFER_CHECK(shape == data_shape, lm.path, ": the model takes ", shape.at(0), "x", shape.at(1), "x",
             shape.at(2), " images but ", spec, " has ", ds.channels(), "x", ds.height(), "x", ds.width());
  if (check_classes) {
    require_classifier(lm, "a classification of " + spec);
    XFER_CHECK(lm.model->num_classes() >= ds.num_classes(), lm.path, ": the model has ",
               lm.model->num_classes(), " classes but ", spec, " has ", ds.num_classes());
  }
}

bool label_space_matches(const LoadedModel& lm, const data::Dataset& ds) {
  if (lm.config.task != "classifier" || lm.model->num_classes() < ds.num_classes()) return false;
  const auto& names = lm.config.class_names;
  if (names.empty() || ds.class_names.empty()) return true;
  if (names.size() < ds.class_names.size()) return false;
  return std::equal(ds.class_names.begin(), ds.class_names.end(), names.begin());
}

}  // namespace xfer::io
