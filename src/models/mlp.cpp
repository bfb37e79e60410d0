#include "xfer/models/mlp.h"

#include "xfer/core/error.h"

namespace xfer::models {

MlpImpl::MlpImpl(const MlpOptions& o) {
  XFER_CHECK(o.in_features() >= 1, "mlp: in_features must be >= 1");
  XFER_CHECK(o.dropout() >= 0 && o.dropout() < 1, "mlp: dropout must be in [0, 1)");
  XFER_CHECK(!o.hidden().empty(), "mlp: hidden must list at least one width");
  body_ = torch::nn::Sequential();
  body_->push_back(torch::nn::Flatten());
  int64_t in = o.in_features();
  for (int64_t h : o.hidden()) {
    XFER_CHECK(h >= 1, "mlp: hidden widths must be >= 1");
    body_->push_back(torch::nn::Linear(in, h));
    body_->push_back(torch::nn::ReLU());
    if (o.dropout() > 0) body_->push_back(torch::nn::Dropout(o.dropout()));
    in = h;
  }
  num_features_ = in;
  register_module("body", body_);
  init_head(num_features_, o.num_classes());
}

torch::Tensor MlpImpl::forward_features(torch::Tensor x) { return body_->forward(x); }

namespace {

MlpOptions parse_mlp_options(const ModelOptions& options) {
  const Json& a = options.arch_options;
  check_arch_options("mlp", a, {"hidden", "dropout"});
  MlpOptions o(options.in_channels * options.image_size * options.image_size, options.num_classes);
  o.hidden(json_get_or<std::vector<int64_t>>(a, "hidden", o.hidden(), "mlp arch options"));
  o.dropout(json_get_or<double>(a, "dropout", o.dropout(), "mlp arch options"));
  // Checked here too, before model_size counts them: a negative width would
  // cancel a huge one in the count (the constructor checks only as it builds).
  for (int64_t h : o.hidden()) XFER_CHECK(h >= 1, "mlp: hidden widths must be >= 1");
  return o;
}

}  // namespace

Classifier make_mlp(const ModelOptions& options) {
  return Mlp(parse_mlp_options(options)).ptr();
}

ModelSize mlp_size(const ModelOptions& options) {
  const MlpOptions o = parse_mlp_options(options);
  ModelSize size;
  double in = static_cast<double>(o.in_features());
  for (int64_t h : o.hidden()) {
    size.total += in * h + h;
    in = static_cast<double>(h);
  }
  size.head = in * o.num_classes() + o.num_classes();
  size.total += size.head;
  return size;
}

}  // namespace xfer::models
