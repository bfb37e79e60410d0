#pragma once
/// \file
/// `xfer train`: train a model from scratch on a data SPEC and write a model
/// directory. The CLI fills TrainRunOptions and calls run_train.

#include <functional>
#include <optional>
#include <string>

#include "xfer/core/fs.h"
#include "xfer/io/model_dir.h"
#include "xfer/train/trainer.h"

namespace xfer::train {

struct TrainRunOptions {
  std::string data;           ///< training data SPEC
  std::string val_data;       ///< validation SPEC; empty = stratified split of `data`
  /// Used when val_data is empty: the fraction held out (0 = no validation);
  /// -1 = 0.1, or 0 when the SPEC is k-shot, so that a scratch baseline trains
  /// on exactly the images `xfer finetune --shots K` trains on.
  double val_fraction = -1;
  std::string arch = "cnn";
  std::string arch_options = "{}";  ///< JSON object
  bool normalize = true;            ///< store the training data's mean/std in the model
  /// The head's form: linear | cosine | cosine:SCALE (models::HeadOptions);
  /// supervised only (under simclr the head is the projection).
  std::string head_type = "linear";
  /// Width of the projection head under --objective simclr (the model's
  /// num_classes; the labels of `data` are not used).
  int64_t proj_dim = 128;
  TrainOptions train;
  std::string out;
  Overwrite overwrite = Overwrite::kNo;
  bool checkpoints = true;       ///< false: no checkpoints (and no --resume)
  std::string checkpoint_dir;    ///< default OUT.ckpt
  int64_t checkpoint_every = 0;  ///< also every N steps (0 = each epoch only)
  std::string resume;            ///< checkpoint directory to continue from
  bool keep_checkpoint = false;  ///< keep the checkpoint directory after success
  /// Run the learning-rate range test instead of training; write nothing
  /// (TrainRunResult::lr_find holds the curve).
  bool lr_find = false;
  LrFindOptions lr_find_options;
  std::string lr_find_json;  ///< with lr_find: also write the curve here (JSON, atomically)
  std::function<void(const EpochRecord&)> on_epoch;
  std::function<void(const std::string&)> on_message;  ///< resume notes

  /// Throws xfer::UsageError on bad values (before any data is read).
  void validate() const;
  /// Every setting that decides the weights, defaults resolved where that
  /// needs neither the model nor the data, and results_revision(): a cache key
  /// (xfer study names its models by it, so a changed default is a new model,
  /// never a stale cached one). Validates first (out may be empty).
  Json settings() const;
};

struct TrainRunResult {
  io::ModelCard card;
  TrainResult train;
  int64_t train_samples = 0, val_samples = 0;
  bool resumed = false;
  bool already_done = false;  ///< --resume found the output already complete
  std::optional<LrFindResult> lr_find;  ///< with options.lr_find
};

TrainRunResult run_train(const TrainRunOptions& options);

}  // namespace xfer::train
