#pragma once
/// \file
/// An in-memory labelled image dataset and the operations on it: class subsets
/// with relabelling, k-shot sampling, stratified splits, statistics.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace xfer::data {

/// Images are kept as uint8 NxCxHxW (as stored on disk, 4x smaller than float);
/// batches are converted to float in [0,1]. `index` maps each sample to its
/// position in the source it was read from (kept through subsets), so
/// adversarial sets can point back at their clean samples.
struct Dataset {
  torch::Tensor images;                  ///< uint8 [N, C, H, W]
  torch::Tensor labels;                  ///< int64 [N], in [0, class_names.size())
  torch::Tensor index;                   ///< int64 [N], position in the source
  std::vector<std::string> class_names;  ///< name of each label
  std::string source;                    ///< where it came from (path or spec)

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
  int64_t channels() const { return images.size(1); }
  int64_t height() const { return images.size(2); }
  int64_t width() const { return images.size(3); }

  /// Checks shapes, dtypes and label range; throws xfer::Error naming `source`.
  void validate() const;
  /// The samples at the given positions (in that order).
  Dataset select(const torch::Tensor& positions) const;
  /// Images as float32 in [0,1].
  torch::Tensor float_images() const;
  /// Number of samples of each class.
  std::vector<int64_t> class_counts() const;
  /// SHA-256 over shape, images and labels: identifies exactly the samples used.
  std::string content_hash() const;
};

/// Keeps only the listed original classes and relabels them 0..k-1 in the
/// given order, keeping their names. Throws if a class does not exist.
Dataset select_classes(const Dataset& ds, const std::vector<int64_t>& classes);

/// The positions of a balanced subset of n samples: classes taken in turn
/// (ascending label), each class's samples in their own order, until n are
/// taken; returned sorted ascending (the subset keeps the data's order).
/// Deterministic and seed-free. For `--limit` and the predictor samples: a
/// k-shot draw or an image folder is sorted by class, and its first n samples
/// would be one or two classes. n >= labels.size(0) gives every position.
torch::Tensor balanced_positions(const torch::Tensor& labels, int64_t n);

/// The subset for a `--limit n`: balanced_positions' n samples, or the whole
/// data when n is 0 (no limit) or at least its size.
Dataset limit_balanced(const Dataset& ds, int64_t n);

/// The positions sample_shots(ds, k, seed) takes, in its order (by class, then
/// by position). Draws of one seed are nested: k shots are among k + 1's.
torch::Tensor shot_positions(const Dataset& ds, int64_t k, uint64_t seed);

/// k samples of each class, chosen with the seed (deterministic, independent of
/// thread count). Throws naming the class if one has fewer than k samples.
Dataset sample_shots(const Dataset& ds, int64_t k, uint64_t seed);

/// The data without every sample that sample_shots(ds, k, s) takes for any s in
/// `seeds`, in the data's order: a pool disjoint from those draws and, since
/// draws are nested, from every draw of at most k shots under those seeds (an
/// attacker's labels apart from a victim's). Throws naming the class if the
/// exclusion would leave one without samples (k >= its size, or the seeds'
/// draws together cover it).
Dataset exclude_shots(const Dataset& ds, int64_t k, const std::vector<uint64_t>& seeds);

/// Splits into (train, val) with the same class proportions; val gets
/// round(fraction * n_c) samples of each class c (at least 1 when fraction > 0
/// and the class has >= 2 samples).
std::pair<Dataset, Dataset> stratified_split(const Dataset& ds, double val_fraction, uint64_t seed);

/// Checks that `other` (a validation or test set given apart) poses the same
/// task as `reference`: the same image shape and the same classes, name for
/// name in label order, so that a label means the same class in both. Throws
/// xfer::Error naming `other`'s source and the first difference.
void check_same_task(const Dataset& other, const Dataset& reference);

/// Per-channel mean and std of the images in [0,1].
struct Stats {
  std::vector<double> mean, std;
};
Stats compute_stats(const Dataset& ds);

/// Value range of the images in [0,1].
std::pair<double, double> value_range(const Dataset& ds);

}  // namespace xfer::data
