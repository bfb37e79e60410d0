#include "xfer/models/classifier.h"

#include "xfer/core/error.h"

namespace xfer::models {

torch::Tensor ClassifierImpl::forward(torch::Tensor x) {
  return forward_head(forward_features(normalize(x)));
}

torch::Tensor ClassifierImpl::features(torch::Tensor x) { return forward_features(normalize(x)); }

torch::Tensor ClassifierImpl::forward_head(torch::Tensor f) { return head_ ? head_->forward(f) : f; }

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

int64_t count_parameters(const torch::nn::Module& m, bool trainable_only) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) {
    if (!trainable_only || p.requires_grad()) n += p.numel();
  }
  return n;
}

}  // namespace xfer::models
