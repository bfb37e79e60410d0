#include "xfer/eval/metrics.h"

#include <algorithm>
#include <cmath>

#include "xfer/core/dist.h"
#include "xfer/core/error.h"

namespace xfer::eval {

Json Evaluation::to_json() const {
  Json pc = Json::array();
  for (size_t c = 0; c < per_class_accuracy.size(); ++c) {
    pc.push_back({{"class", c},
                  {"name", c < class_names.size() ? class_names[c] : std::to_string(c)},
                  {"accuracy", per_class_accuracy[c] < 0 ? Json(nullptr) : Json(per_class_accuracy[c])}});
  }
  auto ci = wilson_interval(correct, n);
  return Json{{"n", n},
              {"correct", correct},
              {"accuracy", accuracy},
              {"accuracy_ci95", {ci.first, ci.second}},
              {"loss", loss},
              {"per_class", pc},
              {"confusion", confusion},
              {"class_names", class_names}};
}

std::vector<std::vector<int64_t>> confusion_matrix(const torch::Tensor& labels,
                                                   const torch::Tensor& predictions, int64_t k) {
  XFER_CHECK(labels.numel() == predictions.numel(), "confusion_matrix: ", labels.numel(),
             " labels but ", predictions.numel(), " predictions");
  XFER_CHECK(k >= 1, "confusion_matrix: k must be >= 1");
  auto l = labels.to(torch::kCPU, torch::kLong).reshape(-1);
  auto p = predictions.to(torch::kCPU, torch::kLong).reshape(-1);
  if (l.numel() > 0) {
    XFER_CHECK(l.min().item<int64_t>() >= 0 && l.max().item<int64_t>() < k,
               "confusion_matrix: label out of range [0, ", k, ")");
    XFER_CHECK(p.min().item<int64_t>() >= 0 && p.max().item<int64_t>() < k,
               "confusion_matrix: prediction out of range [0, ", k, ")");
  }
  auto counts = torch::bincount(l * k + p, {}, k * k).reshape({k, k});
  std::vector<std::vector<int64_t>> m(k, std::vector<int64_t>(k));
  auto acc = counts.accessor<int64_t, 2>();
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) m[i][j] = acc[i][j];
  }
  return m;
}

torch::Tensor predict_logits(models::ClassifierImpl& model, const torch::Tensor& images_float,
                             int64_t batch_size, torch::Device device) {
  XFER_CHECK(batch_size >= 1, "predict: batch size must be >= 1");
  bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  // Distributed: each rank runs whole batches of its shard (the same batches
  // as one process), and every rank gets all rows back.
  const auto [first, last] = dist::shard(images_float.size(0), batch_size);
  for (int64_t i = first; i < last; i += batch_size) {
    auto x = images_float.slice(0, i, std::min(last, i + batch_size)).to(device);
    out.push_back(model.forward(x).to(torch::kCPU));
  }
  model.train(was_training);
  auto local = out.empty() ? torch::empty({0, model.num_classes()}) : torch::cat(out);
  return dist::all_gather_rows(local);
}

Evaluation evaluate(models::ClassifierImpl& model, const data::Dataset& ds, int64_t batch_size,
                    torch::Device device) {
  XFER_CHECK(ds.size() > 0, ds.source, ": no samples to evaluate");
  const int64_t k = model.num_classes();
  XFER_CHECK(ds.num_classes() <= k, ds.source, ": data has ", ds.num_classes(),
             " classes but the model predicts ", k);
  Evaluation e;
  e.n = ds.size();
  e.class_names = ds.class_names;
  // Chunked conversion keeps memory at one batch of floats.
  std::vector<torch::Tensor> logits_parts;
  for (int64_t i = 0; i < e.n; i += 4096) {
    auto idx = torch::arange(i, std::min(e.n, i + 4096), torch::kLong);
    logits_parts.push_back(predict_logits(model, ds.select(idx).float_images(), batch_size, device));
  }
  auto logits = torch::cat(logits_parts);
  auto labels = ds.labels.to(torch::kLong);
  auto pred = logits.argmax(1);
  e.correct = pred.eq(labels).sum().item<int64_t>();
  e.accuracy = double(e.correct) / double(e.n);
  e.loss = torch::nn::functional::cross_entropy(logits, labels).item<double>();
  e.confusion = confusion_matrix(labels, pred, k);
  e.per_class_accuracy.assign(ds.num_classes(), -1.0);
  for (int64_t c = 0; c < ds.num_classes(); ++c) {
    int64_t total = 0;
    for (int64_t j = 0; j < k; ++j) total += e.confusion[c][j];
    if (total > 0) e.per_class_accuracy[c] = double(e.confusion[c][c]) / double(total);
  }
  return e;
}

namespace {
// Wilson at rate p over nn trials (nn need not be whole: pooled_wilson_interval).
std::pair<double, double> wilson_at(double p, double nn, bool none, bool all, double z) {
  const double z2 = z * z;
  const double denom = 1.0 + z2 / nn;
  const double center = (p + z2 / (2 * nn)) / denom;
  const double half = z * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / denom;
  // The interval always holds p: rounding must not put the bound of 0/n above 0.
  if (none) return {0.0, std::min(1.0, center + half)};
  if (all) return {std::max(0.0, center - half), 1.0};
  return {std::clamp(center - half, 0.0, p), std::clamp(center + half, p, 1.0)};
}
}  // namespace

std::pair<double, double> wilson_interval(int64_t k, int64_t n, double z) {
  XFER_CHECK(n >= 0 && k >= 0 && k <= n, "wilson_interval: need 0 <= k <= n, got k=", k, " n=", n);
  if (n == 0) return {0.0, 1.0};
  return wilson_at(double(k) / double(n), double(n), k == 0, k == n, z);
}

std::pair<double, double> pooled_wilson_interval(int64_t k, int64_t n, int64_t models, double z) {
  XFER_CHECK(n >= 0 && k >= 0 && k <= n && models >= 1,
             "pooled_wilson_interval: need 0 <= k <= n and models >= 1, got k=", k, " n=", n,
             " models=", models);
  if (n == 0) return {0.0, 1.0};
  return wilson_at(double(k) / double(n), double(n) / double(models), k == 0, k == n, z);
}

}  // namespace xfer::eval
