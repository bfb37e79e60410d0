#include "xfer/models/cnn.h"

#include <cmath>

#include "xfer/core/error.h"

namespace xfer::models {
namespace {

void push_conv_bn_relu(torch::nn::Sequential& seq, int64_t in, int64_t out) {
  seq->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(false)));
  seq->push_back(torch::nn::BatchNorm2d(out));
  seq->push_back(torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
}

}  // namespace

CnnImpl::CnnImpl(const CnnOptions& o) {
  XFER_CHECK(!o.widths().empty(), "cnn: widths must list at least one stage");
  XFER_CHECK(o.hidden() >= 1, "cnn: hidden must be >= 1");
  XFER_CHECK(o.dropout() >= 0 && o.dropout() < 1, "cnn: dropout must be in [0, 1)");
  stages_ = torch::nn::ModuleList();
  XFER_CHECK(o.convs() >= 1 && o.convs() <= 8, "cnn: convs must be in [1, 8]");
  int64_t in = o.in_channels();
  int64_t size = o.image_size();
  for (int64_t w : o.widths()) {
    XFER_CHECK(w >= 1, "cnn: stage widths must be >= 1");
    torch::nn::Sequential stage;
    for (int64_t c = 0; c < o.convs(); ++c) {
      push_conv_bn_relu(stage, c == 0 ? in : w, w);
    }
    stage->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).ceil_mode(true)));
    stages_->push_back(stage);
    in = w;
    size = (size + 1) / 2;
  }
  register_module("stages", stages_);
  XFER_CHECK(in * size * size <= (int64_t(1) << 24), "cnn: image_size ", o.image_size(),
             " gives too large a flattened feature map; add stages");
  neck_ = torch::nn::Sequential(torch::nn::Flatten(), torch::nn::Linear(in * size * size, o.hidden()),
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

namespace {

CnnOptions parse_cnn_options(const ModelOptions& options) {
  const Json& a = options.arch_options;
  check_arch_options("cnn", a, {"widths", "convs", "hidden", "dropout"});
  CnnOptions o(options.in_channels, options.image_size, options.num_classes);
  o.widths(json_get_or<std::vector<int64_t>>(a, "widths", o.widths(), "cnn arch options"));
  o.convs(json_get_or<int64_t>(a, "convs", o.convs(), "cnn arch options"));
  o.hidden(json_get_or<int64_t>(a, "hidden", o.hidden(), "cnn arch options"));
  o.dropout(json_get_or<double>(a, "dropout", o.dropout(), "cnn arch options"));
  // Checked here too, before cnn_size counts them (see mlp.cpp).
  XFER_CHECK(o.convs() >= 1 && o.convs() <= 8, "cnn: convs must be in [1, 8]");
  XFER_CHECK(o.hidden() >= 1, "cnn: hidden must be >= 1");
  for (int64_t w : o.widths()) XFER_CHECK(w >= 1, "cnn: stage widths must be >= 1");
  return o;
}

}  // namespace

Classifier make_cnn(const ModelOptions& options) {
  return Cnn(parse_cnn_options(options)).ptr();
}

ModelSize cnn_size(const ModelOptions& options) {
  const CnnOptions o = parse_cnn_options(options);
  ModelSize size;
  double in = static_cast<double>(o.in_channels());
  double side = static_cast<double>(o.image_size());
  for (int64_t w : o.widths()) {
    for (int64_t c = 0; c < o.convs(); ++c) {
      size.total += (c == 0 ? in : w) * w * 9;  // conv without bias
      size.total += 4.0 * w + 1;                // BatchNorm: weight, bias, mean, var, count
    }
    in = static_cast<double>(w);
    side = std::ceil(side / 2);
  }
  size.total += in * side * side * o.hidden() + o.hidden();
  size.head = static_cast<double>(o.hidden()) * o.num_classes() + o.num_classes();
  size.total += size.head;
  return size;
}

}  // namespace xfer::models
