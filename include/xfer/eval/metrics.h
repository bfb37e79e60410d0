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

/// Interval of a rate pooled over `models` models tested on the same images
/// (victims of one attack, proxies against one target): k of n trials in all.
/// Their trials are not independent (an image that fools one model tends to
/// fool the others), so Wilson over the pooled counts is too narrow. This is
/// Wilson at the pooled rate with n / models trials: one model's worth of
/// images, exact when the models agree on every image and conservative
/// otherwise (the per-image fraction fooled never varies more than a 0/1
/// outcome). models = 1 gives wilson_interval(k, n).
std::pair<double, double> pooled_wilson_interval(int64_t k, int64_t n, int64_t models,
                                                 double z = 1.959963984540054);

}  // namespace xfer::eval
