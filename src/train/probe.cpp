#include "xfer/train/probe.h"

#include <chrono>
#include <cmath>

#include "xfer/core/dist.h"
#include "xfer/core/error.h"
#include "xfer/core/runtime.h"

namespace xfer::train {

void ProbeOptions::validate() const {
  XFER_CHECK_USAGE(std::isfinite(l2()) && l2() >= 0, "--probe-l2 must be >= 0, got ", l2());
  XFER_CHECK_USAGE(max_iter() >= 1 && max_iter() <= 100000,
                   "--probe-iters must be in [1, 100000], got ", max_iter());
  XFER_CHECK_USAGE(std::isfinite(tolerance()) && tolerance() > 0,
                   "probe tolerance must be > 0, got ", tolerance());
  XFER_CHECK_USAGE(batch_size() >= 1, "--batch-size must be >= 1, got ", batch_size());
  parse_device(device());  // "auto", "cpu", "cuda[:N]"; a usage error where CUDA is missing
}

void ProbeOptions::validate(const models::HeadOptions& head) const {
  validate();
  XFER_CHECK_USAGE(
      l2() == 0 || head.kind() == "linear", "--probe-l2 applies to a linear head: a ", head.kind(),
      " head ignores its weights' norms (its scale regularises it); pass --probe-l2 0");
}

torch::Tensor embed(models::ClassifierImpl& model, const data::Dataset& ds, int64_t batch_size,
                    torch::Device device) {
  XFER_CHECK(batch_size >= 1, "embed: batch size must be >= 1, got ", batch_size);
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < ds.size(); i += batch_size) {
    auto x =
        ds.images.slice(0, i, std::min(ds.size(), i + batch_size)).to(device).to(torch::kFloat) /
        255.0;
    parts.push_back(model.features(x));
  }
  model.train(was_training);
  if (parts.empty()) return torch::empty({0, model.num_features()}, torch::TensorOptions(device));
  return torch::cat(parts);
}

TrainResult fit_probe(models::ClassifierImpl& model, const data::Dataset& train,
                      const data::Dataset& val, const ProbeOptions& o) {
  o.validate(model.head_options());
  XFER_CHECK(model.has_head(), "probe: the model has no head to fit");
  XFER_CHECK(train.size() > 0, "probe: no training samples");
  const auto t0 = std::chrono::steady_clock::now();
  const torch::Device device = parse_device(o.device());
  model.to(device);
  const auto feats = embed(model, train, o.batch_size(), device).to(torch::kDouble);
  const double embed_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto labels = train.labels.to(device);

  // Double precision: the gradient tolerance means something, and the solution
  // hardly depends on summation order (thread count).
  auto& head = model.head();
  const auto dtype = head->weight.scalar_type();
  const auto backup = head->weight.detach().clone();
  const auto backup_bias = head->bias.defined() ? head->bias.detach().clone() : torch::Tensor();
  head->to(torch::kDouble);
  std::vector<torch::Tensor> params{head->weight};
  if (head->bias.defined()) params.push_back(head->bias);
  for (auto& p : params) p.set_requires_grad(true);

  namespace F = torch::nn::functional;
  const double l2 = o.l2();
  auto objective = [&] {
    auto loss = F::cross_entropy(model.forward_head(feats), labels);
    return l2 > 0 ? loss + l2 * head->weight.pow(2).sum() : loss;
  };
  torch::optim::LBFGS solver(params, torch::optim::LBFGSOptions(1.0)
                                         .max_iter(o.max_iter())
                                         .max_eval(o.max_iter() * 5 / 4 + 1)
                                         .tolerance_grad(o.tolerance())
                                         .tolerance_change(1e-12)
                                         .history_size(50)
                                         .line_search_fn("strong_wolfe"));
  int64_t evaluations = 0;
  solver.step([&] {
    solver.zero_grad();
    auto loss = objective();
    loss.backward();
    ++evaluations;
    return loss;
  });

  // The solution's objective and first-order optimality.
  solver.zero_grad();
  auto final_objective = objective();
  final_objective.backward();
  double grad_max = 0;
  for (const auto& p : params) grad_max = std::max(grad_max, p.grad().abs().max().item<double>());
  const double obj = final_objective.item<double>();
  double train_loss = 0, train_acc = 0;
  {
    torch::NoGradGuard no_grad;
    auto logits = model.forward_head(feats);
    train_loss = F::cross_entropy(logits, labels).item<double>();
    train_acc = logits.argmax(1).eq(labels).to(torch::kDouble).mean().item<double>();
  }
  head->to(dtype);
  for (auto& p : params) p.mutable_grad() = torch::Tensor();
  if (!std::isfinite(obj) || !std::isfinite(grad_max)) {
    torch::NoGradGuard no_grad;
    head->weight.copy_(backup);
    if (backup_bias.defined()) head->bias.copy_(backup_bias);
    XFER_CHECK(false, "probe: the L-BFGS fit diverged (objective ", obj,
               "); the head is unchanged");
  }

  EpochRecord rec;
  rec.epoch = 1;
  rec.train_loss = train_loss;
  rec.train_accuracy = train_acc;
  rec.lr = 1.0;  // L-BFGS's step scale; the line search picks each step
  if (val.size() > 0) {
    auto va = evaluate_loss(model, val, o.batch_size(), device);
    rec.val_loss = va.loss;
    rec.val_accuracy = va.accuracy;
  }
  rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rec.images_per_second = embed_seconds > 0 ? double(train.size()) / embed_seconds : 0;

  TrainResult r;
  r.history.push_back(rec);
  r.best_epoch = 1;
  r.best_val_accuracy = rec.val_accuracy;
  r.wall_seconds = rec.seconds;
  r.images_per_second = rec.images_per_second;
  for (const auto& p : params) r.trainable_parameters += p.numel();
  r.world_size = dist::world_size();
  r.solver = {{"name", "lbfgs"},
              {"objective", obj},
              {"grad_max", grad_max},
              {"evaluations", evaluations},
              {"converged", grad_max <= o.tolerance()},
              {"l2", l2},
              {"max_iter", o.max_iter()}};
  return r;
}

}  // namespace xfer::train
