// libFuzzer entry point: one binary for every target, chosen by
// XFER_FUZZ_TARGET (fuzz/run sets it). Built only with -DXFER_FUZZ=ON (clang).
#include <cstdio>
#include <cstdlib>
#include <exception>

#include <torch/torch.h>

#include "targets.h"

namespace {
const xfer::fuzz::Target* target = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  const char* name = std::getenv("XFER_FUZZ_TARGET");
  try {
    target = &xfer::fuzz::find_target(name ? name : "");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xfer_fuzz: set XFER_FUZZ_TARGET: %s\n", e.what());
    std::exit(2);
  }
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Anything but xfer::Error escapes run_one and aborts: libFuzzer records it.
  xfer::fuzz::run_one(*target, data, size);
  return 0;
}
