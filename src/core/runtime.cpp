#include "xfer/core/runtime.h"

#include <thread>

#include <torch/torch.h>

#include "xfer/core/error.h"

namespace xfer {

std::string version() { return XFER_VERSION; }

// 2: loader epoch seeds hash the run's seed first; attacks hold their budget
// exactly (2026-12-07).
int results_revision() {
  return 2;
}

std::string torch_version() {
  return str_cat(TORCH_VERSION_MAJOR, ".", TORCH_VERSION_MINOR, ".", TORCH_VERSION_PATCH);
}

int set_threads(int n) {
  if (n <= 0) {
    n = static_cast<int>(std::thread::hardware_concurrency());
    if (n <= 0) n = 1;
  }
  torch::set_num_threads(n);
  return n;
}

void seed_everything(uint64_t seed) {
  torch::manual_seed(seed);
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

torch::Device parse_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::kCPU;
  try {
    torch::Device d(name);
    if (d.is_cuda()) {
      XFER_CHECK_USAGE(torch::cuda::is_available(),
                       "--device ", name, ": this build of LibTorch has no CUDA device");
    }
    return d;
  } catch (const c10::Error&) {
    throw UsageError(str_cat("--device: expected cpu, cuda, cuda:N or auto, got '", name, "'"));
  }
}

uint64_t Rng::next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rng::uniform(uint64_t n) {
  XFER_CHECK(n > 0, "Rng::uniform: n must be positive");
  // Rejection sampling removes modulo bias.
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do {
    x = next();
  } while (x >= limit);
  return x % n;
}

double Rng::uniform01() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

std::vector<int64_t> permutation(int64_t n, Rng& rng) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    std::swap(p[i], p[rng.uniform(static_cast<uint64_t>(i) + 1)]);
  }
  return p;
}

}  // namespace xfer
