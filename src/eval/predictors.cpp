#include "xfer/eval/predictors.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>

#include "xfer/core/error.h"

namespace xfer::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Json number_or_null(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

std::vector<double> average_ranks(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> ranks(v.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    const double r = 0.5 * double(i + j) + 1.0;  // ties share the mean of their ranks
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = r;
    i = j + 1;
  }
  return ranks;
}

}  // namespace

double linear_cka(const torch::Tensor& x, const torch::Tensor& y) {
  XFER_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(0) == y.size(0), "linear_cka: expected [n, d1] and [n, d2]");
  auto xc = x.to(torch::kDouble);
  auto yc = y.to(torch::kDouble);
  xc = xc - xc.mean(0, true);
  yc = yc - yc.mean(0, true);
  // ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F): the feature-space form, O(n d^2).
  const double cross = yc.t().mm(xc).pow(2).sum().item<double>();
  const double xx = xc.t().mm(xc).norm().item<double>();
  const double yy = yc.t().mm(yc).norm().item<double>();
  if (!(xx > 0) || !(yy > 0)) return kNaN;
  return cross / (xx * yy);
}

namespace {

/// The pairs Spearman ranks: those where both values are finite.
std::pair<std::vector<double>, std::vector<double>> finite_pairs(const std::vector<double>& a,
                                                                 const std::vector<double>& b) {
  XFER_CHECK(a.size() == b.size(), "spearman: ", a.size(), " vs ", b.size(), " values");
  std::vector<double> x, y;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(a[i]) && std::isfinite(b[i])) {
      x.push_back(a[i]);
      y.push_back(b[i]);
    }
  }
  return {x, y};
}

}  // namespace

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  const auto [x, y] = finite_pairs(a, b);
  if (x.size() < 3) return kNaN;
  auto rx = average_ranks(x), ry = average_ranks(y);
  const double n = double(rx.size());
  const double mx = std::accumulate(rx.begin(), rx.end(), 0.0) / n;
  const double my = std::accumulate(ry.begin(), ry.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < rx.size(); ++i) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) * (rx[i] - mx);
    syy += (ry[i] - my) * (ry[i] - my);
  }
  if (!(sxx > 0) || !(syy > 0)) return kNaN;
  return sxy / std::sqrt(sxx * syy);
}

int64_t spearman_pairs(const std::vector<double>& a, const std::vector<double>& b) {
  return static_cast<int64_t>(finite_pairs(a, b).first.size());
}

ModelProbe probe_model(models::ClassifierImpl& model, const torch::Tensor& images,
                       const torch::Tensor& labels, int64_t batch_size, torch::Device device,
                       bool gradients) {
  XFER_CHECK(images.dim() == 4 && labels.dim() == 1 && images.size(0) == labels.size(0),
             "probe_model: expected images [N,C,H,W] and labels [N]");
  XFER_CHECK(batch_size >= 1, "probe_model: batch_size must be >= 1");
  model.eval();
  std::vector<torch::Tensor> preds, grads, feats;
  const int64_t n = images.size(0);
  for (int64_t b = 0; b < n; b += batch_size) {
    const int64_t e = std::min(n, b + batch_size);
    auto x = images.slice(0, b, e).to(device).to(torch::kFloat).detach().requires_grad_(gradients);
    std::optional<torch::NoGradGuard> no_grad;
    if (!gradients) no_grad.emplace();
    auto f = model.features(x);  // refreshes LoRA adapters, normalises
    auto logits = model.forward_head(f);
    if (gradients) {
      auto y = labels.slice(0, b, e).to(device);
      // Sum, not mean: the per-sample gradient must not depend on the batch size.
      auto loss = torch::nn::functional::cross_entropy(
          logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
      grads.push_back(torch::autograd::grad({loss}, {x})[0].flatten(1).cpu().detach());
    }
    preds.push_back(logits.argmax(1).cpu());
    feats.push_back((model.has_head() ? f : logits).flatten(1).cpu().detach());
  }
  ModelProbe p;
  p.predictions = torch::cat(preds);
  if (gradients) p.gradients = torch::cat(grads);
  p.features = torch::cat(feats);
  p.features_are_logits = !model.has_head();
  return p;
}

double gradient_alignment(const torch::Tensor& ga, const torch::Tensor& gb) {
  XFER_CHECK(ga.sizes() == gb.sizes() && ga.dim() == 2, "gradient_alignment: shapes differ");
  auto a = ga.to(torch::kDouble), b = gb.to(torch::kDouble);
  auto na = a.norm(2, 1), nb = b.norm(2, 1);
  auto ok = (na > 0) & (nb > 0);
  const int64_t k = ok.sum().item<int64_t>();
  if (k == 0) return kNaN;
  auto cos = (a * b).sum(1) / (na * nb).clamp_min(1e-300);
  return cos.masked_select(ok).mean().item<double>();
}

double prediction_agreement(const torch::Tensor& pa, const torch::Tensor& pb) {
  XFER_CHECK(pa.sizes() == pb.sizes(), "prediction_agreement: shapes differ");
  if (pa.numel() == 0) return kNaN;
  return pa.eq(pb).to(torch::kDouble).mean().item<double>();
}

PairPredictors pair_predictors(const ModelProbe& a, const ModelProbe& b, bool same_labels) {
  PairPredictors p;
  p.cka = linear_cka(a.features, b.features);
  if (same_labels) {
    p.gradient_alignment = gradient_alignment(a.gradients, b.gradients);
    p.agreement = prediction_agreement(a.predictions, b.predictions);
  } else {
    p.gradient_alignment = p.agreement = std::nan("");
  }
  return p;
}

Json PairPredictors::to_json() const {
  return {{"gradient_alignment", number_or_null(gradient_alignment)},
          {"cka", number_or_null(cka)},
          {"agreement", number_or_null(agreement)}};
}

const std::vector<std::string>& predictor_names() {
  static const std::vector<std::string> names = {"gradient_alignment", "cka", "agreement"};
  return names;
}

double predictor_value(const PairPredictors& p, const std::string& name) {
  if (name == "gradient_alignment") return p.gradient_alignment;
  if (name == "cka") return p.cka;
  if (name == "agreement") return p.agreement;
  throw Error(str_cat("unknown predictor '", name, "'"));
}

}  // namespace xfer::eval
