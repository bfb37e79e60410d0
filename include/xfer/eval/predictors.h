#pragma once
/// \file
/// Predictors of transfer, measured on clean data for a (source, target) pair:
/// input-gradient cosine alignment (Demontis et al. 2019), linear CKA between
/// penultimate features (Kornblith et al. 2019) and prediction agreement; and
/// the Spearman rank correlation that relates them to measured success rates.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "xfer/core/json.h"
#include "xfer/models/classifier.h"

namespace xfer::eval {

/// Linear CKA between two representations of the same n samples: x [n, d1]
/// and y [n, d2] (any d). 1 for identical inputs; invariant to orthogonal
/// transforms and isotropic scaling of either side. Computed in float64 on
/// column-centred features; NaN when either side has no variance.
double linear_cka(const torch::Tensor& x, const torch::Tensor& y);

/// Spearman rank correlation (ties get their average rank). NaN when there
/// are fewer than 3 pairs or either side is constant.
double spearman(const std::vector<double>& a, const std::vector<double>& b);
/// How many pairs spearman(a, b) ranks: those where both values are finite (a
/// predictor that does not apply to a pair, e.g. a label-free source's
/// gradient alignment, is NaN and left out).
int64_t spearman_pairs(const std::vector<double>& a, const std::vector<double>& b);

/// What a model shows on clean data: predictions [N], input gradients of
/// its cross-entropy loss w.r.t. the [0,1] image [N, C*H*W], and features
/// [N, d] (penultimate; the logits for a model without a head, e.g. a
/// TorchScript classifier).
struct ModelProbe {
  torch::Tensor predictions, gradients, features;
  bool features_are_logits = false;
};

/// Probes a model in eval mode. `labels` index the model's classes. Without
/// `gradients` (a model whose outputs are not the labels' classes: a base of
/// another task, an embedding) only predictions and features are taken and
/// `gradients` stays undefined.
ModelProbe probe_model(models::ClassifierImpl& model, const torch::Tensor& images,
                       const torch::Tensor& labels, int64_t batch_size = 128,
                       torch::Device device = torch::kCPU, bool gradients = true);

/// Mean over samples of the cosine between two input-gradient rows (samples
/// where either gradient is zero are skipped); NaN when none is left.
double gradient_alignment(const torch::Tensor& ga, const torch::Tensor& gb);

/// Fraction of samples on which two prediction vectors agree.
double prediction_agreement(const torch::Tensor& pa, const torch::Tensor& pb);

struct PairPredictors {
  double gradient_alignment = 0;
  double cka = 0;
  double agreement = 0;
  /// JSON with NaN as null.
  Json to_json() const;
};

/// `same_labels` false (one model's classes are not the data's, a base pre-trained on another
/// task): the label-based predictors (gradient alignment: gradients of the label loss;
/// agreement of predicted labels) mean nothing and are NaN; CKA needs no labels.
PairPredictors pair_predictors(const ModelProbe& a, const ModelProbe& b, bool same_labels = true);

/// Names of the predictors, in the order of PairPredictors' fields.
const std::vector<std::string>& predictor_names();
/// A predictor by name (see predictor_names()).
double predictor_value(const PairPredictors& p, const std::string& name);

}  // namespace xfer::eval
