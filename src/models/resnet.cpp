#include "xfer/models/resnet.h"

#include "xfer/core/error.h"

namespace xfer::models {
namespace {

torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

torch::nn::Conv2d conv1x1(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).stride(stride).bias(false));
}

/// torchvision's shortcut: downsample.0 (1x1 conv), downsample.1 (BatchNorm).
torch::nn::Sequential make_downsample(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Sequential(conv1x1(in, out, stride), torch::nn::BatchNorm2d(out));
}

/// torchvision's initialisation: Kaiming normal (fan_out, relu) for every
/// conv, BatchNorm weight 1 and bias 0 (LibTorch's default already).
void init_convs(torch::nn::Module& root) {
  torch::NoGradGuard no_grad;
  for (auto& m : root.modules(false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      torch::nn::init::ones_(bn->weight);
      torch::nn::init::zeros_(bn->bias);
    }
  }
}

}  // namespace

BasicBlockImpl::BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride) {
  conv1_ = register_module("conv1", conv3x3(in_planes, planes, stride));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(planes));
  conv2_ = register_module("conv2", conv3x3(planes, planes, 1));
  bn2_ = register_module("bn2", torch::nn::BatchNorm2d(planes));
  if (stride != 1 || in_planes != planes) {
    downsample_ = register_module("downsample", make_downsample(in_planes, planes, stride));
  }
}

torch::Tensor BasicBlockImpl::forward(torch::Tensor x) {
  auto identity = downsample_ ? downsample_->forward(x) : x;
  auto out = torch::relu(bn1_->forward(conv1_->forward(x)));
  out = bn2_->forward(conv2_->forward(out));
  return torch::relu(out + identity);
}

BottleneckImpl::BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride) {
  const int64_t out_planes = planes * kExpansion;
  conv1_ = register_module("conv1", conv1x1(in_planes, planes, 1));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(planes));
  conv2_ = register_module("conv2", conv3x3(planes, planes, stride));  // v1.5: stride here
  bn2_ = register_module("bn2", torch::nn::BatchNorm2d(planes));
  conv3_ = register_module("conv3", conv1x1(planes, out_planes, 1));
  bn3_ = register_module("bn3", torch::nn::BatchNorm2d(out_planes));
  if (stride != 1 || in_planes != out_planes) {
    downsample_ = register_module("downsample", make_downsample(in_planes, out_planes, stride));
  }
}

torch::Tensor BottleneckImpl::forward(torch::Tensor x) {
  auto identity = downsample_ ? downsample_->forward(x) : x;
  auto out = torch::relu(bn1_->forward(conv1_->forward(x)));
  out = torch::relu(bn2_->forward(conv2_->forward(out)));
  out = bn3_->forward(conv3_->forward(out));
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
  const auto stages = static_cast<int64_t>(o.widths().size());
  XFER_CHECK(o.pool_stages() >= 1 && o.pool_stages() <= stages,
             "resnet: pool_stages must be in [1, ", stages, "], got ", o.pool_stages());
  pool_stages_ = o.pool_stages();
  num_features_ = 0;
  for (int64_t s = stages - pool_stages_; s < stages; ++s) num_features_ += o.widths()[s];
  init_head(num_features_, o.num_classes());
  init_convs(*this);
}

torch::Tensor SmallResNetImpl::forward_features(torch::Tensor x) {
  x = torch::relu(bn1_->forward(conv1_->forward(x)));
  const auto n = static_cast<int64_t>(layers_.size());
  std::vector<torch::Tensor> pooled;
  for (int64_t s = 0; s < n; ++s) {
    x = layers_[s]->forward(x);
    if (s >= n - pool_stages_) pooled.push_back(x.mean({2, 3}));  // global average pool
  }
  if (pooled.size() == 1) return pooled[0];
  namespace F = torch::nn::functional;
  for (auto& p : pooled) p = F::normalize(p, F::NormalizeFuncOptions().dim(1).eps(1e-8));
  return torch::cat(pooled, 1);
}

namespace {
std::vector<ParamStage> resnet_stages(size_t layers) {
  std::vector<ParamStage> stages{{"stem", {"conv1", "bn1"}}};
  for (size_t i = 1; i <= layers; ++i) {
    std::string name = "layer" + std::to_string(i);
    stages.push_back({name, {name}});
  }
  return stages;
}
}  // namespace

std::vector<ParamStage> SmallResNetImpl::backbone_stages() const { return resnet_stages(layers_.size()); }
std::vector<ParamStage> ResNetImpl::backbone_stages() const { return resnet_stages(layers_.size()); }

namespace {

// Values of a BatchNorm2d (weight, bias, running mean and variance, the batch
// counter), a bias-free k x k conv, and the blocks built above.
double bn_size(double c) {
  return 4 * c + 1;
}
double conv_size(double in, double out, double k) {
  return in * out * k * k;
}

double basic_block_size(double in, double planes, int64_t stride) {
  double n =
      conv_size(in, planes, 3) + bn_size(planes) + conv_size(planes, planes, 3) + bn_size(planes);
  if (stride != 1 || in != planes) n += conv_size(in, planes, 1) + bn_size(planes);
  return n;
}

double bottleneck_size(double in, double planes, int64_t stride) {
  const double out = planes * BottleneckImpl::kExpansion;
  double n = conv_size(in, planes, 1) + bn_size(planes) + conv_size(planes, planes, 3) +
             bn_size(planes) + conv_size(planes, out, 1) + bn_size(out);
  if (stride != 1 || in != out) n += conv_size(in, out, 1) + bn_size(out);
  return n;
}

SmallResNetOptions parse_small_resnet_options(const ModelOptions& options) {
  const Json& a = options.arch_options;
  check_arch_options("resnet", a, {"widths", "blocks", "pool_stages"});
  SmallResNetOptions o(options.in_channels, options.num_classes);
  o.widths(json_get_or<std::vector<int64_t>>(a, "widths", o.widths(), "resnet arch options"));
  o.blocks(json_get_or<std::vector<int64_t>>(a, "blocks", o.blocks(), "resnet arch options"));
  o.pool_stages(json_get_or<int64_t>(a, "pool_stages", o.pool_stages(), "resnet arch options"));
  XFER_CHECK_USAGE(
      o.pool_stages() >= 1 && o.pool_stages() <= static_cast<int64_t>(o.widths().size()),
      "resnet arch options: pool_stages must be in [1, ", o.widths().size(), "] (the stages), got ",
      o.pool_stages());
  // Checked here too, before small_resnet_size counts them (see mlp.cpp).
  XFER_CHECK(!o.widths().empty() && o.widths().size() == o.blocks().size(),
             "resnet: widths and blocks must list the same number (>= 1) of stages");
  for (size_t i = 0; i < o.widths().size(); ++i) {
    XFER_CHECK(o.widths()[i] >= 1 && o.blocks()[i] >= 1, "resnet: widths and blocks must be >= 1");
  }
  return o;
}

}  // namespace

Classifier make_small_resnet(const ModelOptions& options) {
  return SmallResNet(parse_small_resnet_options(options)).ptr();
}

ModelSize small_resnet_size(const ModelOptions& options) {
  const SmallResNetOptions o = parse_small_resnet_options(options);
  const auto& widths = o.widths();
  const size_t stages = widths.size();
  ModelSize size;
  double in = static_cast<double>(widths[0]);
  size.total += conv_size(static_cast<double>(o.in_channels()), in, 3) + bn_size(in);
  for (size_t s = 0; s < stages; ++s) {
    // In closed form, not a loop over blocks: "blocks": [1e12] must be refused
    // at once. The first block changes width and stride; the rest repeat.
    const double w = static_cast<double>(widths[s]);
    size.total += basic_block_size(in, w, s > 0 ? 2 : 1) +
                  static_cast<double>(o.blocks()[s] - 1) * basic_block_size(w, w, 1);
    in = w;
  }
  double features = 0;
  for (size_t s = stages - static_cast<size_t>(o.pool_stages()); s < stages; ++s)
    features += widths[s];
  size.head = features * o.num_classes() + o.num_classes();
  size.total += size.head;
  return size;
}

ResNetImpl::ResNetImpl(const ResNetOptions& o) : options_(o) {
  XFER_CHECK(o.layers().size() == 4, "resnet: layers must list 4 stages, got ", o.layers().size());
  for (int64_t n : o.layers()) XFER_CHECK(n >= 1, "resnet: blocks per stage must be >= 1");
  XFER_CHECK(o.in_channels() >= 1, "resnet: in_channels must be >= 1");
  const int64_t expansion = o.bottleneck() ? BottleneckImpl::kExpansion : 1;
  int64_t in = 64;
  if (o.small_input()) {
    conv1_ = register_module("conv1", conv3x3(o.in_channels(), in, 1));
  } else {
    conv1_ = register_module(
        "conv1", torch::nn::Conv2d(
                     torch::nn::Conv2dOptions(o.in_channels(), in, 7).stride(2).padding(3).bias(false)));
  }
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(in));
  register_module("relu", torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
  if (!o.small_input()) {
    maxpool_ = register_module(
        "maxpool", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
  }
  const int64_t widths[4] = {64, 128, 256, 512};
  for (size_t s = 0; s < 4; ++s) {
    torch::nn::Sequential layer;
    for (int64_t b = 0; b < o.layers()[s]; ++b) {
      const int64_t stride = (b == 0 && s > 0) ? 2 : 1;
      if (o.bottleneck()) {
        layer->push_back(Bottleneck(in, widths[s], stride));
      } else {
        layer->push_back(BasicBlock(in, widths[s], stride));
      }
      in = widths[s] * expansion;
    }
    layers_.push_back(register_module("layer" + std::to_string(s + 1), layer));
  }
  num_features_ = in;
  init_head(num_features_, o.num_classes());
  init_convs(*this);
}

torch::Tensor ResNetImpl::forward_features(torch::Tensor x) {
  XFER_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels(), "resnet input: expected [N, ",
             options_.in_channels(), ", H, W], got ", x.sizes());
  x = torch::relu(bn1_->forward(conv1_->forward(x)));
  if (maxpool_) x = maxpool_->forward(x);
  for (auto& layer : layers_) x = layer->forward(x);
  return x.mean({2, 3});  // adaptive average pool to 1x1, flattened
}

namespace {

ResNetOptions parse_torchvision_options(const std::string& arch, const ModelOptions& options,
                                        std::vector<int64_t> layers, bool bottleneck) {
  const Json& a = options.arch_options;
  check_arch_options(arch, a, {"small_input"});
  ResNetOptions o(options.in_channels, options.num_classes);
  o.layers(std::move(layers));
  o.bottleneck(bottleneck);
  o.small_input(json_get_or<bool>(a, "small_input", false, arch + " arch options"));
  return o;
}

ModelSize torchvision_resnet_size(const ResNetOptions& o) {
  ModelSize size;
  double in = 64;
  size.total +=
      conv_size(static_cast<double>(o.in_channels()), in, o.small_input() ? 3 : 7) + bn_size(in);
  const double widths[4] = {64, 128, 256, 512};
  for (size_t s = 0; s < 4 && s < o.layers().size(); ++s) {
    for (int64_t b = 0; b < o.layers()[s]; ++b) {
      const int64_t stride = (b == 0 && s > 0) ? 2 : 1;
      if (o.bottleneck()) {
        size.total += bottleneck_size(in, widths[s], stride);
        in = widths[s] * BottleneckImpl::kExpansion;
      } else {
        size.total += basic_block_size(in, widths[s], stride);
        in = widths[s];
      }
    }
  }
  size.head = in * o.num_classes() + o.num_classes();
  size.total += size.head;
  return size;
}

}  // namespace

Classifier make_resnet18(const ModelOptions& options) {
  return ResNet(parse_torchvision_options("resnet18", options, {2, 2, 2, 2}, false)).ptr();
}

Classifier make_resnet34(const ModelOptions& options) {
  return ResNet(parse_torchvision_options("resnet34", options, {3, 4, 6, 3}, false)).ptr();
}

Classifier make_resnet50(const ModelOptions& options) {
  return ResNet(parse_torchvision_options("resnet50", options, {3, 4, 6, 3}, true)).ptr();
}

ModelSize resnet18_size(const ModelOptions& options) {
  return torchvision_resnet_size(
      parse_torchvision_options("resnet18", options, {2, 2, 2, 2}, false));
}

ModelSize resnet34_size(const ModelOptions& options) {
  return torchvision_resnet_size(
      parse_torchvision_options("resnet34", options, {3, 4, 6, 3}, false));
}

ModelSize resnet50_size(const ModelOptions& options) {
  return torchvision_resnet_size(
      parse_torchvision_options("resnet50", options, {3, 4, 6, 3}, true));
}

}  // namespace xfer::models
