#pragma once
/// \file
/// Process-wide runtime settings: threads, seeding, device, version strings.

#include <cstdint>
#include <string>

#include <torch/types.h>

namespace xfer {

/// The library version (CMake project version).
std::string version();
/// The LibTorch version xfer was built against, e.g. "1.13.1".
std::string torch_version();
/// The revision of xfer's results: raised with every change that makes a fixed
/// recipe produce other numbers (other weights, other adversarial images), as
/// a fix of the loader's epoch seeds did. Recipes and cache keys hold it, so a
/// cached model or set from before such a change is made again, and a
/// checkpoint from before it is refused by --resume, never mixed with new ones.
int results_revision();

/// Sets LibTorch's intra-op threads. n <= 0 means one per hardware thread
/// (LibTorch from Debian defaults to 1). Returns the number set.
int set_threads(int n);

/// Seeds torch's CPU (and CUDA, when present) generators.
void seed_everything(uint64_t seed);

/// Parses "cpu", "cuda", "cuda:N" or "auto" (cuda when available, else cpu).
torch::Device parse_device(const std::string& name);

/// A small deterministic generator (splitmix64) for host-side sampling, so data
/// sampling does not depend on torch's generator or on the thread count.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  /// Uniform integer in [0, n).
  uint64_t uniform(uint64_t n);
  /// Uniform double in [0, 1).
  double uniform01();
  uint64_t state() const { return state_; }

 private:
  uint64_t state_;
};

/// Fisher-Yates shuffle of [0, n) with the given generator.
std::vector<int64_t> permutation(int64_t n, Rng& rng);

}  // namespace xfer
