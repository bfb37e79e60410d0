#include "xfer/train/trainer.h"

#include <chrono>
#include <cmath>

#include "xfer/core/error.h"
#include "xfer/core/progress.h"
#include "xfer/core/runtime.h"
#include "xfer/data/loader.h"
#include "xfer/train/scheduler.h"

namespace xfer::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A detached copy of every parameter and buffer, to restore later.
std::vector<torch::Tensor> snapshot(torch::nn::Module& m) {
  std::vector<torch::Tensor> s;
  for (auto& p : m.parameters()) s.push_back(p.detach().clone());
  for (auto& b : m.buffers()) s.push_back(b.detach().clone());
  return s;
}

void restore(torch::nn::Module& m, const std::vector<torch::Tensor>& s) {
  torch::NoGradGuard no_grad;
  size_t i = 0;
  for (auto& p : m.parameters()) p.copy_(s.at(i++));
  for (auto& b : m.buffers()) b.copy_(s.at(i++));
}

}  // namespace

void TrainOptions::validate() const {
  XFER_CHECK_USAGE(epochs() >= 1, "--epochs must be >= 1, got ", epochs());
  XFER_CHECK_USAGE(batch_size() >= 1, "--batch-size must be >= 1, got ", batch_size());
  XFER_CHECK_USAGE(optimizer() == "adamw" || optimizer() == "sgd",
                   "--optimizer: expected adamw or sgd, got '", optimizer(), "'");
  XFER_CHECK_USAGE(std::isfinite(lr()) && lr() > 0, "--lr must be a positive number, got ", lr());
  XFER_CHECK_USAGE(std::isfinite(weight_decay()) && weight_decay() >= 0,
                   "--weight-decay must be >= 0, got ", weight_decay());
  XFER_CHECK_USAGE(momentum() >= 0 && momentum() < 1, "--momentum must be in [0, 1), got ",
                   momentum());
  XFER_CHECK_USAGE(schedule() == "cosine" || schedule() == "constant",
                   "--schedule: expected cosine or constant, got '", schedule(), "'");
  XFER_CHECK_USAGE(warmup_epochs() >= 0 && warmup_epochs() <= double(epochs()),
                   "--warmup-epochs must be in [0, epochs], got ", warmup_epochs());
  XFER_CHECK_USAGE(label_smoothing() >= 0 && label_smoothing() < 1,
                   "--label-smoothing must be in [0, 1), got ", label_smoothing());
  XFER_CHECK_USAGE(augment().crop_padding >= 0, "--crop-padding must be >= 0");
}

LossAccuracy evaluate_loss(models::ClassifierImpl& model, const data::Dataset& ds,
                           int64_t batch_size, torch::Device device) {
  LossAccuracy r;
  if (ds.size() == 0) return r;
  bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  data::Loader loader(ds, data::LoaderOptions{batch_size, false, false, 0, {}});
  loader.start_epoch(0);
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t i = 0; i < loader.num_batches(); ++i) {
    auto b = loader.batch(i);
    auto logits = model.forward(b.images.to(device));
    auto labels = b.labels.to(device);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, labels,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
  }
  r.loss = loss_sum / double(ds.size());
  r.accuracy = double(correct) / double(ds.size());
  model.train(was_training);
  return r;
}

ParamGroups split_weight_decay(torch::nn::Module& model) {
  ParamGroups g;
  for (const auto& item : model.named_parameters(true)) {
    const auto& p = item.value();
    if (!p.requires_grad()) continue;
    // timm's rule: 1-d tensors (biases, norm scales) and scalars get no decay.
    if (p.dim() <= 1) {
      g.no_decay.push_back(p);
      g.no_decay_names.push_back(item.key());
    } else {
      g.decay.push_back(p);
      g.decay_names.push_back(item.key());
    }
  }
  return g;
}

Trainer::Trainer(TrainOptions options) : options_(std::move(options)) { options_.validate(); }

TrainResult Trainer::fit(models::ClassifierImpl& model, const data::Dataset& train,
                         const data::Dataset& val) {
  const auto& o = options_;
  XFER_CHECK(train.size() > 0, train.source, ": training set is empty");
  XFER_CHECK(train.num_classes() <= model.num_classes(), train.source, ": data has ",
             train.num_classes(), " classes but the model's head has ", model.num_classes());
  torch::Device device = parse_device(o.device());
  model.to(device);
  seed_everything(o.seed());

  auto groups = split_weight_decay(model);
  XFER_CHECK(!groups.decay.empty() || !groups.no_decay.empty(),
             "training: the model has no trainable parameters");
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (o.optimizer() == "adamw") {
    if (!groups.decay.empty()) {
      param_groups.emplace_back(groups.decay, std::make_unique<torch::optim::AdamWOptions>(
                                                  torch::optim::AdamWOptions(o.lr()).weight_decay(
                                                      o.weight_decay())));
    }
    if (!groups.no_decay.empty()) {
      param_groups.emplace_back(groups.no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                                     torch::optim::AdamWOptions(o.lr()).weight_decay(0)));
    }
    optimizer = std::make_unique<torch::optim::AdamW>(param_groups,
                                                      torch::optim::AdamWOptions(o.lr()));
  } else {
    auto sgd = [&](double wd) {
      return std::make_unique<torch::optim::SGDOptions>(
          torch::optim::SGDOptions(o.lr()).momentum(o.momentum()).nesterov(
              o.nesterov() && o.momentum() > 0).weight_decay(wd));
    };
    if (!groups.decay.empty()) param_groups.emplace_back(groups.decay, sgd(o.weight_decay()));
    if (!groups.no_decay.empty()) param_groups.emplace_back(groups.no_decay, sgd(0));
    optimizer = std::make_unique<torch::optim::SGD>(param_groups, torch::optim::SGDOptions(o.lr()));
  }

  data::LoaderOptions lo;
  lo.batch_size = o.batch_size();
  lo.shuffle = true;
  // Dropping a ragged last batch keeps BatchNorm away from a batch of one.
  lo.drop_last = train.size() > o.batch_size();
  lo.seed = o.seed();
  lo.augment = o.augment();
  data::Loader loader(train, lo);
  const int64_t steps_per_epoch = loader.num_batches();
  ScheduleOptions so;
  so.kind = o.schedule();
  so.total_steps = steps_per_epoch * o.epochs();
  so.warmup_steps = static_cast<int64_t>(std::llround(o.warmup_epochs() * steps_per_epoch));

  TrainResult result;
  result.trainable_parameters = models::count_parameters(model, true);
  auto best = snapshot(model);
  auto last_good = best;
  const auto t_start = Clock::now();
  double train_seconds = 0;
  int64_t images_seen = 0;
  int64_t step = 0;
  auto ce_options = torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(o.label_smoothing());

  for (int64_t epoch = 0; epoch < o.epochs(); ++epoch) {
    model.train();
    loader.start_epoch(epoch);
    Progress progress(str_cat("epoch ", epoch + 1, "/", o.epochs()), steps_per_epoch);
    const auto t_epoch = Clock::now();
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    double lr_now = o.lr();
    for (int64_t i = 0; i < steps_per_epoch; ++i, ++step) {
      lr_now = o.lr() * lr_factor(so, step);
      for (auto& g : optimizer->param_groups()) g.options().set_lr(lr_now);
      auto batch = loader.batch(i);
      auto x = batch.images.to(device);
      auto y = batch.labels.to(device);
      optimizer->zero_grad();
      auto logits = model.forward(x);
      auto loss = torch::nn::functional::cross_entropy(logits, y, ce_options);
      double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value)) {
        restore(model, last_good);
        throw Error(str_cat("training diverged: loss is ", loss_value, " at epoch ", epoch + 1,
                            " step ", i + 1, " (try a lower --lr); weights restored to the end of epoch ",
                            epoch));
      }
      loss.backward();
      optimizer->step();
      loss_sum += loss_value * double(x.size(0));
      correct += logits.detach().argmax(1).eq(y).sum().item<int64_t>();
      seen += x.size(0);
      progress.advance(1, str_cat("loss ", std::round(loss_value * 1000) / 1000));
    }
    progress.done();
    double epoch_train_seconds = seconds_since(t_epoch);
    train_seconds += epoch_train_seconds;
    images_seen += seen;

    EpochRecord rec;
    rec.epoch = epoch + 1;
    rec.train_loss = loss_sum / double(std::max<int64_t>(seen, 1));
    rec.train_accuracy = double(correct) / double(std::max<int64_t>(seen, 1));
    rec.lr = lr_now;
    rec.images_per_second = double(seen) / std::max(epoch_train_seconds, 1e-9);
    if (val.size() > 0) {
      auto v = evaluate_loss(model, val, 256, device);
      rec.val_loss = v.loss;
      rec.val_accuracy = v.accuracy;
    }
    rec.seconds = seconds_since(t_epoch);
    result.history.push_back(rec);
    last_good = snapshot(model);
    // Without validation the last epoch is the one kept.
    double score = val.size() > 0 ? rec.val_accuracy : double(epoch);
    if (score > result.best_val_accuracy || result.best_epoch < 0) {
      result.best_val_accuracy = score;
      result.best_epoch = epoch + 1;
      best = last_good;
    }
    if (on_epoch_) on_epoch_(rec);
  }
  if (val.size() == 0) result.best_val_accuracy = -1;
  if (o.keep_best() && val.size() > 0) restore(model, best);
  if (!o.keep_best()) result.best_epoch = o.epochs();
  model.eval();
  result.wall_seconds = seconds_since(t_start);
  result.images_per_second = double(images_seen) / std::max(train_seconds, 1e-9);
  return result;
}

}  // namespace xfer::train
