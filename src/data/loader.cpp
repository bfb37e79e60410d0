#include "xfer/data/loader.h"

#include <algorithm>

#include <torch/torch.h>

#include "xfer/core/error.h"

namespace xfer::data {
namespace {

/// splitmix64 finaliser: decorrelates seeds that differ in a few bits.
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// The seed of one epoch. The run's seed is hashed before the epoch is added:
/// with seed + epoch, epoch e of seed s was epoch e-1 of seed s+1, so the
/// "independent" seeds 0, 1, 2 of a study saw the same orders one epoch apart.
uint64_t epoch_seed(uint64_t seed, int64_t epoch) {
  return mix(mix(seed) + static_cast<uint64_t>(epoch));
}

}  // namespace

Loader::Loader(const Dataset& ds, LoaderOptions options)
    : ds_(ds), options_(options), gen_(at::detail::createCPUGenerator(options.seed)) {
  XFER_CHECK(options_.batch_size >= 1, "loader: batch size must be at least 1, got ",
             options_.batch_size);
  XFER_CHECK(options_.augment.crop_padding >= 0, "loader: crop padding must be >= 0, got ",
             options_.augment.crop_padding);
  start_epoch(0);
}

int64_t Loader::num_batches() const {
  const int64_t n = ds_.size();
  const int64_t bs = options_.batch_size;
  return options_.drop_last ? n / bs
                            : n / bs + (n % bs != 0);  // (n + bs - 1) overflows for a huge bs
}

void Loader::start_epoch(int64_t epoch) {
  XFER_CHECK(epoch >= 0, "loader: epoch must be >= 0, got ", epoch);
  epoch_ = epoch;
  const uint64_t seed = epoch_seed(options_.seed, epoch);
  const int64_t n = ds_.size();
  if (options_.shuffle) {
    auto g = at::detail::createCPUGenerator(seed);
    order_ = torch::randperm(n, g, torch::TensorOptions().dtype(torch::kLong));
  } else {
    order_ = torch::arange(n, torch::kLong);
  }
  gen_.set_current_seed(mix(seed));
}

Batch Loader::batch(int64_t i) {
  XFER_CHECK(i >= 0 && i < num_batches(), "loader: batch ", i, " out of range (epoch has ",
             num_batches(), " batches)");
  const int64_t bs = options_.batch_size;
  const int64_t start = i * bs;
  const int64_t len = std::min(bs, ds_.size() - start);
  auto idx = order_.narrow(0, start, len);
  Batch b;
  b.images = ds_.images.index_select(0, idx).to(torch::kFloat).div_(255.0f);
  if (options_.augment.enabled()) {
    gen_.set_current_seed(mix(epoch_seed(options_.seed, epoch_) + static_cast<uint64_t>(i)));
    b.images = augment(b.images, options_.augment, gen_);
  }
  b.labels = ds_.labels.index_select(0, idx);
  b.index = ds_.index.index_select(0, idx);
  return b;
}

}  // namespace xfer::data
