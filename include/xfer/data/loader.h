#pragma once
/// \file
/// In-memory batching: the whole dataset is a contiguous tensor, a batch is an
/// index_select, so the model never waits on I/O.

#include <cstdint>

#include <torch/types.h>

#include "xfer/data/dataset.h"
#include "xfer/data/transforms.h"

namespace xfer::data {

struct Batch {
  torch::Tensor images;  ///< float32 [B,C,H,W] in [0,1] (augmented when asked)
  torch::Tensor labels;  ///< int64 [B]
  torch::Tensor index;   ///< int64 [B], dataset positions
};

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = false;
  bool drop_last = false;
  uint64_t seed = 0;  ///< epoch e shuffles with a hash of (seed, e)
  AugmentOptions augment;
};

/// Iterates over one dataset in batches (the dataset must outlive the loader). Epoch e's order depends only on (seed, e),
/// so a resumed run sees the same batches.
class Loader {
 public:
  Loader(const Dataset& ds, LoaderOptions options);
  /// Number of batches per epoch.
  int64_t num_batches() const;
  /// Starts epoch e (computes its order). The constructor starts epoch 0.
  void start_epoch(int64_t epoch);
  /// Batch i of the current epoch. Its augmentation draws from a generator
  /// seeded by (seed, epoch, i), so a batch does not depend on which batches
  /// were requested before it.
  Batch batch(int64_t i);

 private:
  const Dataset& ds_;
  LoaderOptions options_;
  torch::Tensor order_;
  torch::Generator gen_;
  int64_t epoch_ = 0;
};

}  // namespace xfer::data
