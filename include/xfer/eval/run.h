#pragma once
/// \file
/// `xfer eval`: evaluate a model (directory, imported weights or TorchScript) on a data SPEC.

#include <string>

#include "xfer/eval/metrics.h"
#include "xfer/io/import.h"

namespace xfer::eval {

struct EvalRunOptions {
  io::ModelSource source;  ///< model directory, imported weights or TorchScript
  std::string data;   ///< data SPEC
  std::string json;   ///< optional output file for the full result
  int64_t batch_size = 256;
  std::string device = "cpu";
};

struct EvalRunResult {
  Evaluation evaluation;
  Json json;  ///< what --json writes: model id, data spec and hash, evaluation
};

/// Loads, checks the data's shape and classes against the model, evaluates,
/// and writes options.json atomically when set.
EvalRunResult run_eval(const EvalRunOptions& options);

/// Readable report: accuracy with CI, per-class accuracy, confusion matrix.
std::string evaluation_text(const Evaluation& e);

}  // namespace xfer::eval
