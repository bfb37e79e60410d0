#include "xfer/models/cnn.h"

#include "xfer/core/error.h"

namespace xfer::models {
namespace {

torch::nn::Sequential conv_bn_relu(int64_t in, int64_t out) {
  return torch::nn::Sequential(
      torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(false)),
      torch::nn::BatchNorm2d(out), torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
}

}  // namespace

CnnImpl::CnnImpl(const CnnOptions& o) {
  XFER_CHECK(!o.widths().empty(), "cnn: widths must list at least one stage");
  XFER_CHECK(o.hidden() >= 1, "cnn: hidden must be >= 1");
  XFER_CHECK(o.dropout() >= 0 && o.dropout() < 1, "cnn: dropout must be in [0, 1)");
  stages_ = torch::nn::ModuleList();
  int64_t in = o.in_channels();
  for (int64_t w : o.widths()) {
    XFER_CHECK(w >= 1, "cnn: stage widths must be >= 1");
    torch::nn::Sequential stage;
    stage->push_back(conv_bn_relu(in, w));
    stage->push_back(conv_bn_relu(w, w));
    stage->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).ceil_mode(true)));
    stages_->push_back(stage);
    in = w;
  }
  register_module("stages", stages_);
  neck_ = torch::nn::Sequential(torch::nn::AdaptiveAvgPool2d(1), torch::nn::Flatten(),
                                torch::nn::Linear(in, o.hidden()),
                                torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
  if (o.dropout() > 0) neck_->push_back(torch::nn::Dropout(o.dropout()));
  register_module("neck", neck_);
  num_features_ = o.hidden();
  init_head(num_features_, o.num_classes());
}

torch::Tensor CnnImpl::forward_features(torch::Tensor x) {
  for (const auto& stage : *stages_) x = stage->as<torch::nn::Sequential>()->forward(x);
  return neck_->forward(x);
}

Classifier make_cnn(const ModelOptions& options) {
  const Json& a = options.arch_options;
  check_arch_options("cnn", a, {"widths", "hidden", "dropout"});
  CnnOptions o(options.in_channels, options.num_classes);
  o.widths(json_get_or<std::vector<int64_t>>(a, "widths", o.widths(), "cnn arch options"));
  o.hidden(json_get_or<int64_t>(a, "hidden", o.hidden(), "cnn arch options"));
  o.dropout(json_get_or<double>(a, "dropout", o.dropout(), "cnn arch options"));
  return Cnn(o).ptr();
}

}  // namespace xfer::models
