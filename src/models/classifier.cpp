#include "xfer/models/classifier.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <map>

#include "xfer/core/error.h"
#include "xfer/core/parse.h"
#include "xfer/models/lora.h"

namespace xfer::models {

torch::Tensor ClassifierImpl::forward(torch::Tensor x) {
  before_forward();
  return forward_head(forward_features(normalize(x)));
}

torch::Tensor ClassifierImpl::features(torch::Tensor x) {
  before_forward();
  return forward_features(normalize(x));
}

void ClassifierImpl::before_forward() {
  if (lora_) lora_->refresh();
  // A train() called on a stage or a wrapper, not on this model, reaches its
  // BatchNorm layers without passing through train() below: pinned layers go
  // back to eval before they see a batch.
  if (is_training()) {
    for (const auto& m : pinned_modules_) {
      if (m->is_training()) m->eval();
    }
  }
}

HeadOptions HeadOptions::parse(const std::string& text) {
  HeadOptions o;
  const auto colon = text.find(':');
  o.kind(text.substr(0, colon));
  if (colon != std::string::npos) {
    XFER_CHECK_USAGE(o.kind() == "cosine", "--head-type: only cosine takes a scale (cosine:SCALE), got '",
                     text, "'");
    o.scale(parse_number(text.substr(colon + 1), "--head-type " + text));
  }
  o.validate();
  return o;
}

std::string HeadOptions::str() const {
  if (kind_ != "cosine") return kind_;
  std::ostringstream s;
  s << kind_ << ":" << scale_;
  return s.str();
}

void HeadOptions::validate() const {
  XFER_CHECK_USAGE(kind_ == "linear" || kind_ == "cosine",
                   "--head-type: expected linear, cosine or cosine:SCALE, got '", kind_, "'");
  XFER_CHECK_USAGE(std::isfinite(scale_) && scale_ > 0 && scale_ <= 1000,
                   "--head-type: the cosine scale must be in (0, 1000], got ", scale_);
}

torch::Tensor ClassifierImpl::forward_head(torch::Tensor f) {
  if (!head_) return f;
  if (head_options_.kind() == "cosine") {
    namespace F = torch::nn::functional;
    const auto opts = F::NormalizeFuncOptions().dim(1).eps(1e-8);
    auto cos = F::normalize(f, opts).matmul(F::normalize(head_->weight, opts).t());
    auto logits = cos * head_options_.scale();
    return head_->bias.defined() ? logits + head_->bias : logits;
  }
  return head_->forward(f);
}

void ClassifierImpl::set_head_options(const HeadOptions& options) {
  options.validate();
  XFER_CHECK(options.kind() == "linear" || head_, "model: a ", options.kind(),
             " head needs a head layer; this model has none (a TorchScript classifier's own output)");
  head_options_ = options;
}

int64_t ClassifierImpl::num_classes() const {
  return head_ ? head_->options.out_features() : num_features();
}

void ClassifierImpl::init_head(int64_t num_features, int64_t num_classes) {
  XFER_CHECK(num_classes >= 1, "model: num_classes must be >= 1, got ", num_classes);
  head_ = register_module(head_name(), torch::nn::Linear(num_features, num_classes));
}

void ClassifierImpl::reset_classifier(int64_t num_classes) {
  XFER_CHECK(num_classes >= 1, "model: num_classes must be >= 1, got ", num_classes);
  torch::Device device = torch::kCPU;
  for (const auto& p : parameters()) {
    device = p.device();
    break;
  }
  if (head_) {
    head_ = replace_module(head_name(), torch::nn::Linear(num_features(), num_classes));
  } else {
    head_ = register_module(head_name(), torch::nn::Linear(num_features(), num_classes));
  }
  head_->to(device);
}

void ClassifierImpl::set_normalization(std::vector<double> mean, std::vector<double> std) {
  XFER_CHECK(mean.size() == std.size(), "normalization: mean has ", mean.size(),
             " values but std has ", std.size());
  for (double s : std) XFER_CHECK(s > 0, "normalization: std values must be > 0");
  mean_ = std::move(mean);
  std_ = std::move(std);
}

torch::Tensor ClassifierImpl::normalize(const torch::Tensor& x) const {
  if (mean_.empty()) return x;
  XFER_CHECK(x.dim() == 4 && x.size(1) == static_cast<int64_t>(mean_.size()),
             "model input: expected [N, ", mean_.size(), ", H, W], got ", x.sizes());
  auto opts = x.options();
  auto m = torch::tensor(mean_, opts.dtype(torch::kDouble)).to(opts).view({1, -1, 1, 1});
  auto s = torch::tensor(std_, opts.dtype(torch::kDouble)).to(opts).view({1, -1, 1, 1});
  return (x - m) / s;
}

bool ClassifierImpl::is_head_parameter(const std::string& name) const {
  const std::string prefix = head_name() + ".";
  return name.compare(0, prefix.size(), prefix) == 0;
}

namespace {

bool owns(const std::string& prefix, const std::string& name) {
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  if (name.size() == prefix.size()) return true;
  // "." separates native names; "__" the aliased names of TorchScript modules.
  return name[prefix.size()] == '.' || name.compare(prefix.size(), 2, "__") == 0;
}

bool has_tensors(const torch::nn::Module& m) {
  return !m.parameters(true).empty();
}

}  // namespace

std::vector<ParamStage> ClassifierImpl::backbone_stages() const {
  std::vector<ParamStage> stages;
  const std::string head = head_name();
  for (const auto& child : named_children()) {
    if (child.key() == head || child.key() == "lora") continue;
    const auto& m = child.value();
    bool container = m->as<torch::nn::ModuleList>() != nullptr || m->as<torch::nn::Sequential>() != nullptr;
    if (container) {
      for (const auto& sub : m->named_children()) {
        if (!has_tensors(*sub.value())) continue;
        std::string name = child.key() + "." + sub.key();
        stages.push_back({name, {name}});
      }
    } else if (has_tensors(*m)) {
      stages.push_back({child.key(), {child.key()}});
    }
  }
  std::vector<std::string> direct;
  for (const auto& p : named_parameters(/*recurse=*/false)) direct.push_back(p.key());
  if (!direct.empty()) {
    if (stages.empty()) stages.push_back({"stem", {}});
    stages.front().prefixes.insert(stages.front().prefixes.begin(), direct.begin(), direct.end());
  }
  return stages;
}

std::vector<ParamStage> ClassifierImpl::param_stages() const {
  auto stages = backbone_stages();
  // "head" names the last stage only: a TorchScript backbone may have a child of that name
  // (timm's ConvNeXt keeps head.norm without its classifier).
  const size_t last = has_head() ? stages.size() : stages.size() - 1;
  for (size_t i = 0; i < last && i < stages.size(); ++i) {
    if (stages[i].name == "head") stages[i].name = "backbone.head";
  }
  if (has_head()) {
    stages.push_back({"head", {head_name()}});
  } else if (!stages.empty()) {
    stages.back().name = "head";
  }
  return stages;
}

int64_t ClassifierImpl::stage_of(const std::vector<ParamStage>& stages, const std::string& name) {
  std::string key = name;
  // lora.<layer with "__" for ".">.A adapts <layer>.weight.
  if (key.compare(0, 5, "lora.") == 0) {
    auto dot = key.find('.', 5);
    std::string layer = key.substr(5, dot == std::string::npos ? std::string::npos : dot - 5);
    for (size_t i; (i = layer.find("__")) != std::string::npos;) layer.replace(i, 2, ".");
    key = layer + ".weight";
  }
  for (size_t s = 0; s < stages.size(); ++s) {
    for (const auto& prefix : stages[s].prefixes) {
      if (owns(prefix, key)) return static_cast<int64_t>(s);
    }
  }
  return -1;
}

std::vector<std::string> ClassifierImpl::batch_norm_layers() const {
  std::vector<std::string> names;
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    const auto& m = item.value();
    if (m->as<torch::nn::BatchNorm1d>() || m->as<torch::nn::BatchNorm2d>() ||
        m->as<torch::nn::BatchNorm3d>()) {
      names.push_back(item.key());
    }
  }
  return names;
}

void ClassifierImpl::pin_eval(std::vector<std::string> layers) {
  auto known = batch_norm_layers();
  for (const auto& l : layers) {
    XFER_CHECK(std::find(known.begin(), known.end(), l) != known.end(), "pin_eval: '", l,
               "' is not a BatchNorm layer of this model");
  }
  pinned_eval_ = std::move(layers);
  pinned_modules_.clear();
  for (const auto& item : named_modules("", false)) {
    if (std::find(pinned_eval_.begin(), pinned_eval_.end(), item.key()) != pinned_eval_.end()) {
      pinned_modules_.push_back(item.value());
    }
  }
  train(is_training());
}

bool ClassifierImpl::layer_is_training(const std::string& name) const {
  for (const auto& item : named_modules("", false)) {
    if (item.key() == name) return item.value()->is_training();
  }
  XFER_CHECK(false, "model has no layer '", name, "'");
  return false;
}

void ClassifierImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (!on) return;
  for (const auto& m : pinned_modules_) m->eval();
}

int64_t count_parameters(const torch::nn::Module& m, bool trainable_only) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) {
    if (!trainable_only || p.requires_grad()) n += p.numel();
  }
  return n;
}

}  // namespace xfer::models
