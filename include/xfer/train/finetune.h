#pragma once
/// \file
/// `xfer finetune`: adapt a pre-trained model (model directory, safetensors +
/// arch, or TorchScript) to a data SPEC with a strategy (DESIGN.md), with
/// exact resume from checkpoints, and write a model directory whose card
/// names its parent and the full recipe.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "xfer/core/fs.h"
#include "xfer/io/import.h"
#include "xfer/io/model_dir.h"
#include "xfer/train/freeze.h"
#include "xfer/train/probe.h"
#include "xfer/train/trainer.h"

namespace xfer::train {

struct FinetuneRunOptions {
  io::ModelSource source;
  std::string data;          ///< training data SPEC
  int64_t shots = 0;         ///< > 0: K samples per class (overrides the SPEC's shots)
  std::string val_data;      ///< validation SPEC; empty = val_fraction of the data
  double val_fraction = 0;   ///< default none: with few labels every one trains
  std::string strategy = "full";
  TrainOptions train;        ///< its weight_decay is the freeze policy's
  FreezeOptions freeze;      ///< bn_mode, layer_decay, head_lr_scale
  std::string head = "new";  ///< new (fresh head for the data's classes) | keep
  /// The new head's form: linear | cosine | cosine:SCALE (models::HeadOptions);
  /// empty = linear for a new head, the parent's own for --head keep.
  std::string head_type;
  /// How linear-probe and lp-ft's first phase fit the head: "minibatch" (the
  /// trainer's epochs, with augmentation) or "lbfgs" (train/probe.h: the
  /// backbone embeds the images once, then one full-batch logistic-regression
  /// solve; lp-ft's fine-tuning phase then runs all --epochs).
  std::string probe_solver = "minibatch";
  double probe_l2 = -1;      ///< lbfgs: penalty on the head weight (-1 = 1e-3 linear, 0 cosine)
  int64_t probe_iters = 0;   ///< lbfgs: iterations at most (0 = 500)
  int64_t lp_epochs = 0;     ///< lp-ft: linear-probe epochs (0 = half of --epochs)
  double ft_lr_scale = 0;    ///< lp-ft: the full phase's lr relative to --lr (0 = 0.1)
  double lora_alpha = 0;     ///< lora: scaling alpha (0 = rank)
  bool lora_merge = true;    ///< fold adapters into the weights on save
  bool checkpoints = true;       ///< false: no checkpoints (and no --resume)
  std::string checkpoint_dir;    ///< default OUT.ckpt
  int64_t checkpoint_every = 0;  ///< also every N steps (0 = each epoch only)
  std::string resume;            ///< checkpoint directory to continue from
  bool keep_checkpoint = false;  ///< keep the checkpoint directory after success
  bool dry_run = false;          ///< print the parameter groups, train nothing
  /// Run the learning-rate range test on the first phase that has a rate
  /// (lp-ft with lbfgs: the fine-tuning phase, after the solve) and write
  /// nothing; FinetuneRunResult::lr_find holds the curve.
  bool lr_find = false;
  LrFindOptions lr_find_options;
  std::string lr_find_json;  ///< with lr_find: also write the curve here (JSON, atomically)
  std::string out;
  Overwrite overwrite = Overwrite::kNo;
  std::function<void(const EpochRecord&)> on_epoch;
  /// After each mini-batch step of any phase (Trainer::on_step): false stops
  /// the phase. Called before that step's checkpoint is written.
  std::function<bool(const StepRecord&)> on_step;
  std::function<void(const std::string&)> on_message;  ///< phase starts, resume notes

  /// Throws xfer::UsageError on bad values and bad combinations.
  void validate() const;
  /// Every setting that decides the weights, defaults resolved where that
  /// needs neither the parent model nor the data, and results_revision(): a cache key
  /// (xfer study names its models by it, so a changed default is a new model,
  /// never a stale cached one). Validates first (out may be empty).
  Json settings() const;
};

struct FinetuneRunResult {
  io::ModelCard card;
  std::vector<TrainResult> phases;  ///< one, or two for lp-ft
  std::vector<FreezePlan> plans;    ///< the freeze plan of each phase
  std::string plan_text;            ///< what --dry-run prints
  int64_t train_samples = 0, val_samples = 0;
  int64_t trainable_parameters = 0;
  double wall_seconds = 0;
  bool resumed = false;
  bool already_done = false;  ///< --resume found the output already complete
  std::optional<LrFindResult> lr_find;  ///< with options.lr_find
  std::string lr_find_phase;            ///< the phase it ran on
  /// That phase's rate relative to --lr (lp-ft's --ft-lr-scale, else 1): the
  /// --lr to pass is lr_find->valley_lr / lr_find_scale.
  double lr_find_scale = 1;
};

/// Runs the whole fine-tuning (or only the plan with dry_run).
FinetuneRunResult run_finetune(const FinetuneRunOptions& options);

/// The SPEC with shots=K (and seed=S unless the SPEC names a seed): how
/// `--shots` turns a SPEC into the k-shot subset, for finetune and train alike.
/// shots 0 returns the SPEC as it is; a SPEC that sets shots= itself is a
/// usage error (one of the two would be ignored).
std::string with_shots(const std::string& spec, int64_t shots, uint64_t seed);

}  // namespace xfer::train
