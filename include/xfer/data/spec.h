#pragma once
/// \file
/// Data SPEC strings (DESIGN.md):
///   fashion-mnist[:train|:test][:classes=5-9][:exclude=K@SEEDS][:shots=K][:seed=S]
///   idx:IMAGES[.gz],LABELS[.gz][:modifiers]
///   folder:PATH[:size=N][:channels=C][:modifiers]
/// Modifiers: classes=A-B or A,B,C (kept and relabelled 0..k-1 in that order),
/// exclude=K@SEEDS (without the samples that shots=K takes under each seed of
/// SEEDS, e.g. 100@0-2: a pool disjoint from those draws), shots=K (K per
/// class, seeded), seed=S (default 0). Applied in that order.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "xfer/data/dataset.h"

namespace xfer::data {

/// Where Debian's dataset-fashion-mnist package puts the files; the
/// XFER_FASHION_MNIST_DIR environment variable overrides it.
std::string fashion_mnist_dir();
/// The ten Fashion-MNIST class names.
const std::vector<std::string>& fashion_mnist_classes();

struct DataSpec {
  enum class Kind { kFashionMnist, kIdx, kFolder };
  Kind kind = Kind::kFashionMnist;
  std::string split = "train";          ///< fashion-mnist: train or test
  std::vector<std::string> paths;       ///< idx: images, labels; folder: root
  std::vector<int64_t> classes;         ///< empty = all
  std::optional<int64_t> exclude_shots;  ///< exclude=K@...: the draws' size
  std::vector<uint64_t> exclude_seeds;   ///< exclude=...@SEEDS: the draws' seeds, ascending
  std::optional<int64_t> shots;         ///< per class
  uint64_t seed = 0;
  int64_t image_size = 0;               ///< folder: resize to this size
  int64_t channels = 0;                 ///< folder: force 1 or 3

  /// Parses a SPEC; throws xfer::UsageError naming the SPEC and the bad part.
  static DataSpec parse(const std::string& text);
  /// The canonical text of this spec (round-trips through parse).
  std::string str() const;
};

/// The spec with its folder resize set to size x size (the CLI's --image-size);
/// size 0 returns the spec unchanged. Throws xfer::UsageError for non-folder specs.
std::string with_image_size(const std::string& text, int64_t size);

/// Loads the data a spec names, applying class selection then k-shot sampling.
Dataset load(const DataSpec& spec);
/// Shorthand for load(DataSpec::parse(text)).
Dataset load(const std::string& text);

}  // namespace xfer::data
