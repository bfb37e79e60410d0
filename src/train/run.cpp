#include "xfer/train/run.h"

#include <filesystem>

#include "xfer/core/dist.h"
#include "xfer/core/error.h"
#include "xfer/core/runtime.h"
#include "xfer/data/spec.h"
#include "xfer/models/registry.h"

namespace xfer::train {

void TrainRunOptions::validate() const {
  XFER_CHECK_USAGE(!data.empty(), "--data is required");
  XFER_CHECK_USAGE(lr_find || !out.empty(), "--out is required");
  XFER_CHECK_USAGE(!(lr_find && !resume.empty()),
                   "--lr-find trains nothing to keep: it cannot be combined with --resume");
  if (lr_find) lr_find_options.validate();
  XFER_CHECK_USAGE(lr_find || lr_find_json.empty(), "--lr-find-json needs --lr-find");
  XFER_CHECK_USAGE(val_fraction == -1 || (val_fraction >= 0 && val_fraction < 1),
                   "--val-fraction must be in [0, 1), got ", val_fraction);
  XFER_CHECK_USAGE(
      val_data.empty() || val_fraction <= 0,
      "--val-fraction and --val-data are alternatives (a split of --data, or other data)");
  train.validate();
  models::HeadOptions::parse(head_type);
  XFER_CHECK_USAGE(train.objective() != "simclr" || head_type == "linear",
                   "--head-type applies to a classifier's head; under --objective simclr the head is "
                   "the projection");
  XFER_CHECK_USAGE(proj_dim >= 2 && proj_dim <= 65536, "--proj-dim must be in [2, 65536], got ", proj_dim);
  XFER_CHECK_USAGE(checkpoint_every >= 0, "--checkpoint-every must be >= 0, got ", checkpoint_every);
  XFER_CHECK_USAGE(checkpoints || (resume.empty() && checkpoint_every == 0),
                   "--no-checkpoint cannot be combined with --resume or --checkpoint-every");
  auto names = models::model_names();
  if (std::find(names.begin(), names.end(), arch) == names.end()) {
    models::create_model(arch, {});  // throws the usage error listing known names
  }
  try {
    auto j = Json::parse(arch_options);
    XFER_CHECK_USAGE(j.is_object(), "--arch-options must be a JSON object, got ", arch_options);
  } catch (const nlohmann::json::exception&) {
    throw UsageError(str_cat("--arch-options: not valid JSON: ", arch_options));
  }
  // Last, so that a bad --lr-find setting is named first.
  XFER_CHECK_USAGE(
      !(lr_find && !out.empty()),
      "--lr-find trains nothing to keep: drop --out (then train with --lr RATE and --out)");
}

namespace {
// --val-fraction's default: none for a k-shot SPEC (every shot trains, as in
// xfer finetune), else a tenth.
double resolved_val_fraction(const TrainRunOptions& o, const data::DataSpec& spec) {
  return o.val_fraction >= 0 ? o.val_fraction : spec.shots ? 0.0 : 0.1;
}
}  // namespace

Json TrainRunOptions::settings() const {
  // Where the model goes is no part of the key: checked as if it had an --out.
  TrainRunOptions checked = *this;
  if (checked.out.empty() && !checked.lr_find) checked.out = "-";
  checked.validate();
  const auto spec = data::DataSpec::parse(data);
  const bool ssl = train.objective() == "simclr";
  Json j = train.to_json();
  j.update({{"command", "train"},
            {"revision", results_revision()},
            {"data", spec.str()},
            {"val_data", val_data},
            {"val_fraction",
             val_data.empty() ? Json(resolved_val_fraction(*this, spec)) : Json(nullptr)},
            {"arch", arch},
            {"arch_options", Json::parse(arch_options)},
            {"normalize", normalize},
            {"head_type", ssl ? Json(nullptr) : Json(models::HeadOptions::parse(head_type).str())},
            {"proj_dim", ssl ? Json(proj_dim) : Json(nullptr)}});
  return j;
}

TrainRunResult run_train(const TrainRunOptions& o) {
  o.validate();
  const std::string ckpt_dir = o.lr_find ? ""
                                         : prepare_checkpoint_dir(o.out, o.checkpoint_dir, o.resume,
                                                                  o.checkpoints, o.overwrite);
  if (!o.lr_find_json.empty()) check_output_path_file(o.lr_find_json);
  auto spec = data::DataSpec::parse(o.data);
  data::Dataset all = data::load(spec);
  const double val_fraction = resolved_val_fraction(o, spec);
  data::Dataset train_ds, val_ds;
  if (!o.val_data.empty()) {
    train_ds = all;
    val_ds = data::load(o.val_data);
    data::check_same_task(val_ds, train_ds);
  } else if (val_fraction > 0) {
    std::tie(train_ds, val_ds) = data::stratified_split(all, val_fraction, o.train.seed());
  } else {
    train_ds = all;
  }
  XFER_CHECK(train_ds.height() == train_ds.width(), o.data, ": images are ", train_ds.height(), "x",
             train_ds.width(), "; models expect square images (use folder:...:size=N)");

  io::ModelConfig config;
  config.arch = o.arch;
  config.arch_options = Json::parse(o.arch_options);
  const bool ssl = o.train.objective() == "simclr";
  config.input_shape = {train_ds.channels(), train_ds.height(), train_ds.width()};
  if (ssl) {
    // An encoder: the head is the projection of the contrastive objective.
    config.task = "embedding";
    config.num_classes = o.proj_dim;
  } else {
    config.num_classes = all.num_classes();
    config.class_names = all.class_names;
    config.head = models::HeadOptions::parse(o.head_type);
  }
  if (o.normalize) {
    auto stats = data::compute_stats(train_ds);
    config.mean = stats.mean;
    config.std = stats.std;
    for (auto& s : config.std) s = std::max(s, 1e-3);
  }
  seed_everything(o.train.seed());
  auto model = io::build_model(config);

  TrainRunResult r;
  r.train_samples = train_ds.size();
  r.val_samples = val_ds.size();
  if (o.lr_find) {
    r.lr_find = Trainer(o.train).lr_find(*model, train_ds, o.lr_find_options);
    if (!o.lr_find_json.empty())
      write_file_atomic(o.lr_find_json, r.lr_find->to_json().dump(1) + "\n");
    return r;
  }
  const auto& t = o.train;
  Json recipe = t.to_json();
  recipe.update({{"command", "train"},
                 {"revision", results_revision()},
                 {"strategy", ssl ? "self-supervised" : "scratch"},
                 {"arch", o.arch},
                 {"arch_options", config.arch_options},
                 {"normalize", o.normalize},
                 {"head_type", config.head.str()},
                 {"shots", spec.shots ? Json(*spec.shots) : Json(nullptr)},
                 {"data_sha256", all.content_hash()},
                 {"val_spec", o.val_data.empty() ? Json(nullptr) : Json(o.val_data)},
                 {"val_fraction", o.val_data.empty() ? Json(val_fraction) : Json(nullptr)}});
  if (ssl) recipe["proj_dim"] = o.proj_dim;
  auto ckpt = open_resume(o.resume, recipe, "train");
  if (ckpt) {
    r.resumed = true;
    if (auto done = finished_output(o.out, recipe, o.resume, o.keep_checkpoint)) {
      r.card = *done;
      r.already_done = true;
      return r;
    }
    if (o.on_message) {
      o.on_message(str_cat("resuming from ", io::checkpoint_file(o.resume), " (epoch ",
                           ckpt->state.value("epoch", 0), ", step ", ckpt->state.value("step", 0),
                           ")"));
      if (auto note = resume_thread_note(*ckpt); !note.empty()) o.on_message(note);
    }
  }
  Trainer trainer(o.train);
  if (o.on_epoch) trainer.on_epoch(o.on_epoch);
  trainer.checkpoint({o.checkpoints ? ckpt_dir : "", o.checkpoint_every,
                      {{"recipe", recipe}, {"phase", 0}, {"finished", Json::array()}}});
  if (ckpt) trainer.resume(*ckpt);
  r.train = trainer.fit(*model, train_ds, val_ds);
  model->to(torch::kCPU);

  io::ModelCard card;
  card.recipe = recipe;
  card.data = {{"spec", o.data},
               {"sha256", all.content_hash()},
               {"samples", all.size()},
               {"train_samples", train_ds.size()},
               {"val_spec", o.val_data.empty() ? Json(nullptr) : Json(o.val_data)},
               {"val_fraction", o.val_data.empty() ? Json(val_fraction) : Json(nullptr)},
               {"val_samples", val_ds.size()}};
  Json history = Json::array();
  for (const auto& h : r.train.history) history.push_back(to_json(h));
  card.metrics = {{"val_accuracy", val_ds.size() ? Json(r.train.best_val_accuracy) : Json(nullptr)},
                  {"best_epoch", r.train.best_epoch},
                  {"wall_seconds", r.train.wall_seconds},
                  {"images_per_second", r.train.images_per_second},
                  {"trainable_parameters", r.train.trainable_parameters},
                  {"parameters", models::count_parameters(*model)},
                  {"threads", torch::get_num_threads()},
                  {"world_size", r.train.world_size},
                  {"rank_max_param_diff", r.train.rank_max_param_diff},
                  {"history", history}};
  r.card = write_output(o.out, *model, config, card, o.overwrite, o.checkpoints ? ckpt_dir : "",
                        o.keep_checkpoint);
  return r;
}

}  // namespace xfer::train
