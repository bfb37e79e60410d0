#pragma once
/// \file
/// Batch augmentation on float images in [0,1].

#include <torch/types.h>

namespace xfer::data {

struct AugmentOptions {
  int64_t crop_padding = 0;  ///< random crop after zero padding by this many pixels (0 = off)
  bool hflip = false;        ///< random horizontal flip with probability 1/2
  bool enabled() const { return crop_padding > 0 || hflip; }
};

/// Applies the augmentation to a float batch [N,C,H,W], drawing from `gen`
/// (a torch CPU generator, so it is reproducible under a seed).
torch::Tensor augment(const torch::Tensor& batch, const AugmentOptions& options,
                      torch::Generator& gen);

/// Random views for contrastive self-supervised learning (SimCLR, Chen et al.
/// 2020): a random resized crop (area fraction in [min_scale, max_scale],
/// aspect ratio in [1/max_ratio, max_ratio], bilinear), a horizontal flip with
/// probability 1/2, and a per-image contrast and brightness jitter. Grayscale
/// images have no colour to jitter, so the crop carries most of the signal.
struct ViewOptions {
  double min_scale = 0.3;
  double max_scale = 1.0;
  double max_ratio = 4.0 / 3.0;
  bool hflip = true;
  double contrast = 0.4;    ///< deviation from the image mean scaled by U[1-c, 1+c]
  double brightness = 0.2;  ///< plus U[-b, b]; the result is clamped to [0, 1]
  /// Throws xfer::UsageError on out-of-range values.
  void validate() const;
};

/// One random view of each image of a float batch [N,C,H,W] in [0,1], drawn
/// from `gen` (reproducible under a seed).
torch::Tensor random_view(const torch::Tensor& batch, const ViewOptions& options,
                          torch::Generator& gen);

/// (x - mean) / std per channel on a float batch [N,C,H,W].
torch::Tensor normalize(const torch::Tensor& batch, const std::vector<double>& mean,
                        const std::vector<double>& std);

}  // namespace xfer::data
