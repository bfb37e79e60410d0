#include "xfer/data/transforms.h"

#include <cmath>

#include <torch/torch.h>

#include "xfer/core/error.h"

namespace xfer::data {

torch::Tensor augment(const torch::Tensor& batch, const AugmentOptions& options,
                      torch::Generator& gen) {
  XFER_CHECK(batch.dim() == 4, "augment: expected a batch [N,C,H,W], got ", batch.sizes());
  XFER_CHECK(options.crop_padding >= 0, "augment: crop padding must be >= 0, got ",
             options.crop_padding);
  if (!options.enabled() || batch.size(0) == 0) return batch;
  const int64_t n = batch.size(0), c = batch.size(1), h = batch.size(2), w = batch.size(3);
  // Random numbers are drawn on the CPU generator, then moved to the batch's device.
  const auto long_cpu = torch::TensorOptions().dtype(torch::kLong);
  torch::Tensor out = batch;
  if (options.crop_padding > 0) {
    const int64_t p = options.crop_padding;
    auto padded = torch::constant_pad_nd(batch, {p, p, p, p}, 0);
    auto oy = torch::randint(0, 2 * p + 1, {n}, gen, long_cpu).to(batch.device());
    auto ox = torch::randint(0, 2 * p + 1, {n}, gen, long_cpu).to(batch.device());
    auto dev_long = torch::TensorOptions().dtype(torch::kLong).device(batch.device());
    auto rows = oy.view({n, 1}) + torch::arange(h, dev_long).view({1, h});  // [N,H]
    auto cols = ox.view({n, 1}) + torch::arange(w, dev_long).view({1, w});  // [N,W]
    out = padded.gather(2, rows.view({n, 1, h, 1}).expand({n, c, h, w + 2 * p}));
    out = out.gather(3, cols.view({n, 1, 1, w}).expand({n, c, h, w}));
  }
  if (options.hflip) {
    auto flip = torch::randint(0, 2, {n}, gen, long_cpu).to(batch.device()).to(torch::kBool);
    out = torch::where(flip.view({n, 1, 1, 1}), out.flip({3}), out);
  }
  return out.contiguous();
}

void ViewOptions::validate() const {
  XFER_CHECK_USAGE(min_scale > 0 && min_scale <= max_scale && max_scale <= 1,
                   "views: crop scales must satisfy 0 < min <= max <= 1, got ", min_scale, " and ",
                   max_scale);
  XFER_CHECK_USAGE(max_ratio >= 1 && std::isfinite(max_ratio), "views: max aspect ratio must be >= 1, got ",
                   max_ratio);
  XFER_CHECK_USAGE(contrast >= 0 && contrast < 1, "views: contrast jitter must be in [0, 1), got ", contrast);
  XFER_CHECK_USAGE(brightness >= 0 && brightness <= 1, "views: brightness jitter must be in [0, 1], got ",
                   brightness);
}

torch::Tensor random_view(const torch::Tensor& batch, const ViewOptions& options,
                          torch::Generator& gen) {
  XFER_CHECK(batch.dim() == 4, "random_view: expected a batch [N,C,H,W], got ", batch.sizes());
  options.validate();
  const int64_t n = batch.size(0);
  if (n == 0) return batch;
  // Every random number is drawn on the CPU generator in a fixed order, so a
  // view depends only on the generator's seed, whatever the device.
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  auto uniform = [&](double lo, double hi) { return torch::rand({n}, gen, f64) * (hi - lo) + lo; };
  auto area = uniform(options.min_scale, options.max_scale);
  auto log_ratio = uniform(-std::log(options.max_ratio), std::log(options.max_ratio));
  auto ratio = log_ratio.exp();
  // Side fractions of the crop (clamped: a very wide crop of a small area stays inside).
  auto sx = (area * ratio).sqrt().clamp_max(1.0);
  auto sy = (area / ratio).sqrt().clamp_max(1.0);
  auto tx = (torch::rand({n}, gen, f64) * 2 - 1) * (1 - sx);
  auto ty = (torch::rand({n}, gen, f64) * 2 - 1) * (1 - sy);
  auto flip = torch::ones({n}, f64);
  if (options.hflip) flip = torch::where(torch::rand({n}, gen, f64) < 0.5, -flip, flip);
  auto contrast = uniform(1 - options.contrast, 1 + options.contrast);
  auto brightness = uniform(-options.brightness, options.brightness);
  // affine_grid maps output coordinates in [-1, 1] to input coordinates:
  // x_in = sx * flip * x_out + tx, y_in = sy * y_out + ty.
  auto zeros = torch::zeros({n}, f64);
  auto theta = torch::stack({torch::stack({sx * flip, zeros, tx}, 1), torch::stack({zeros, sy, ty}, 1)}, 1)
                   .to(batch.options());
  namespace F = torch::nn::functional;
  auto grid = F::affine_grid(theta, batch.sizes(), /*align_corners=*/false);
  auto out = F::grid_sample(batch, grid,
                            F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(false));
  auto mean = out.mean({1, 2, 3}, /*keepdim=*/true);
  auto c = contrast.to(batch.options()).view({n, 1, 1, 1});
  auto b = brightness.to(batch.options()).view({n, 1, 1, 1});
  return ((out - mean) * c + mean + b).clamp(0, 1).contiguous();
}

torch::Tensor normalize(const torch::Tensor& batch, const std::vector<double>& mean,
                        const std::vector<double>& std) {
  XFER_CHECK(batch.dim() == 4, "normalize: expected a batch [N,C,H,W], got ", batch.sizes());
  const int64_t c = batch.size(1);
  XFER_CHECK(static_cast<int64_t>(mean.size()) == c && static_cast<int64_t>(std.size()) == c,
             "normalize: batch has ", c, " channels but mean has ", mean.size(), " and std ",
             std.size(), " values");
  for (double s : std) XFER_CHECK(s > 0, "normalize: std must be positive, got ", s);
  auto opts = torch::TensorOptions().dtype(batch.scalar_type()).device(batch.device());
  auto m = torch::tensor(mean, torch::kDouble).to(opts).view({1, c, 1, 1});
  auto s = torch::tensor(std, torch::kDouble).to(opts).view({1, c, 1, 1});
  return (batch - m) / s;
}

}  // namespace xfer::data
