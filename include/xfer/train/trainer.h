#pragma once
/// \file
/// Supervised training of a classifier: SGD (momentum, Nesterov) or AdamW,
/// warmup + cosine schedule, no weight decay on norm weights and biases,
/// evaluation on a validation set each epoch, best weights kept, and a clear
/// error (with the last good weights restored) when the loss turns NaN/inf.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "xfer/core/fs.h"
#include "xfer/core/json.h"
#include "xfer/data/dataset.h"
#include "xfer/data/transforms.h"
#include "xfer/io/checkpoint.h"
#include "xfer/io/model_dir.h"
#include "xfer/models/classifier.h"

namespace xfer::train {

struct TrainOptions {
  TORCH_ARG(int64_t, epochs) = 10;
  TORCH_ARG(int64_t, batch_size) = 128;
  TORCH_ARG(std::string, optimizer) = "adamw";  ///< adamw | sgd
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(double, weight_decay) = 0.05;
  TORCH_ARG(double, momentum) = 0.9;  ///< sgd only
  TORCH_ARG(bool, nesterov) = true;   ///< sgd only
  TORCH_ARG(std::string, schedule) = "cosine";  ///< cosine | constant
  TORCH_ARG(double, warmup_epochs) = 0.5;
  TORCH_ARG(double, label_smoothing) = 0.0;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(data::AugmentOptions, augment) = {};
  /// Keep the weights of the epoch with the best validation accuracy.
  TORCH_ARG(bool, keep_best) = true;
  TORCH_ARG(std::string, device) = "cpu";
  /// Adversarial training (Madry et al. 2018): "" = off; "pgd:EPS" or
  /// "pgd:EPS:STEPS" (default 7 steps, alpha 2.5 eps/steps, random start,
  /// linf). Each batch is replaced by PGD examples crafted on the current
  /// weights with the model in eval mode (BatchNorm statistics untouched by
  /// the attack), after augmentation; the train loss/accuracy are then on
  /// adversarial examples.
  TORCH_ARG(std::string, adv_train) = "";
  /// "supervised": cross-entropy on the labels. "simclr": self-supervised
  /// contrastive pre-training (Chen et al. 2020) that ignores the labels: two
  /// random views of each image (`views`) go through the model, whose head is
  /// the projection, and the NT-Xent loss pulls each pair together against the
  /// other 2N-2 images of the global batch. The "accuracy" of this objective is
  /// the fraction of views whose most similar other view is their pair.
  TORCH_ARG(std::string, objective) = "supervised";
  TORCH_ARG(double, temperature) = 0.2;  ///< simclr: softmax temperature of NT-Xent
  TORCH_ARG(data::ViewOptions, views) = {};

 public:
  /// Throws xfer::UsageError on out-of-range values.
  void validate() const;
  /// The options that shape the weights (epochs ... seed), for recipes in card.json.
  Json to_json() const;
};

/// A parsed --adv-train value.
struct AdvTrainSpec {
  double eps = 0;
  int64_t steps = 7;
};
/// Parses "pgd:EPS[:STEPS]" (EPS as 0.1 or 8/255); nullopt for "".
/// Throws xfer::UsageError naming --adv-train.
std::optional<AdvTrainSpec> parse_adv_train(const std::string& text);

/// NT-Xent (normalised temperature-scaled cross-entropy, Chen et al. 2020)
/// of paired embeddings z1[i] <-> z2[i], each [N, D]: the mean over the 2N
/// views of -log softmax similarity of the pair against the other 2N-2 views
/// (cosine similarity / temperature). `correct` [2N] (bool, no grad) says for
/// each view whether its pair is its most similar other view.
struct ContrastiveLoss {
  torch::Tensor loss, correct;
};
ContrastiveLoss nt_xent(const torch::Tensor& z1, const torch::Tensor& z2, double temperature);

/// One epoch's numbers.
struct EpochRecord {
  int64_t epoch = 0;
  double train_loss = 0, train_accuracy = 0;
  double val_loss = 0, val_accuracy = -1;  ///< -1 when no validation set
  double lr = 0;
  double seconds = 0;
  double images_per_second = 0;
};

/// One epoch as JSON (validation fields null when there was no validation set),
/// and back: card.json histories and checkpoints use the same form.
Json to_json(const EpochRecord& record);
EpochRecord epoch_record_from_json(const Json& j);

struct TrainResult {
  std::vector<EpochRecord> history;
  int64_t best_epoch = -1;
  double best_val_accuracy = -1;
  double wall_seconds = 0;
  double images_per_second = 0;  ///< training throughput over all epochs
  int64_t trainable_parameters = 0;
  int64_t world_size = 1;  ///< processes that trained it (data parallel)
  /// Distributed: each rank's largest |parameter - rank 0's| at the end, summed
  /// over ranks (0 exactly when the replicas stayed in sync, as they must).
  double rank_max_param_diff = 0;
  /// A full-batch solve's numbers (train/probe.h: objective, gradient,
  /// evaluations, converged); null for mini-batch training.
  Json solver = nullptr;
};

/// A note for a resume whose intra-op thread count differs from the one that
/// wrote the checkpoint (CPU reductions split differently, so the result stays
/// a valid run but not bit-identical to an uninterrupted one); empty when they
/// agree or the checkpoint predates the record.
std::string resume_thread_note(const io::Checkpoint& checkpoint);

/// Loss and accuracy of a model on a dataset (eval mode, no grad).
struct LossAccuracy {
  double loss = 0, accuracy = 0;
};
LossAccuracy evaluate_loss(models::ClassifierImpl& model, const data::Dataset& ds,
                           int64_t batch_size = 256, torch::Device device = torch::kCPU);
/// The simclr objective's loss and accuracy on a dataset (eval mode, no grad),
/// in batches of `batch_size` with views drawn from a generator fixed by
/// options.seed(): the same views every epoch, so epochs compare.
LossAccuracy evaluate_contrastive(models::ClassifierImpl& model, const data::Dataset& ds,
                                  const TrainOptions& options, int64_t batch_size = 256,
                                  torch::Device device = torch::kCPU);

/// Parameter groups as the optimizer sees them: decayed (conv/linear weights)
/// and not decayed (1-d tensors: biases, norm weights). Frozen tensors
/// (requires_grad false) are left out.
struct ParamGroups {
  std::vector<torch::Tensor> decay, no_decay;
  std::vector<std::string> decay_names, no_decay_names;
};
ParamGroups split_weight_decay(torch::nn::Module& model);

/// One optimizer parameter group: its learning rate is the scheduled rate
/// times lr_scale (layer-wise / discriminative rates).
struct OptimGroup {
  std::string name;
  std::vector<torch::Tensor> params;
  double lr_scale = 1.0;
  double weight_decay = 0.0;
};

/// Where and how often fit() writes checkpoints.
struct CheckpointOptions {
  std::string dir;          ///< empty = no checkpoints
  int64_t every_steps = 0;  ///< also every N optimizer steps (0 = at epoch ends only)
  Json context = Json::object();  ///< stored in each checkpoint (recipe, phase, ...)
};

/// One optimizer step, as Trainer::on_step sees it.
struct StepRecord {
  int64_t step = 0;  ///< 0-based, counted over the whole run
  double lr = 0;     ///< the step's base rate (each group scales it by its lr_scale)
  double loss = 0;   ///< the batch's training loss, penalty included; not finite when it diverged
};

/// The learning-rate range test (Smith 2017; fastai's lr_find): train from
/// start_lr to end_lr, the rate growing geometrically step by step, record the
/// loss, stop once it diverges. A few dozen steps in place of a grid of runs.
struct LrFindOptions {
  TORCH_ARG(double, start_lr) = 1e-7;
  TORCH_ARG(double, end_lr) = 10.0;
  /// Steps at most (the rate reaches end_lr at the last one).
  TORCH_ARG(int64_t, steps) = 100;
  /// Weight of the past in the loss's exponential moving average (debiased);
  /// negative: 1 - 10/steps, so the average lags by about a tenth of the test
  /// whatever its length (0.9 at 100 steps; fastai's fixed 0.98 lags ~50 steps,
  /// half of a 100-step test, and moves the minimum decades to the right).
  TORCH_ARG(double, smoothing) = -1;
  /// Stop once the smoothed loss exceeds this multiple of its minimum (a
  /// minimum below 0.05 counts as 0.05: near zero, batch noise is a multiple).
  /// Armed once the average spans its window, 1 / (1 - beta) steps (at least
  /// 2, at most a quarter of the steps).
  TORCH_ARG(double, divergence) = 4.0;

 public:
  /// Throws xfer::UsageError (with the CLI's flag names).
  void validate() const;
  Json to_json() const;
  /// smoothing(), or its default for steps() when negative.
  double beta() const;
};

/// A range test's curve and the rates read off it.
struct LrFindResult {
  LrFindOptions options;
  std::vector<double> lr, loss, smoothed;  ///< one entry per step run
  /// Why the test ended before its last step ("" when it ran them all):
  /// "divergence", the smoothed loss passed divergence x its minimum (that
  /// step is the curve's last point); "non-finite", the loss was not finite
  /// (that step is not in the curve).
  std::string stopped_by;
  /// Stopped early, for either reason.
  bool diverged() const { return !stopped_by.empty(); }
  double min_loss_lr = 0;  ///< where the smoothed loss was lowest
  double steepest_lr = 0;  ///< where it fell fastest per unit of log(lr)
  /// The suggestion: the middle (in log lr) of the valley, the smoothed loss's
  /// last fall into its minimum, which starts at the last point before the
  /// minimum still above a tenth of the way down from the plateau (the median
  /// of the curve's first tenth). The noisy start and the climb after the
  /// minimum are left out. Where the loss never fell it is the start rate.
  double valley_lr = 0;
  Json to_json() const;
  /// The curve at about `rows` rates and the three readings, for the CLI.
  std::string text(int64_t rows = 12) const;
};

/// Fills min_loss_lr, steepest_lr and valley_lr from lr and smoothed (the
/// point that tripped the divergence test, if it did, is left out).
void read_lr_curve(LrFindResult& r);

class Trainer {
 public:
  explicit Trainer(TrainOptions options);
  /// Trains in place; `val` may be empty (size 0). Throws xfer::Error on a
  /// non-finite loss after restoring the last good weights.
  TrainResult fit(models::ClassifierImpl& model, const data::Dataset& train,
                  const data::Dataset& val);
  const TrainOptions& options() const { return options_; }
  /// Called after each epoch (the CLI prints it; the library does not print).
  void on_epoch(std::function<void(const EpochRecord&)> callback) { on_epoch_ = std::move(callback); }
  /// Optimizer groups; default: split_weight_decay of the trainable parameters
  /// with options().weight_decay().
  void groups(std::vector<OptimGroup> groups) { groups_ = std::move(groups); }
  /// A term added to the loss before backward (e.g. the L2-SP penalty).
  void penalty(std::function<torch::Tensor()> penalty) { penalty_ = std::move(penalty); }
  /// Writes checkpoints (atomically) at each epoch end and every N steps.
  void checkpoint(CheckpointOptions options) { checkpoint_ = std::move(options); }
  /// Continues from a checkpoint written by fit() with the same options, model
  /// and groups: model, optimizer moments, RNG, position in the epoch, history
  /// and best weights are restored, so the result equals an uninterrupted run.
  void resume(io::Checkpoint checkpoint) { resume_ = std::move(checkpoint); }
  /// Called after each optimizer step; returning false ends fit() there (the
  /// unfinished epoch is not recorded). On a non-finite loss it is called with
  /// the weights already restored to the last epoch end, before the step: false
  /// ends fit() quietly, true lets it throw as without the callback.
  void on_step(std::function<bool(const StepRecord&)> callback) { on_step_ = std::move(callback); }
  /// Replaces the schedule: step s trains at options().lr() * curve(s).
  void lr_curve(std::function<double(int64_t)> curve) { lr_curve_ = std::move(curve); }
  /// The range test with this trainer's optimizer, groups, penalty, batch size
  /// and augmentation (not its checkpoints, resume or callbacks). Every
  /// parameter and buffer of `model` is restored afterwards, also on error.
  LrFindResult lr_find(models::ClassifierImpl& model, const data::Dataset& train,
                       const LrFindOptions& options) const;

 private:
  TrainOptions options_;
  std::function<void(const EpochRecord&)> on_epoch_;
  std::vector<OptimGroup> groups_;
  std::function<torch::Tensor()> penalty_;
  CheckpointOptions checkpoint_;
  std::optional<io::Checkpoint> resume_;
  std::function<bool(const StepRecord&)> on_step_;
  std::function<double(int64_t)> lr_curve_;
};

/// Removes a checkpoint directory: its checkpoint file and the temporaries of
/// interrupted writes, then the directory itself only if nothing else is left.
void remove_checkpoint_dir(const std::string& dir);

/// The checkpoint directory of a run that writes `out`: `resume` if given,
/// else `dir`, else OUT.ckpt. Checked before any work: --resume must name a
/// directory; a leftover checkpoint without --resume is a usage error naming
/// --resume (or is removed when overwrite is kYes); `out` must be creatable
/// unless a resumed run already wrote it. The directory must not be, contain
/// or lie inside `out`, and must hold nothing but a checkpoint (it is removed
/// after the run): --resume of a directory without one, or a --checkpoint-dir
/// with other files in it, is a usage error naming an entry.
std::string prepare_checkpoint_dir(const std::string& out, const std::string& dir,
                                   const std::string& resume, bool enabled, Overwrite overwrite);

/// The checkpoint in --resume's directory (none while it is still empty),
/// after checking that it was written by `command` with the same recipe:
/// xfer::UsageError listing the fields that differ.
std::optional<io::Checkpoint> open_resume(const std::string& resume, const Json& recipe,
                                          const std::string& command);

/// Writes a finished run's model directory: rank 0 saves it (the other ranks
/// wait at a barrier and read its card) and then removes `ckpt_dir` unless it
/// is empty or keep_checkpoint. Returns the card written.
io::ModelCard write_output(const std::string& out, models::ClassifierImpl& model,
                           const io::ModelConfig& config, io::ModelCard card, Overwrite overwrite,
                           const std::string& ckpt_dir, bool keep_checkpoint,
                           const std::vector<std::pair<std::string, std::string>>& extra_files = {});

/// A resumed run killed after its output was written but before its
/// checkpoint was removed: the card of `out` when it exists (its recipe, less
/// the `ignore` keys, must equal `recipe`, else xfer::UsageError naming out),
/// with the checkpoint directory removed unless keep_checkpoint; nullopt when
/// `out` does not exist yet.
std::optional<io::ModelCard> finished_output(const std::string& out, const Json& recipe,
                                             const std::string& resume, bool keep_checkpoint,
                                             const std::vector<std::string>& ignore = {});

}  // namespace xfer::train
