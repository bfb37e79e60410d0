#pragma once
/// \file
/// A classifier head fitted in one full-batch solve on frozen features: the
/// backbone embeds the training images once (eval mode, no augmentation), then
/// multinomial logistic regression of the head on those features is solved by
/// L-BFGS with a strong-Wolfe line search, in double precision. This is the
/// linear-evaluation protocol of self-supervised learning (SimCLR, CLIP) and
/// the LP step of LP-FT (Kumar et al. 2022); it is deterministic and, with
/// few labels, faster and no worse than many mini-batch epochs.

#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "xfer/data/dataset.h"
#include "xfer/models/classifier.h"
#include "xfer/train/trainer.h"

namespace xfer::train {

struct ProbeOptions {
  /// Penalty l2 * ||W||^2 on the head's weight (not its bias), added to the
  /// mean cross-entropy. Needed by a linear head on separable few-shot
  /// features (the optimum is otherwise at infinity); must be 0 for a cosine
  /// head, whose function ignores the weights' norms (its scale regularises).
  TORCH_ARG(double, l2) = 1e-3;
  /// L-BFGS iterations at most (each costs one or a few objective evaluations).
  TORCH_ARG(int64_t, max_iter) = 500;
  /// Stop when every gradient entry is below this (first-order optimality).
  TORCH_ARG(double, tolerance) = 1e-7;
  /// Images per forward pass when embedding.
  TORCH_ARG(int64_t, batch_size) = 256;
  TORCH_ARG(std::string, device) = "cpu";

 public:
  /// Throws xfer::UsageError naming the --probe-* flag.
  void validate() const;
  /// validate(), and a penalty only for a linear head (a cosine head's
  /// function ignores its weights' norms): xfer::UsageError naming --probe-l2.
  void validate(const models::HeadOptions& head) const;
};

/// Pooled backbone features of every image of `ds` [N, num_features], in
/// eval mode without gradients (the model's training flag is restored). Every
/// process computes all rows: no sharding.
torch::Tensor embed(models::ClassifierImpl& model, const data::Dataset& ds, int64_t batch_size,
                    torch::Device device = torch::kCPU);

/// Fits the head of `model` in place on `train` (starting from its current
/// weights; the objective is convex for a linear head with l2 > 0, so the
/// start does not matter there). Only the head changes. The result has one
/// history record (epoch 1: training loss and accuracy at the solution,
/// validation ones when `val` is not empty) and in `solver` the objective,
/// the largest gradient entry at the solution, evaluations and whether the
/// gradient tolerance was met. Throws xfer::UsageError for a nonzero l2 on a
/// cosine head, xfer::Error when the model has no head or the fit diverges.
TrainResult fit_probe(models::ClassifierImpl& model, const data::Dataset& train,
                      const data::Dataset& val, const ProbeOptions& options);

}  // namespace xfer::train
