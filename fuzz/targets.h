#pragma once
/// \file
/// Fuzz targets for every reader of untrusted input. Each target takes raw
/// bytes and drives one reader the way the CLI does; bad input must end in an
/// xfer::Error (the one-line `xfer: error:` of the CLI). Any other exception, a
/// crash, a sanitizer report or a broken round-trip property is a finding.
/// The same functions serve libFuzzer (fuzz/main.cpp) and the regression test
/// that replays fuzz/corpus and fuzz/regressions in the ordinary test suite.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace xfer::fuzz {

using TargetFn = void (*)(const uint8_t* data, size_t size);

struct Target {
  std::string name;
  TargetFn fn;
  std::string what;  ///< the reader it drives, for --help and the docs
};

/// All targets: idx, safetensors, model_dir, study_config, data_spec, eps, image.
const std::vector<Target>& targets();

/// The target called `name`; throws std::invalid_argument listing the names.
const Target& find_target(const std::string& name);

/// Runs a target on one input: returns normally when the input was accepted
/// or refused with an xfer::Error; anything else propagates (or aborts).
void run_one(const Target& target, const uint8_t* data, size_t size);

}  // namespace xfer::fuzz
