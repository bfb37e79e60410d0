#include "xfer/data/transforms.h"

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
