#pragma once
/// \file
/// Classification metrics: accuracy, per-class accuracy, confusion matrix.

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "xfer/core/json.h"
#include "xfer/data/dataset.h"
#include "xfer/models/classifier.h"

namespace xfer::eval {

struct Evaluation {
  int64_t n = 0;
  int64_t correct = 0;
  double accuracy = 0;
  double loss = 0;
  std::vector<double> per_class_accuracy;       ///< NaN-free: -1 where a class has no sample
  std::vector<std::vector<int64_t>> confusion;  ///< [true][predicted]
  std::vector<std::string> class_names;

  Json to_json() const;
};

/// Confusion matrix [k][k] from labels and predictions (int64 [N]).
std::vector<std::vector<int64_t>> confusion_matrix(const torch::Tensor& labels,
                                                   const torch::Tensor& predictions, int64_t k);

/// Logits of the model over a dataset, in order (eval mode, no grad).
torch::Tensor predict_logits(models::ClassifierImpl& model, const torch::Tensor& images_float,
                             int64_t batch_size = 256, torch::Device device = torch::kCPU);

/// Evaluates on a dataset whose labels index the model's classes.
Evaluation evaluate(models::ClassifierImpl& model, const data::Dataset& ds,
                    int64_t batch_size = 256, torch::Device device = torch::kCPU);

/// Wilson score interval (95% by default) of k successes out of n.
std::pair<double, double> wilson_interval(int64_t k, int64_t n, double z = 1.959963984540054);

}  // namespace xfer::eval
