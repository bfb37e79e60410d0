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

/// (x - mean) / std per channel on a float batch [N,C,H,W].
torch::Tensor normalize(const torch::Tensor& batch, const std::vector<double>& mean,
                        const std::vector<double>& std);

}  // namespace xfer::data
