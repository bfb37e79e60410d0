#pragma once
/// \file
/// Vision Transformer (Dosovitskiy et al. 2021) in timm's layout: patch
/// embedding (a Conv2d with kernel = stride = patch size), class token, learned
/// position embedding, pre-norm transformer blocks, final LayerNorm; the
/// features are the class token's output and the head is "head". Module and
/// parameter names are timm's (patch_embed.proj, cls_token, pos_embed,
/// blocks.N.norm1, blocks.N.attn.qkv, blocks.N.attn.proj, blocks.N.norm2,
/// blocks.N.mlp.fc1, blocks.N.mlp.fc2, norm, head), so timm
/// VisionTransformer weights of the same shape (class token, no register
/// tokens, qkv bias, LayerNorm eps 1e-6) load strictly.

#include "xfer/models/classifier.h"
#include "xfer/models/registry.h"

namespace xfer::models {

/// timm's Attention: qkv = Linear(dim, 3 dim), scaled dot-product attention
/// over `heads` heads, output projection proj = Linear(dim, dim).
class VitAttentionImpl : public torch::nn::Module {
 public:
  VitAttentionImpl(int64_t dim, int64_t heads, double dropout);
  /// x: [B, N, dim] -> [B, N, dim].
  torch::Tensor forward(torch::Tensor x);
  /// Attention weights [B, heads, N, N] (softmax over the last dim) of an input.
  torch::Tensor attention_weights(torch::Tensor x);
  torch::nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  /// q, k, v, each [B, heads, N, head_dim].
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> split_qkv(const torch::Tensor& x);
  int64_t heads_, head_dim_;
  double scale_, dropout_;
};
TORCH_MODULE(VitAttention);

/// timm's Mlp: fc1 -> GELU (exact, erf) -> dropout -> fc2 -> dropout.
class VitMlpImpl : public torch::nn::Module {
 public:
  VitMlpImpl(int64_t dim, int64_t hidden, double dropout);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(VitMlp);

/// Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)).
class VitBlockImpl : public torch::nn::Module {
 public:
  VitBlockImpl(int64_t dim, int64_t heads, int64_t mlp_hidden, double dropout);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  VitAttention attn{nullptr};
  VitMlp mlp{nullptr};
};
TORCH_MODULE(VitBlock);

/// timm's PatchEmbed: proj = Conv2d(in, dim, patch, stride patch), flattened to tokens.
class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t in_channels, int64_t dim, int64_t patch_size);
  /// [B, C, H, W] -> [B, (H/p)(W/p), dim].
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

struct VitOptions {
  VitOptions(int64_t in_channels, int64_t image_size, int64_t num_classes)
      : in_channels_(in_channels), image_size_(image_size), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, image_size);
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(int64_t, patch_size) = 7;  ///< must divide image_size
  TORCH_ARG(int64_t, dim) = 64;        ///< token width (embed_dim in timm)
  TORCH_ARG(int64_t, depth) = 4;       ///< number of blocks
  TORCH_ARG(int64_t, heads) = 4;       ///< must divide dim
  TORCH_ARG(double, mlp_ratio) = 2.0;  ///< MLP hidden width = round(dim * mlp_ratio)
  /// Dropout after the position embedding, on attention weights, after the
  /// attention projection and inside the MLP (timm's drop_rate = attn_drop_rate).
  TORCH_ARG(double, dropout) = 0.0;
};

class VitImpl : public ClassifierImpl {
 public:
  explicit VitImpl(const VitOptions& options);
  /// [B, C, H, W] -> class-token features [B, dim].
  torch::Tensor forward_features(torch::Tensor x) override;
  /// All token outputs after the final norm, [B, 1 + num_patches, dim].
  torch::Tensor forward_tokens(torch::Tensor x);
  int64_t num_features() const override { return options_.dim(); }
  /// embed (patch_embed, cls_token, pos_embed), blocks.0 .. blocks.N-1 (the
  /// last one with the final norm).
  std::vector<ParamStage> backbone_stages() const override;
  int64_t num_patches() const { return num_patches_; }
  int64_t depth() const { return static_cast<int64_t>(blocks_.size()); }
  VitBlock block(int64_t i) const { return blocks_.at(static_cast<size_t>(i)); }
  const VitOptions& options() const { return options_; }

 private:
  VitOptions options_;
  int64_t num_patches_;
  PatchEmbed patch_embed_{nullptr};
  torch::Tensor cls_token_, pos_embed_;
  std::vector<VitBlock> blocks_;
  torch::nn::LayerNorm norm_{nullptr};
};
TORCH_MODULE(Vit);

/// Factory for the registry ("vit"); arch options: patch_size, dim, depth,
/// heads, mlp_ratio, dropout.
Classifier make_vit(const ModelOptions& options);
/// Its state-dict size without building it (see model_size).
ModelSize vit_size(const ModelOptions& options);

}  // namespace xfer::models
