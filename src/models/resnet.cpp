#include "xfer/models/resnet.h"

#include "xfer/core/error.h"

namespace xfer::models {
namespace {

torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

}  // namespace

BasicBlockImpl::BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride) {
  conv1_ = register_module("conv1", conv3x3(in_planes, planes, stride));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(planes));
  conv2_ = register_module("conv2", conv3x3(planes, planes, 1));
  bn2_ = register_module("bn2", torch::nn::BatchNorm2d(planes));
  if (stride != 1 || in_planes != planes) {
    downsample_ = register_module(
        "downsample",
        torch::nn::Sequential(
            torch::nn::Conv2d(torch::nn::Conv2dOptions(in_planes, planes, 1).stride(stride).bias(false)),
            torch::nn::BatchNorm2d(planes)));
  }
}

torch::Tensor BasicBlockImpl::forward(torch::Tensor x) {
  auto identity = downsample_ ? downsample_->forward(x) : x;
  auto out = torch::relu(bn1_->forward(conv1_->forward(x)));
  out = bn2_->forward(conv2_->forward(out));
  return torch::relu(out + identity);
}

SmallResNetImpl::SmallResNetImpl(const SmallResNetOptions& o) {
  XFER_CHECK(!o.widths().empty(), "resnet: widths must list at least one stage");
  XFER_CHECK(o.widths().size() == o.blocks().size(), "resnet: widths has ", o.widths().size(),
             " stages but blocks has ", o.blocks().size());
  int64_t in = o.widths()[0];
  conv1_ = register_module("conv1", conv3x3(o.in_channels(), in, 1));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(in));
  for (size_t s = 0; s < o.widths().size(); ++s) {
    XFER_CHECK(o.widths()[s] >= 1 && o.blocks()[s] >= 1, "resnet: widths and blocks must be >= 1");
    torch::nn::Sequential layer;
    for (int64_t b = 0; b < o.blocks()[s]; ++b) {
      int64_t stride = (b == 0 && s > 0) ? 2 : 1;
      layer->push_back(BasicBlock(in, o.widths()[s], stride));
      in = o.widths()[s];
    }
    layers_.push_back(register_module("layer" + std::to_string(s + 1), layer));
  }
  num_features_ = in;
  init_head(num_features_, o.num_classes());
  // torchvision's initialisation: Kaiming normal (fan_out) for convs, BN gamma 1, beta 0.
  for (auto& m : modules(false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    }
  }
}

torch::Tensor SmallResNetImpl::forward_features(torch::Tensor x) {
  x = torch::relu(bn1_->forward(conv1_->forward(x)));
  for (auto& layer : layers_) x = layer->forward(x);
  return x.mean({2, 3});  // global average pool
}

Classifier make_small_resnet(const ModelOptions& options) {
  const Json& a = options.arch_options;
  check_arch_options("resnet", a, {"widths", "blocks"});
  SmallResNetOptions o(options.in_channels, options.num_classes);
  o.widths(json_get_or<std::vector<int64_t>>(a, "widths", o.widths(), "resnet arch options"));
  o.blocks(json_get_or<std::vector<int64_t>>(a, "blocks", o.blocks(), "resnet arch options"));
  return SmallResNet(o).ptr();
}

}  // namespace xfer::models
