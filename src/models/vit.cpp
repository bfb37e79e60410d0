#include "xfer/models/vit.h"

#include <cmath>

#include "xfer/core/error.h"

namespace xfer::models {
namespace {

constexpr double kLayerNormEps = 1e-6;  // timm's ViT

torch::nn::LayerNorm layer_norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(kLayerNormEps));
}

}  // namespace

VitAttentionImpl::VitAttentionImpl(int64_t dim, int64_t heads, double dropout)
    : heads_(heads), dropout_(dropout) {
  XFER_CHECK(heads >= 1 && dim % heads == 0, "vit: dim (", dim, ") must be divisible by heads (",
             heads, ")");
  head_dim_ = dim / heads;
  scale_ = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> VitAttentionImpl::split_qkv(
    const torch::Tensor& x) {
  const int64_t b = x.size(0), n = x.size(1);
  // timm: qkv(x).reshape(B, N, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
  auto t = qkv->forward(x).reshape({b, n, 3, heads_, head_dim_}).permute({2, 0, 3, 1, 4});
  auto parts = t.unbind(0);
  return {parts[0], parts[1], parts[2]};
}

torch::Tensor VitAttentionImpl::attention_weights(torch::Tensor x) {
  auto [q, k, v] = split_qkv(x);
  return torch::softmax(torch::matmul(q * scale_, k.transpose(-2, -1)), -1);
}

torch::Tensor VitAttentionImpl::forward(torch::Tensor x) {
  const int64_t b = x.size(0), n = x.size(1), c = x.size(2);
  auto [q, k, v] = split_qkv(x);
  auto attn = torch::softmax(torch::matmul(q * scale_, k.transpose(-2, -1)), -1);
  if (dropout_ > 0) attn = torch::dropout(attn, dropout_, is_training());
  auto out = torch::matmul(attn, v).transpose(1, 2).reshape({b, n, c});
  out = proj->forward(out);
  if (dropout_ > 0) out = torch::dropout(out, dropout_, is_training());
  return out;
}

VitMlpImpl::VitMlpImpl(int64_t dim, int64_t hidden, double dropout) : dropout_(dropout) {
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
}

torch::Tensor VitMlpImpl::forward(torch::Tensor x) {
  x = torch::gelu(fc1->forward(x));  // exact (erf) GELU, as nn.GELU()
  if (dropout_ > 0) x = torch::dropout(x, dropout_, is_training());
  x = fc2->forward(x);
  if (dropout_ > 0) x = torch::dropout(x, dropout_, is_training());
  return x;
}

VitBlockImpl::VitBlockImpl(int64_t dim, int64_t heads, int64_t mlp_hidden, double dropout) {
  norm1 = register_module("norm1", layer_norm(dim));
  attn = register_module("attn", VitAttention(dim, heads, dropout));
  norm2 = register_module("norm2", layer_norm(dim));
  mlp = register_module("mlp", VitMlp(dim, mlp_hidden, dropout));
}

torch::Tensor VitBlockImpl::forward(torch::Tensor x) {
  x = x + attn->forward(norm1->forward(x));
  return x + mlp->forward(norm2->forward(x));
}

PatchEmbedImpl::PatchEmbedImpl(int64_t in_channels, int64_t dim, int64_t patch_size) {
  proj = register_module(
      "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, dim, patch_size).stride(patch_size)));
}

torch::Tensor PatchEmbedImpl::forward(torch::Tensor x) {
  return proj->forward(x).flatten(2).transpose(1, 2);  // [B, dim, h, w] -> [B, h*w, dim]
}

VitImpl::VitImpl(const VitOptions& o) : options_(o) {
  XFER_CHECK(o.in_channels() >= 1, "vit: in_channels must be >= 1");
  XFER_CHECK(o.patch_size() >= 1, "vit: patch_size must be >= 1, got ", o.patch_size());
  XFER_CHECK(o.image_size() % o.patch_size() == 0, "vit: image size ", o.image_size(),
             " is not divisible by patch_size ", o.patch_size(),
             " (choose a patch_size that divides it)");
  XFER_CHECK(o.dim() >= 1, "vit: dim must be >= 1, got ", o.dim());
  XFER_CHECK(o.depth() >= 1, "vit: depth must be >= 1, got ", o.depth());
  XFER_CHECK(o.heads() >= 1 && o.dim() % o.heads() == 0, "vit: dim (", o.dim(),
             ") must be divisible by heads (", o.heads(), ")");
  XFER_CHECK(o.mlp_ratio() > 0, "vit: mlp_ratio must be > 0, got ", o.mlp_ratio());
  XFER_CHECK(o.dropout() >= 0 && o.dropout() < 1, "vit: dropout must be in [0, 1), got ",
             o.dropout());
  const int64_t grid = o.image_size() / o.patch_size();
  num_patches_ = grid * grid;
  // int(dim * mlp_ratio) as timm (truncated, not rounded): 64 x 2.67 is 170 there.
  const int64_t mlp_hidden = static_cast<int64_t>(o.dim() * o.mlp_ratio());
  XFER_CHECK(mlp_hidden >= 1, "vit: dim * mlp_ratio must be >= 1");

  // Registration order follows timm's state dict: cls_token, pos_embed,
  // patch_embed, blocks, norm, head.
  cls_token_ = register_parameter("cls_token", torch::zeros({1, 1, o.dim()}));
  pos_embed_ = register_parameter("pos_embed", torch::zeros({1, 1 + num_patches_, o.dim()}));
  patch_embed_ = register_module("patch_embed", PatchEmbed(o.in_channels(), o.dim(), o.patch_size()));
  auto blocks = torch::nn::ModuleList();
  for (int64_t i = 0; i < o.depth(); ++i) {
    blocks_.push_back(VitBlock(o.dim(), o.heads(), mlp_hidden, o.dropout()));
    blocks->push_back(blocks_.back());
  }
  register_module("blocks", blocks);
  norm_ = register_module("norm", layer_norm(o.dim()));
  init_head(o.dim(), o.num_classes());

  // timm's init ('jax'-free default): pos_embed trunc_normal(std .02),
  // cls_token normal(std 1e-6), Linear weights trunc_normal(std .02) and zero
  // bias, LayerNorm 1/0, the patch conv keeps PyTorch's default. The
  // truncation at +-2 (absolute) never bites at std .02.
  torch::NoGradGuard no_grad;
  pos_embed_.normal_(0.0, 0.02);
  cls_token_.normal_(0.0, 1e-6);
  for (auto& m : modules(false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      lin->weight.normal_(0.0, 0.02);
      if (lin->bias.defined()) lin->bias.zero_();
    }
  }
}

torch::Tensor VitImpl::forward_tokens(torch::Tensor x) {
  XFER_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels() &&
                 x.size(2) == options_.image_size() && x.size(3) == options_.image_size(),
             "vit input: expected [N, ", options_.in_channels(), ", ", options_.image_size(), ", ",
             options_.image_size(), "], got ", x.sizes());
  x = patch_embed_->forward(x);
  x = torch::cat({cls_token_.expand({x.size(0), -1, -1}), x}, 1) + pos_embed_;
  if (options_.dropout() > 0) x = torch::dropout(x, options_.dropout(), is_training());
  for (auto& block : blocks_) x = block->forward(x);
  return norm_->forward(x);
}

torch::Tensor VitImpl::forward_features(torch::Tensor x) {
  return forward_tokens(x).select(1, 0);  // class token
}

std::vector<ParamStage> VitImpl::backbone_stages() const {
  std::vector<ParamStage> stages{{"embed", {"patch_embed", "cls_token", "pos_embed"}}};
  for (size_t i = 0; i < blocks_.size(); ++i) {
    std::string name = "blocks." + std::to_string(i);
    stages.push_back({name, {name}});
  }
  stages.back().prefixes.push_back("norm");
  return stages;
}

namespace {

VitOptions parse_vit_options(const ModelOptions& options) {
  const Json& a = options.arch_options;
  check_arch_options("vit", a, {"patch_size", "dim", "depth", "heads", "mlp_ratio", "dropout"});
  VitOptions o(options.in_channels, options.image_size, options.num_classes);
  const std::string where = "vit arch options";
  o.patch_size(json_get_or<int64_t>(a, "patch_size", o.patch_size(), where));
  o.dim(json_get_or<int64_t>(a, "dim", o.dim(), where));
  o.depth(json_get_or<int64_t>(a, "depth", o.depth(), where));
  o.heads(json_get_or<int64_t>(a, "heads", o.heads(), where));
  o.mlp_ratio(json_get_or<double>(a, "mlp_ratio", o.mlp_ratio(), where));
  o.dropout(json_get_or<double>(a, "dropout", o.dropout(), where));
  return o;
}

}  // namespace

Classifier make_vit(const ModelOptions& options) {
  return Vit(parse_vit_options(options)).ptr();
}

ModelSize vit_size(const ModelOptions& options) {
  const VitOptions o = parse_vit_options(options);
  const double dim = static_cast<double>(o.dim());
  const double patch = static_cast<double>(o.patch_size());
  const double grid = patch >= 1 ? std::floor(o.image_size() / patch) : 0;
  const double hidden = std::floor(dim * o.mlp_ratio());
  ModelSize size;
  size.total += dim + (1 + grid * grid) * dim;                // cls_token, pos_embed
  size.total += o.in_channels() * dim * patch * patch + dim;  // patch_embed.proj
  const double block = 2 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim)  // norm1, qkv, proj
                       + 2 * dim + (dim * hidden + hidden) + (hidden * dim + dim);  // norm2, mlp
  size.total += o.depth() * block + 2 * dim;                                        // blocks, norm
  size.head = dim * o.num_classes() + o.num_classes();
  size.total += size.head;
  return size;
}

}  // namespace xfer::models
