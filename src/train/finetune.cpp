#include "xfer/train/finetune.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include "xfer/core/dist.h"
#include "xfer/core/error.h"
#include "xfer/core/runtime.h"
#include "xfer/core/sha256.h"
#include "xfer/data/spec.h"
#include "xfer/io/checkpoint.h"
#include "xfer/models/lora.h"

namespace fs = std::filesystem;

namespace xfer::train {
namespace {

using Kind = Strategy::Kind;

struct Phase {
  std::string name;
  FreezeOptions freeze;
  int64_t epochs = 0;
  double lr = 0;
  bool lbfgs = false;  ///< the head in one full-batch solve (train/probe.h), no epochs
};

Json result_json(const TrainResult& r) {
  Json h = Json::array();
  for (const auto& e : r.history) h.push_back(to_json(e));
  Json j = {{"history", h},
            {"best_epoch", r.best_epoch},
            {"best_val_accuracy", r.best_val_accuracy >= 0 ? Json(r.best_val_accuracy) : Json(nullptr)},
            {"wall_seconds", r.wall_seconds},
            {"images_per_second", r.images_per_second},
            {"trainable_parameters", r.trainable_parameters}};
  if (!r.solver.is_null()) j["solver"] = r.solver;
  return j;
}

TrainResult result_from(const Json& j) {
  TrainResult r;
  for (const auto& e : j.at("history")) r.history.push_back(epoch_record_from_json(e));
  r.best_epoch = j.at("best_epoch").get<int64_t>();
  r.best_val_accuracy = j.at("best_val_accuracy").is_null() ? -1 : j.at("best_val_accuracy").get<double>();
  r.wall_seconds = j.at("wall_seconds").get<double>();
  r.images_per_second = j.at("images_per_second").get<double>();
  r.trainable_parameters = j.at("trainable_parameters").get<int64_t>();
  r.solver = j.value("solver", Json(nullptr));
  return r;
}

std::string source_path(const io::ModelSource& s) {
  return !s.dir.empty() ? s.dir : !s.weights.empty() ? s.weights : s.torchscript;
}

}  // namespace

std::string with_shots(const std::string& text, int64_t shots, uint64_t seed) {
  if (shots <= 0) return text;
  auto spec = data::DataSpec::parse(text);
  XFER_CHECK_USAGE(!spec.shots, "--shots ", shots, ": the data spec '", text,
                   "' sets shots=", *spec.shots, " itself; give one of the two");
  spec.shots = shots;
  if (text.find(":seed=") == std::string::npos) spec.seed = seed;
  return spec.str();
}

void FinetuneRunOptions::validate() const {
  {
    // Shape and class count of weights/TorchScript sources come from the data.
    io::ModelSource s = source;
    if (s.input_shape.empty()) s.input_shape = {s.mean.empty() ? 1 : int64_t(s.mean.size()), 1, 1};
    if (s.num_classes <= 0) s.num_classes = 1;
    s.validate();
  }
  XFER_CHECK_USAGE(!data.empty(), "--data is required");
  XFER_CHECK_USAGE(dry_run || lr_find || !out.empty(), "--out is required");
  XFER_CHECK_USAGE(shots >= 0, "--shots must be >= 1 (or 0 for every sample), got ", shots);
  XFER_CHECK_USAGE(val_fraction >= 0 && val_fraction < 1, "--val-fraction must be in [0, 1), got ",
                   val_fraction);
  XFER_CHECK_USAGE(
      val_data.empty() || val_fraction == 0,
      "--val-fraction and --val-data are alternatives (a split of --data, or other data)");
  XFER_CHECK_USAGE(head == "new" || head == "keep", "--head: expected new or keep, got '", head, "'");
  if (!head_type.empty()) {
    models::HeadOptions::parse(head_type);
    XFER_CHECK_USAGE(head == "new", "--head-type applies to a new head; --head keep keeps the parent's "
                     "head as it is");
  }
  XFER_CHECK_USAGE(checkpoint_every >= 0, "--checkpoint-every must be >= 0, got ", checkpoint_every);
  XFER_CHECK_USAGE(!(dry_run && !resume.empty()), "--dry-run and --resume cannot be combined");
  XFER_CHECK_USAGE(
      !(lr_find && (dry_run || !resume.empty())),
      "--lr-find trains nothing to keep: it cannot be combined with --dry-run or --resume");
  if (lr_find) lr_find_options.validate();
  XFER_CHECK_USAGE(lr_find || lr_find_json.empty(), "--lr-find-json needs --lr-find");
  XFER_CHECK_USAGE(checkpoints || (resume.empty() && checkpoint_every == 0),
                   "--no-checkpoint cannot be combined with --resume or --checkpoint-every");
  XFER_CHECK_USAGE(
      ft_lr_scale == 0 || (std::isfinite(ft_lr_scale) && ft_lr_scale > 0 && ft_lr_scale <= 1),
      "--ft-lr-scale must be in (0, 1], got ", ft_lr_scale);
  XFER_CHECK_USAGE(std::isfinite(lora_alpha) && lora_alpha >= 0, "--lora-alpha must be >= 0, got ",
                   lora_alpha);
  train.validate();
  freeze.validate();
  auto s = Strategy::parse(strategy);
  XFER_CHECK_USAGE(s.kind != Kind::kScratch,
                   "--strategy scratch: use `xfer train` (with the same --data and --shots) for a "
                   "model trained from scratch");
  XFER_CHECK_USAGE(probe_solver == "minibatch" || probe_solver == "lbfgs",
                   "--probe-solver: expected minibatch or lbfgs, got '", probe_solver, "'");
  const bool lbfgs = probe_solver == "lbfgs";
  XFER_CHECK_USAGE(probe_l2 == -1 || (std::isfinite(probe_l2) && probe_l2 >= 0),
                   "--probe-l2 must be >= 0, got ", probe_l2);
  XFER_CHECK_USAGE(probe_iters >= 0 && probe_iters <= 100000,
                   "--probe-iters must be in [1, 100000] (or 0 for the default), got ",
                   probe_iters);
  XFER_CHECK_USAGE(lbfgs || (probe_l2 == -1 && probe_iters == 0),
                   "--probe-l2 and --probe-iters only apply to --probe-solver lbfgs");
  XFER_CHECK_USAGE(!lbfgs || s.kind == Kind::kLinearProbe || s.kind == Kind::kLpFt,
                   "--probe-solver lbfgs fits a head on frozen features: it applies to --strategy "
                   "linear-probe and lp-ft, not ",
                   s.str());
  XFER_CHECK_USAGE(
      !(lr_find && lbfgs && s.kind == Kind::kLinearProbe),
      "--lr-find: --probe-solver lbfgs fits the head in one solve, with no learning rate to find");
  if (s.kind == Kind::kLpFt && lbfgs) {
    XFER_CHECK_USAGE(lp_epochs == 0,
                     "--lp-epochs counts a mini-batch probe's epochs: with --probe-solver "
                     "lbfgs the probe is one solve and the fine-tuning phase runs all --epochs");
  } else if (s.kind == Kind::kLpFt) {
    XFER_CHECK_USAGE(train.epochs() >= 2, "--strategy lp-ft needs --epochs >= 2 (a linear-probe phase "
                     "and a fine-tuning phase), got ", train.epochs());
    XFER_CHECK_USAGE(lp_epochs >= 0 && lp_epochs < train.epochs(), "--lp-epochs must be in [1, ",
                     train.epochs() - 1, "] (fewer than --epochs; 0 for half), got ", lp_epochs);
  } else {
    XFER_CHECK_USAGE(lp_epochs == 0, "--lp-epochs only applies to --strategy lp-ft");
  }
  XFER_CHECK_USAGE(ft_lr_scale == 0 || s.kind == Kind::kLpFt,
                   "--ft-lr-scale only applies to --strategy lp-ft");
  if (s.kind == Kind::kLora) {
    XFER_CHECK_USAGE(source.torchscript.empty(),
                     "--strategy lora: TorchScript modules cannot take adapters (their layers are "
                     "compiled code); use --weights FILE --arch NAME, or another strategy");
  } else {
    XFER_CHECK_USAGE(lora_alpha == 0 && lora_merge, "--lora-alpha/--lora-separate only apply to "
                     "--strategy lora:R");
  }
  if (!source.torchscript.empty()) {
    XFER_CHECK_USAGE(head == "keep" || source.torchscript_mode == "backbone",
                     "--torchscript-mode classifier keeps the module's own output layer: pass "
                     "--torchscript-mode backbone for a new head, or --head keep");
  }
  // Last, so that a bad --lr-find setting is named first.
  XFER_CHECK_USAGE(
      !(lr_find && !out.empty()),
      "--lr-find trains nothing to keep: drop --out (then train with --lr RATE and --out)");
}

namespace {
// The defaults of the options' 0 / -1 / empty values, in one place for the run
// and for settings().
double resolved_ft_lr_scale(const FinetuneRunOptions& o) {
  return o.ft_lr_scale > 0 ? o.ft_lr_scale : 0.1;
}
int64_t resolved_lp_epochs(const FinetuneRunOptions& o) {
  return o.lp_epochs > 0 ? o.lp_epochs : std::max<int64_t>(1, o.train.epochs() / 2);
}
models::HeadOptions new_head_options(const FinetuneRunOptions& o) {
  return o.head_type.empty() ? models::HeadOptions() : models::HeadOptions::parse(o.head_type);
}
// The L-BFGS probe's penalty: a linear head needs one, a cosine head must not have one.
ProbeOptions resolved_probe(const FinetuneRunOptions& o, const models::HeadOptions& head) {
  return ProbeOptions()
      .l2(o.probe_l2 >= 0           ? o.probe_l2
          : head.kind() == "linear" ? 1e-3
                                    : 0.0)
      .max_iter(o.probe_iters > 0 ? o.probe_iters : 500)
      .batch_size(std::max<int64_t>(o.train.batch_size(), 256))
      .device(o.train.device());
}
}  // namespace

Json FinetuneRunOptions::settings() const {
  // Where the model goes is no part of the key: checked as if it had an --out.
  FinetuneRunOptions checked = *this;
  if (checked.out.empty() && !checked.lr_find) checked.out = "-";
  checked.validate();
  const Strategy s = Strategy::parse(strategy);
  const bool lbfgs = probe_solver == "lbfgs";
  // With --head keep the head's form is the parent's: named by the parent's id.
  const std::optional<models::HeadOptions> head_options =
      head == "new"       ? std::optional(new_head_options(*this))
      : head_type.empty() ? std::nullopt
                          : std::optional(models::HeadOptions::parse(head_type));
  Json lora = nullptr;
  if (s.kind == Kind::kLora) {
    lora = models::LoraOptions().rank(s.rank).alpha(lora_alpha).to_json();
    lora["merged"] = lora_merge;
  }
  Json probe = nullptr;
  if (lbfgs && head_options) {
    const auto p = resolved_probe(*this, *head_options);
    probe = {{"l2", p.l2()}, {"max_iter", p.max_iter()}};
  } else if (lbfgs) {
    probe = {{"l2", probe_l2}, {"max_iter", resolved_probe(*this, {}).max_iter()}};
  }
  Json j = train.to_json();
  j.update(
      {{"command", "finetune"},
       {"revision", results_revision()},
       {"data", data::DataSpec::parse(with_shots(data, shots, train.seed())).str()},
       {"val_data", val_data},
       {"val_fraction", val_data.empty() ? Json(val_fraction) : Json(nullptr)},
       {"strategy", s.str()},
       {"head", head},
       {"head_type", head_options ? Json(head_options->str()) : Json(nullptr)},
       {"bn_mode", freeze.bn_mode()},
       {"layer_decay", freeze.layer_decay()},
       {"head_lr_scale", freeze.head_lr_scale()},
       {"probe_solver", probe_solver},
       {"probe", probe},
       {"lp_epochs",
        s.kind == Kind::kLpFt && !lbfgs ? Json(resolved_lp_epochs(*this)) : Json(nullptr)},
       {"ft_lr_scale", s.kind == Kind::kLpFt ? Json(resolved_ft_lr_scale(*this)) : Json(nullptr)},
       {"l2_sp_alpha", s.kind == Kind::kL2Sp ? Json(s.alpha) : Json(nullptr)},
       {"lora", lora}});
  return j;
}

FinetuneRunResult run_finetune(const FinetuneRunOptions& o) {
  o.validate();
  const auto t0 = std::chrono::steady_clock::now();
  const Strategy strategy = Strategy::parse(o.strategy);
  const auto& t = o.train;
  const double ft_lr_scale = resolved_ft_lr_scale(o);
  auto say = [&](const std::string& m) {
    if (o.on_message) o.on_message(m);
  };

  // Output and checkpoint paths, checked before any work.
  const std::string ckpt_dir =
      o.dry_run || o.lr_find
          ? ""
          : prepare_checkpoint_dir(o.out, o.checkpoint_dir, o.resume, o.checkpoints, o.overwrite);
  if (!o.lr_find_json.empty()) check_output_path_file(o.lr_find_json);

  // Data: the k-shot subset of the SPEC, then an optional validation split.
  const std::string spec_text = with_shots(o.data, o.shots, t.seed());
  auto spec = data::DataSpec::parse(spec_text);
  data::Dataset all = data::load(spec);
  data::Dataset train_ds, val_ds;
  if (!o.val_data.empty()) {
    train_ds = all;
    val_ds = data::load(o.val_data);
  } else if (o.val_fraction > 0) {
    std::tie(train_ds, val_ds) = data::stratified_split(all, o.val_fraction, t.seed());
  } else {
    train_ds = all;
  }

  // The pre-trained model.
  io::ModelSource source = o.source;
  if (source.dir.empty() && source.input_shape.empty()) {
    source.input_shape = {train_ds.channels(), train_ds.height(), train_ds.width()};
  }
  if (!source.torchscript.empty() && source.num_classes <= 0) source.num_classes = all.num_classes();
  source.replace_head = o.head == "new";
  io::LoadedModel lm = io::load_model_source(source);
  auto model = lm.model;
  const auto& shape = lm.config.input_shape;
  XFER_CHECK(shape.size() == 3 && train_ds.channels() == shape[0] && train_ds.height() == shape[1] &&
                 train_ds.width() == shape[2],
             spec_text, ": images are ", train_ds.channels(), "x", train_ds.height(), "x",
             train_ds.width(), " but the model takes ", shape.size() == 3 ? shape[0] : 0, "x",
             shape.size() == 3 ? shape[1] : 0, "x", shape.size() == 3 ? shape[2] : 0);
  if (!o.val_data.empty()) data::check_same_task(val_ds, train_ds);
  seed_everything(t.seed());
  if (o.head == "new") {
    model->reset_classifier(all.num_classes());
    model->set_head_options(new_head_options(o));
  } else {
    io::require_classifier(lm, "--head keep");
    XFER_CHECK_USAGE(model->num_classes() == all.num_classes(), "--head keep: the model has ",
                     model->num_classes(), " classes but ", spec_text, " has ", all.num_classes(),
                     "; use --head new");
  }
  if (strategy.kind == Kind::kLora) {
    const auto lora_options = models::LoraOptions().rank(strategy.rank).alpha(o.lora_alpha);
    XFER_CHECK_USAGE(
        !models::lora_eligible(*model, lora_options).empty(), "--strategy ", strategy.str(), ": ",
        source_path(o.source), " (arch ", lm.config.arch,
        ") has no linear or convolution layer that can take adapters; use another strategy");
    models::add_lora(*model, lora_options);
  }

  // Phases: lp-ft is a linear probe then everything at a lower rate.
  FreezeOptions base = o.freeze;
  base.weight_decay(t.weight_decay());
  std::vector<Phase> phases;
  const bool lbfgs = o.probe_solver == "lbfgs";
  const Phase solve{"linear-probe", FreezeOptions(base).trainable_stages(0), 0, 0, true};
  switch (strategy.kind) {
    case Kind::kLinearProbe:
      phases.push_back(lbfgs ? solve
                             : Phase{"linear-probe", FreezeOptions(base).trainable_stages(0),
                                     t.epochs(), t.lr()});
      break;
    case Kind::kPartial:
      phases.push_back({"partial", FreezeOptions(base).trainable_stages(strategy.stages), t.epochs(), t.lr()});
      break;
    case Kind::kLpFt: {
      if (lbfgs) {
        phases.push_back(solve);
        phases.push_back({"fine-tune", FreezeOptions(base).trainable_stages(-1), t.epochs(),
                          t.lr() * ft_lr_scale});
        break;
      }
      const int64_t lp = resolved_lp_epochs(o);
      phases.push_back({"linear-probe", FreezeOptions(base).trainable_stages(0), lp, t.lr()});
      phases.push_back({"fine-tune", FreezeOptions(base).trainable_stages(-1), t.epochs() - lp,
                        t.lr() * ft_lr_scale});
      break;
    }
    case Kind::kLora:
      phases.push_back({"lora", FreezeOptions(base).adapters_only(true), t.epochs(), t.lr()});
      break;
    default:  // full, l2-sp
      phases.push_back({strategy.str(), FreezeOptions(base).trainable_stages(-1), t.epochs(), t.lr()});
  }

  FinetuneRunResult r;
  r.train_samples = train_ds.size();
  r.val_samples = val_ds.size();
  ProbeOptions probe = resolved_probe(o, model->head_options());
  if (lbfgs) probe.validate(model->head_options());  // before any work, --dry-run included
  // L2-SP replaces decay towards zero on the backbone (Li et al. 2018): the plan
  // printed, recorded and trained has none there.
  auto with_strategy = [&](FreezePlan plan) {
    if (strategy.kind == Kind::kL2Sp) {
      for (auto& g : plan.groups) {
        if (!g.head) g.weight_decay = 0;
      }
    }
    return plan;
  };
  for (size_t p = 0; p < phases.size(); ++p) {
    auto plan = with_strategy(plan_freeze(*model, phases[p].freeze));
    const std::string what = phases[p].lbfgs
                                 ? str_cat("one L-BFGS solve on frozen features, l2 ", probe.l2())
                                 : str_cat(phases[p].epochs, " epochs");
    r.plan_text += str_cat(phases.size() > 1 || phases[p].lbfgs
                               ? str_cat("phase ", p + 1, " (", phases[p].name, ", ", what, ")\n")
                               : "",
                           plan.text(phases[p].lbfgs ? 0.0 : phases[p].lr));
    if (strategy.kind == Kind::kL2Sp) {
      r.plan_text += str_cat("l2-sp: alpha/2 * ||w - w0||^2 on the backbone, alpha ",
                             strategy.alpha, " (in place of its weight decay)\n");
    }
    r.plans.push_back(std::move(plan));
  }
  // L2-SP pulls the backbone towards the pre-trained weights w0.
  std::vector<torch::Tensor> w0, wcur;
  if (strategy.kind == Kind::kL2Sp) {
    const auto stages = model->param_stages();
    for (const auto& item : model->named_parameters(true)) {
      // The last stage is the head (a TorchScript classifier's own last layer with --head keep).
      if (models::ClassifierImpl::stage_of(stages, item.key()) + 1 == int64_t(stages.size()))
        continue;
      wcur.push_back(item.value());
      w0.push_back(item.value().detach().clone());
    }
    XFER_CHECK_USAGE(!wcur.empty(), "--strategy ", strategy.str(),
                     ": the model has no parameters "
                     "outside its head to hold near the pre-trained weights; use --strategy full");
  }
  if (o.dry_run) {
    r.trainable_parameters = r.plans.back().trainable;
    return r;
  }

  // The L-BFGS phase fits the head; a mini-batch phase gets a trainer over its freeze plan.
  auto run_solve = [&](size_t p) {
    if (phases.size() > 1)
      say(str_cat("phase ", p + 1, "/", phases.size(), ": ", phases[p].name, " (L-BFGS)"));
    r.phases.push_back(fit_probe(*model, train_ds, val_ds, probe));
    if (o.on_epoch) o.on_epoch(r.phases.back().history.back());
  };
  auto make_trainer = [&](const Phase& ph, const FreezePlan& plan) {
    std::vector<OptimGroup> groups;
    for (const auto& g : plan.groups) {
      if (g.tensors.empty()) continue;
      groups.push_back({g.name, g.tensors, g.lr_scale, g.weight_decay});
    }
    TrainOptions to = t;
    to.epochs(ph.epochs).lr(ph.lr).warmup_epochs(std::min(t.warmup_epochs(), double(ph.epochs)));
    Trainer trainer(to);
    trainer.groups(groups);
    if (strategy.kind == Kind::kL2Sp) {
      const double alpha = strategy.alpha;
      trainer.penalty([&w0, &wcur, alpha] {
        torch::Tensor sum = torch::zeros({}, wcur.front().options());
        for (size_t i = 0; i < wcur.size(); ++i)
          sum = sum + (wcur[i] - w0[i].to(wcur[i].device())).pow(2).sum();
        return sum * (alpha / 2);
      });
    }
    return trainer;
  };

  if (o.lr_find) {
    // As the run would: the solve first (lp-ft with lbfgs), then the test on the next phase.
    for (size_t p = 0; p < phases.size(); ++p) {
      auto plan = with_strategy(apply_freeze(*model, phases[p].freeze));
      if (phases[p].lbfgs) {
        run_solve(p);
        continue;
      }
      r.lr_find = make_trainer(phases[p], plan).lr_find(*model, train_ds, o.lr_find_options);
      r.lr_find_phase = phases[p].name;
      r.lr_find_scale = phases[p].lr / t.lr();
      if (!o.lr_find_json.empty()) {
        Json j = r.lr_find->to_json();
        j["phase"] = r.lr_find_phase;
        j["lr_scale"] = r.lr_find_scale;  // the --lr to pass: suggested_lr / lr_scale
        write_file_atomic(o.lr_find_json, j.dump(1) + "\n");
      }
      break;
    }
    r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  // The recipe: everything that determines the weights (what --resume compares).
  Json lora = nullptr;
  if (strategy.kind == Kind::kLora) {
    lora = models::LoraOptions().rank(strategy.rank).alpha(o.lora_alpha).to_json();
    lora["merged"] = o.lora_merge;
  }
  Json recipe = t.to_json();
  recipe.update(
      {{"command", "finetune"},
       {"revision", results_revision()},
       {"strategy", strategy.str()},
       {"shots", spec.shots ? Json(*spec.shots) : Json(nullptr)},
       {"head", o.head},
       {"head_type", model->head_options().str()},
       {"bn_mode", o.freeze.bn_mode()},
       {"layer_decay", o.freeze.layer_decay()},
       {"head_lr_scale", o.freeze.head_lr_scale()},
       {"lp_epochs", strategy.kind == Kind::kLpFt ? Json(phases[0].epochs) : Json(nullptr)},
       {"ft_lr_scale", strategy.kind == Kind::kLpFt ? Json(ft_lr_scale) : Json(nullptr)},
       {"l2_sp_alpha", strategy.kind == Kind::kL2Sp ? Json(strategy.alpha) : Json(nullptr)},
       {"lora", lora},
       {"parent_id", lm.card.id},
       // What the file's weights are read as (--arch, --arch-options, --mean/--std,
       // --torchscript-mode): the weights' hash alone does not pin them.
       {"parent_config",
        {{"arch", lm.config.arch},
         {"arch_options", lm.config.arch_options},
         {"input_shape", lm.config.input_shape},
         {"mean", lm.config.mean},
         {"std", lm.config.std}}},
       {"data_sha256", all.content_hash()},
       {"val_spec", o.val_data.empty() ? Json(nullptr) : Json(o.val_data)},
       {"val_fraction", o.val_fraction}});
  // Only when used, so the recipes (and checkpoints) of mini-batch runs keep their form.
  if (lbfgs)
    recipe["probe"] = {{"solver", "lbfgs"}, {"l2", probe.l2()}, {"max_iter", probe.max_iter()}};

  // Resume: same recipe, then skip the phases already finished.
  size_t first_phase = 0;
  std::optional<io::Checkpoint> ckpt = open_resume(o.resume, recipe, "finetune");
  if (ckpt) {
    const Json& ctx = ckpt->state["context"];
    try {
      first_phase = ctx.at("phase").get<size_t>();
      XFER_CHECK(first_phase < phases.size(), io::checkpoint_file(o.resume), ": bad phase");
      for (const auto& pr : ctx.value("finished", Json::array()))
        r.phases.push_back(result_from(pr));
    } catch (const nlohmann::json::exception& e) {
      throw Error(
          str_cat(io::checkpoint_file(o.resume), ": malformed checkpoint state (", e.what(), ")"));
    }
    r.resumed = true;
    // The card's recipe also names the source path, which the checkpoint's does not.
    if (auto done = finished_output(o.out, recipe, o.resume, o.keep_checkpoint, {"source"})) {
      r.card = *done;
      r.already_done = true;
      return r;
    }
    say(str_cat("resuming from ", io::checkpoint_file(o.resume), " (phase ", first_phase + 1, ", epoch ",
                ckpt->state.value("epoch", 0), ", step ", ckpt->state.value("step", 0), ")"));
    if (auto note = resume_thread_note(*ckpt); !note.empty()) say(note);
  }

  for (size_t p = first_phase; p < phases.size(); ++p) {
    const auto& ph = phases[p];
    auto plan = with_strategy(apply_freeze(*model, ph.freeze));
    if (ph.lbfgs) {
      // Seconds, deterministic: no checkpoint; a run killed here starts it again.
      run_solve(p);
      continue;
    }
    Trainer trainer = make_trainer(ph, plan);
    if (o.on_epoch) trainer.on_epoch(o.on_epoch);
    if (o.on_step) trainer.on_step(o.on_step);
    Json finished = Json::array();
    for (const auto& pr : r.phases) finished.push_back(result_json(pr));
    trainer.checkpoint({o.checkpoints ? ckpt_dir : "", o.checkpoint_every,
                        {{"recipe", recipe}, {"phase", p}, {"finished", finished}}});
    if (ckpt && p == first_phase) trainer.resume(*ckpt);
    if (phases.size() > 1) say(str_cat("phase ", p + 1, "/", phases.size(), ": ", ph.name));
    r.phases.push_back(trainer.fit(*model, train_ds, val_ds));
  }
  model->to(torch::kCPU);
  model->eval();

  io::ModelConfig config = lm.config;
  config.num_classes = model->num_classes();
  config.class_names = all.class_names;
  config.task = "classifier";
  config.head = model->head_options();
  if (strategy.kind == Kind::kLora) {
    if (o.lora_merge) {
      models::merge_lora(*model);
    } else {
      config.lora = model->lora()->options();
      config.lora_targets = model->lora()->targets();
    }
  }

  std::vector<std::pair<std::string, std::string>> extra;
  if (lm.config.arch == "torchscript") {
    // The scripted code travels with the model; its tensors are in model.safetensors.
    std::string module_path = o.source.torchscript;
    if (module_path.empty()) {
      module_path = (fs::path(o.source.dir) / lm.config.arch_options.at("file").get<std::string>()).string();
    }
    std::string bytes = read_file(module_path);
    config.arch_options = {{"mode", !o.source.torchscript.empty() ? o.source.torchscript_mode
                                                                   : lm.config.arch_options.at("mode").get<std::string>()},
                           {"file", "module.pt"},
                           {"sha256", sha256_hex(bytes)}};
    extra.emplace_back("module.pt", std::move(bytes));
  }
  io::ModelCard card;
  card.parent = io::ModelCard::Parent{lm.card.id, source_path(o.source)};
  card.recipe = recipe;
  card.recipe["source"] = {{"path", source_path(o.source)},
                           {"kind", !o.source.dir.empty()       ? "model-dir"
                                    : !o.source.weights.empty() ? "safetensors"
                                                                : "torchscript"},
                           {"arch", lm.config.arch}};
  card.data = {{"spec", spec_text},
               {"sha256", all.content_hash()},
               {"samples", all.size()},
               {"train_samples", train_ds.size()},
               {"val_spec", o.val_data.empty() ? Json(nullptr) : Json(o.val_data)},
               {"val_samples", val_ds.size()}};
  Json phase_json = Json::array();
  double train_wall = 0, best_val = -1;
  int64_t best_epoch = -1;
  for (const auto& pr : r.phases) {
    phase_json.push_back(result_json(pr));
    train_wall += pr.wall_seconds;
  }
  best_val = r.phases.back().best_val_accuracy;
  // Counted over the whole run (lp-ft: after the probe's epochs; a full-batch
  // solve has none), as `--epochs` counts them; each phase keeps its own.
  int64_t epochs_before = 0;
  for (size_t i = 0; i + 1 < r.phases.size(); ++i) {
    if (r.phases[i].solver.is_null())
      epochs_before += static_cast<int64_t>(r.phases[i].history.size());
  }
  if (r.phases.back().best_epoch >= 0) best_epoch = epochs_before + r.phases.back().best_epoch;
  r.trainable_parameters = r.phases.back().trainable_parameters;
  card.metrics = {{"val_accuracy", best_val >= 0 ? Json(best_val) : Json(nullptr)},
                  {"best_epoch", best_epoch},
                  {"wall_seconds", train_wall},
                  {"trainable_parameters", r.trainable_parameters},
                  {"parameters", models::count_parameters(*model)},
                  {"threads", torch::get_num_threads()},
                  {"world_size", r.phases.back().world_size},
                  {"rank_max_param_diff", r.phases.back().rank_max_param_diff},
                  {"phases", phase_json},
                  {"plan", r.plans.back().to_json(phases.back().lr)}};
  // Plain tensors again (a frozen parameter saves the same either way).
  for (auto& p : model->parameters()) p.set_requires_grad(true);
  r.card = write_output(o.out, *model, config, card, o.overwrite, o.checkpoints ? ckpt_dir : "",
                        o.keep_checkpoint, extra);
  r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace xfer::train
