// The xfer command line: parses flags into the library's Options structs and
// calls the library. Only this file prints errors and chooses exit codes.

#include <cmath>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

#include "xfer/xfer.h"

namespace {

constexpr const char* kDataSpecHelp =
    "Data SPEC: fashion-mnist[:train|:test][:classes=5-9][:exclude=K@SEEDS][:shots=K][:seed=S] | "
    "idx:IMAGES.gz,LABELS.gz[:...] | folder:PATH[:size=N][:channels=1|3][:...]";

struct Globals {
  int threads = 0;
  bool quiet = false;
  double dist_timeout = 300;
};

// This process's rank in a distributed run (0 otherwise): ranks > 0 leave
// usage errors, which every rank hits alike, to rank 0.
int64_t g_rank = 0;

// Leaves the process group however run() ends.
struct DistSession {
  ~DistSession() { xfer::dist::shutdown(); }
};

// An integer flag that, given, must be >= 1 (0 inside stands for "not given").
const CLI::Validator at_least_one(
    [](std::string& v) -> std::string {
      try {
        size_t used = 0;
        if (std::stoll(v, &used) >= 1 && used == v.size()) return {};
      } catch (const std::exception&) {
      }
      return "must be an integer >= 1, got " + v;
    },
    "K>=1");

// A number flag that, given, must be finite and >= 0 (-1 inside stands for "not given").
const CLI::Validator non_negative(
    [](std::string& v) -> std::string {
      try {
        size_t used = 0;
        const double d = std::stod(v, &used);
        if (std::isfinite(d) && d >= 0 && used == v.size()) return {};
      } catch (const std::exception&) {
      }
      return "must be a number >= 0, got " + v;
    },
    "X>=0");

// --lr-find and its settings, on train and finetune; `range` is parsed by apply_lr_find.
void add_lr_find_options(CLI::App* cmd, bool& on, xfer::train::LrFindOptions& o, std::string& range,
                         std::string& json) {
  cmd->add_flag(
      "--lr-find", on,
      "Learning-rate range test: train with the rate growing from 1e-7 to 10 step by step, print "
      "the loss curve and a suggested --lr; write no model");
  cmd->add_option_function<int64_t>(
      "--lr-find-steps", [&o](int64_t v) { o.steps(v); }, "lr-find: steps at most (default 100)");
  cmd->add_option("--lr-find-range", range, "lr-find: START,END rates (default 1e-7,10)");
  cmd->add_option("--lr-find-json", json, "lr-find: also write the curve and the readings as JSON");
}

void apply_lr_find(CLI::App* cmd, bool on, const std::string& range,
                   xfer::train::LrFindOptions& o) {
  XFER_CHECK_USAGE(on || (cmd->count("--lr-find-steps") == 0 && range.empty()),
                   "--lr-find-steps and --lr-find-range need --lr-find");
  if (range.empty()) return;
  auto v = xfer::parse_fraction_list(range, "--lr-find-range");
  XFER_CHECK_USAGE(v.size() == 2, "--lr-find-range: expected START,END, got '", range, "'");
  o.start_lr(v[0]).end_lr(v[1]);
}

void add_train_options(CLI::App* cmd, xfer::train::TrainOptions& t, bool& hflip, int64_t& crop,
                       int64_t& epochs, int64_t& batch, uint64_t& seed) {
  cmd->add_option("--epochs", epochs, "Training epochs")->capture_default_str();
  cmd->add_option("--batch-size", batch, "Batch size")->capture_default_str();
  cmd->add_option_function<std::string>("--optimizer", [&t](const std::string& v) { t.optimizer(v); },
                                        "adamw (default) or sgd");
  cmd->add_option_function<double>("--lr", [&t](double v) { t.lr(v); },
                                   "Peak learning rate (default 1e-3 adamw; pass ~0.05 for sgd)");
  cmd->add_option_function<double>("--weight-decay", [&t](double v) { t.weight_decay(v); },
                                   "Weight decay on conv/linear weights (default 0.05)");
  cmd->add_option_function<double>("--momentum", [&t](double v) { t.momentum(v); },
                                   "SGD momentum (default 0.9, Nesterov)");
  cmd->add_option_function<std::string>("--schedule", [&t](const std::string& v) { t.schedule(v); },
                                        "cosine (default) or constant, after a linear warmup");
  cmd->add_option_function<double>("--warmup-epochs", [&t](double v) { t.warmup_epochs(v); },
                                   "Linear warmup length in epochs (default 0.5)");
  cmd->add_option_function<double>("--label-smoothing", [&t](double v) { t.label_smoothing(v); },
                                   "Label smoothing (default 0)");
  cmd->add_option("--crop-padding", crop, "Augment: random crop after padding by N pixels (0 = off)");
  cmd->add_flag("--hflip", hflip, "Augment: random horizontal flips");
  cmd->add_option("--seed", seed, "Seed for initialisation, sampling and augmentation")
      ->capture_default_str();
  cmd->add_option_function<std::string>("--device", [&t](const std::string& v) { t.device(v); },
                                        "cpu (default), cuda, cuda:N or auto");
  cmd->add_option_function<std::string>("--adv-train", [&t](const std::string& v) { t.adv_train(v); },
                                        "Adversarial training on PGD examples: pgd:EPS[:STEPS] (e.g. pgd:0.1)");
}

void add_model_source_options(CLI::App* cmd, xfer::io::ModelSource& src) {
  cmd->add_option("--model", src.dir, "Model directory");
  cmd->add_option("--weights", src.weights, "Safetensors state dict (with --arch)");
  cmd->add_option("--arch", src.arch, "Architecture of --weights");
  cmd->add_option("--arch-options", src.arch_options, "Architecture options (JSON)");
  cmd->add_option(
      "--weights-sha256", src.weights_sha256,
      "Refuse the model (--model's weights, --weights, --torchscript) unless its sha256 is this");
  cmd->add_option("--torchscript", src.torchscript, "TorchScript archive (.pt)");
  cmd->add_option("--torchscript-mode", src.torchscript_mode,
                  "classifier (output = logits, default) or backbone (new head)");
  cmd->add_option("--num-classes", src.num_classes, "Classes (default: from the weights' head)");
  cmd->add_option("--mean", src.mean, "Normalisation mean per channel (weights/torchscript)")
      ->delimiter(',');
  cmd->add_option("--std", src.std, "Normalisation std per channel (weights/torchscript)")
      ->delimiter(',');
}

// Attack parameters as text, typed later by attack::overrides_from_text.
void add_attack_params(CLI::App* cmd, std::map<std::string, std::string>& values,
                       const std::set<std::string>& skip) {
  static const std::vector<std::pair<std::string, std::string>> attack_params = {
      {"eps", "Budget (0.1 or 8/255; default 0.1)"},
      {"alpha", "Step size (default alpha-factor * eps / steps)"},
      {"alpha-factor", "Default step as a multiple of eps/steps (1; pgd 2.5)"},
      {"steps", "Iterations (default 10)"},
      {"norm", "linf (default) or l2"},
      {"momentum", "Momentum decay mu"},
      {"variance-samples", "VMI/VNI neighbours N"},
      {"variance-beta", "VMI/VNI neighbourhood radius, x eps"},
      {"di-prob", "DI probability"},
      {"di-ratio", "DI resize ratio"},
      {"ti-kernel", "TI Gaussian kernel size (odd)"},
      {"si-copies", "SI scale copies"},
      {"admix-copies", "Admix mixed images"},
      {"admix-eta", "Admix strength"},
      {"target", "none | label:K | random | least-likely"},
      {"ensemble", "logits (default) or loss"},
      {"seed", "Seed of the random draws"}};
  for (const auto& [name, help] : attack_params) {
    if (skip.count(name)) continue;
    cmd->add_option_function<std::string>(
        "--" + name, [&values, n = name](const std::string& v) { values[n] = v; }, help);
  }
}

int run(int argc, char** argv) {
  CLI::App app{"xfer: transfer learning and adversarial-transferability auditing on LibTorch.\n" +
               std::string(kDataSpecHelp)};
  app.name("xfer");
  app.require_subcommand(1);
  app.set_version_flag("--version",
                       "xfer " + xfer::version() + " (LibTorch " + xfer::torch_version() + ")");
  Globals g;
  int64_t image_size = 0;
  app.add_option("--threads", g.threads, "Intra-op threads (default: one per core)");
  app.add_option("--image-size", image_size,
                 "Resize folder: images to N x N (same as :size=N in the SPEC)");
  app.add_flag("--quiet,-q", g.quiet, "No progress bars or per-epoch lines");
  app.add_option("--dist-timeout", g.dist_timeout,
                 "Distributed runs: seconds a rank waits for the others before failing")
      ->capture_default_str();
  app.fallthrough();

  // xfer data info SPEC
  auto* data_cmd = app.add_subcommand("data", "Inspect data");
  data_cmd->require_subcommand(1);
  auto* info_cmd = data_cmd->add_subcommand("info", "Counts per class, shape, value range of a SPEC");
  std::string info_spec;
  bool info_json = false;
  info_cmd->add_option("spec", info_spec, "Data SPEC")->required();
  info_cmd->add_flag("--json", info_json, "Print JSON instead of text");

  // xfer train
  auto* train_cmd = app.add_subcommand("train", "Train a model from scratch and write a model directory");
  xfer::train::TrainRunOptions tr;
  bool hflip = false, force = false;
  int64_t crop = 0, epochs = 10, batch = 128;
  uint64_t seed = 0;
  train_cmd->add_option("--data", tr.data, "Training data SPEC")->required();
  train_cmd->add_option("--val-data", tr.val_data, "Validation SPEC (default: a stratified split)");
  train_cmd->add_option(
      "--val-fraction", tr.val_fraction,
      "Fraction held out for validation (default 0.1; 0 with --shots or shots=K, as "
      "finetune, so a scratch baseline trains on the same images)");
  train_cmd->add_option("--arch", tr.arch, "Architecture: " + [] {
    std::string s;
    for (const auto& n : xfer::models::model_names()) s += (s.empty() ? "" : ", ") + n;
    return s;
  }())->required();
  train_cmd->add_option("--arch-options", tr.arch_options, "Architecture options as a JSON object");
  train_cmd->add_option("--head-type", tr.head_type,
                        "linear, or cosine[:SCALE] (normalised features and class weights, logit scale "
                        "default 10)")
      ->capture_default_str();
  int64_t train_shots = 0;
  // 0 inside means "not given"; given, it must be >= 1 (never silently all the data).
  train_cmd->add_option("--shots", train_shots,
                        "K labelled samples per class (seeded by --seed unless the SPEC names a seed)")
      ->check(at_least_one);
  add_train_options(train_cmd, tr.train, hflip, crop, epochs, batch, seed);
  train_cmd->add_option_function<std::string>(
      "--objective", [&tr](const std::string& v) { tr.train.objective(v); },
      "supervised (default) or simclr: self-supervised contrastive pre-training that ignores the\n"
      "labels and writes an encoder (a parent for xfer finetune, a surrogate for feature attacks)");
  train_cmd->add_option_function<double>("--temperature", [&tr](double v) { tr.train.temperature(v); },
                                         "simclr: NT-Xent temperature (default 0.2)");
  train_cmd->add_option("--proj-dim", tr.proj_dim, "simclr: width of the projection head")->capture_default_str();
  train_cmd->add_option_function<double>(
      "--view-min-scale",
      [&tr](double v) {
        auto views = tr.train.views();
        views.min_scale = v;
        tr.train.views(views);
      },
      "simclr: smallest area fraction of a view's random crop (default 0.3)");
  train_cmd->add_option("--out", tr.out,
                        "Output model directory (must not exist; not with --lr-find)");
  std::string tr_lr_range;
  add_lr_find_options(train_cmd, tr.lr_find, tr.lr_find_options, tr_lr_range, tr.lr_find_json);
  train_cmd->add_flag("--force", force, "Replace --out (and a stale checkpoint) if they exist");
  bool train_no_checkpoint = false;
  train_cmd->add_option("--checkpoint-dir", tr.checkpoint_dir, "Checkpoint directory (default OUT.ckpt)");
  train_cmd->add_option("--checkpoint-every", tr.checkpoint_every,
                        "Also checkpoint every N optimizer steps (default: each epoch only)");
  train_cmd->add_option("--resume", tr.resume, "Continue an interrupted run from this checkpoint directory");
  train_cmd->add_flag("--keep-checkpoint", tr.keep_checkpoint, "Keep the checkpoint directory after success");
  train_cmd->add_flag("--no-checkpoint", train_no_checkpoint, "Write no checkpoints");

  // xfer finetune
  auto* ft_cmd = app.add_subcommand(
      "finetune",
      "Fine-tune a pre-trained model (--from DIR, --weights FILE --arch NAME, or --torchscript FILE.pt)\n"
      "on --data with --strategy linear-probe | full | partial:N | lp-ft | lora:R | l2-sp:ALPHA.\n"
      "Checkpoints go to OUT.ckpt (each epoch, and every --checkpoint-every steps); after a crash,\n"
      "the same command with --resume OUT.ckpt continues to the same final weights.");
  xfer::train::FinetuneRunOptions ft;
  ft.source.torchscript_mode = "backbone";
  bool ft_hflip = false, ft_force = false, ft_lora_separate = false;
  int64_t ft_crop = 0, ft_epochs = 10, ft_batch = 32;
  uint64_t ft_seed = 0;
  ft_cmd->add_option("--from", ft.source.dir, "Pre-trained model directory");
  ft_cmd->add_option("--weights", ft.source.weights, "Pre-trained safetensors state dict (with --arch)");
  ft_cmd->add_option("--arch", ft.source.arch, "Architecture of --weights");
  ft_cmd->add_option("--arch-options", ft.source.arch_options, "Architecture options (JSON)");
  ft_cmd->add_option(
      "--weights-sha256", ft.source.weights_sha256,
      "Refuse the parent (--from's weights, --weights, --torchscript) unless its sha256 is this");
  ft_cmd->add_option("--torchscript", ft.source.torchscript, "Pre-trained TorchScript archive (.pt)");
  ft_cmd->add_option("--torchscript-mode", ft.source.torchscript_mode,
                     "backbone (default: module output = features, new head) or classifier");
  ft_cmd->add_option("--mean", ft.source.mean, "Normalisation mean per channel (weights/torchscript)")
      ->delimiter(',');
  ft_cmd->add_option("--std", ft.source.std, "Normalisation std per channel (weights/torchscript)")
      ->delimiter(',');
  ft_cmd->add_option("--data", ft.data, "Target data SPEC")->required();
  ft_cmd->add_option("--shots", ft.shots,
                     "K labelled samples per class (seeded by --seed unless the SPEC names a seed)")
      ->check(at_least_one);
  ft_cmd->add_option("--val-data", ft.val_data, "Validation SPEC (default: none, last epoch kept)");
  ft_cmd->add_option("--val-fraction", ft.val_fraction, "Fraction of --data held out for validation")
      ->capture_default_str();
  ft_cmd->add_option("--strategy", ft.strategy,
                     "linear-probe | full | partial:N | lp-ft | lora:R | l2-sp:ALPHA")
      ->capture_default_str();
  ft_cmd->add_option("--head-type", ft.head_type,
                     "The new head: linear (default) or cosine[:SCALE] (normalised features and class "
                     "weights, logit scale default 10)");
  ft_cmd->add_option("--head", ft.head, "new (fresh head for the data's classes) or keep")
      ->capture_default_str();
  ft_cmd->add_option_function<std::string>(
      "--bn-mode", [&ft](const std::string& v) { ft.freeze.bn_mode(v); },
      "BatchNorm: auto (frozen layers stay in eval mode, default), eval (all), train (none)");
  ft_cmd->add_option_function<double>(
      "--layer-decay", [&ft](double v) { ft.freeze.layer_decay(v); },
      "Layer-wise lr decay: stage i of n gets lr * D^(n-i) (default 1)");
  ft_cmd->add_option_function<double>("--head-lr-scale", [&ft](double v) { ft.freeze.head_lr_scale(v); },
                                      "Multiplies the head's learning rate (default 1)");
  ft_cmd
      ->add_option(
          "--probe-solver", ft.probe_solver,
          "linear-probe / lp-ft's probe: minibatch (epochs of --lr, with augmentation) or lbfgs "
          "(embed once, one full-batch logistic-regression solve)")
      ->capture_default_str();
  ft_cmd->add_option(
      "--probe-l2", ft.probe_l2,
      "lbfgs: penalty L2 * ||W||^2 on the head weight (default 1e-3 for a linear head, 0 "
      "for cosine)")
      ->check(non_negative);
  ft_cmd->add_option("--probe-iters", ft.probe_iters, "lbfgs: iterations at most (default 500)")
      ->check(at_least_one);
  ft_cmd->add_option("--lp-epochs", ft.lp_epochs, "lp-ft: linear-probe epochs (default: half)");
  ft_cmd->add_option("--ft-lr-scale", ft.ft_lr_scale,
                     "lp-ft: fine-tuning lr relative to --lr (default: 0.1)");
  ft_cmd->add_option("--lora-alpha", ft.lora_alpha, "lora: scaling alpha (default: the rank)");
  ft_cmd->add_flag("--lora-separate", ft_lora_separate,
                   "lora: save the adapters beside the base weights instead of merging them");
  add_train_options(ft_cmd, ft.train, ft_hflip, ft_crop, ft_epochs, ft_batch, ft_seed);
  ft_cmd->add_option("--checkpoint-dir", ft.checkpoint_dir, "Checkpoint directory (default OUT.ckpt)");
  ft_cmd->add_option("--checkpoint-every", ft.checkpoint_every,
                     "Also checkpoint every N optimizer steps (default: each epoch only)");
  ft_cmd->add_option("--resume", ft.resume, "Continue an interrupted run from this checkpoint directory");
  ft_cmd->add_flag("--keep-checkpoint", ft.keep_checkpoint, "Keep the checkpoint directory after success");
  bool ft_no_checkpoint = false;
  ft_cmd->add_flag("--no-checkpoint", ft_no_checkpoint, "Write no checkpoints (short runs, sweeps)");
  ft_cmd->add_flag("--dry-run", ft.dry_run,
                   "Print the parameter groups (trainable counts, lr, weight decay, BN mode); train nothing");
  std::string ft_lr_range;
  add_lr_find_options(ft_cmd, ft.lr_find, ft.lr_find_options, ft_lr_range, ft.lr_find_json);
  ft_cmd->add_option("--out", ft.out, "Output model directory (must not exist)");
  ft_cmd->add_flag("--force", ft_force, "Replace --out (and a stale checkpoint) if they exist");

  // xfer attack
  auto* attack_cmd = app.add_subcommand(
      "attack",
      "Craft adversarial examples on surrogate model(s) and write an adversarial set directory\n"
      "(adv.safetensors, attack.json, preview.png). --attack NAME composes with '+', e.g.\n"
      "mi-fgsm+di+ti; `xfer attack --list` shows every attack and parameter.");
  xfer::attack::AttackSetOptions at;
  std::vector<std::string> at_dirs, at_ts;
  std::string at_mode = "classifier";
  std::vector<double> at_mean, at_std;
  bool at_list = false, at_force = false;
  std::map<std::string, std::string> at_values;  // option -> text, for the ones given
  attack_cmd->add_flag("--list", at_list, "List the attacks, what they set, and every parameter");
  attack_cmd->add_option("--surrogate", at_dirs, "Surrogate model directories (comma list = ensemble)")
      ->delimiter(',');
  attack_cmd->add_option("--torchscript", at_ts, "Surrogate TorchScript files (comma list)")->delimiter(',');
  attack_cmd->add_option("--torchscript-mode", at_mode, "classifier (default) or backbone (feature attack)");
  attack_cmd->add_option("--mean", at_mean, "TorchScript surrogates: normalisation mean")->delimiter(',');
  attack_cmd->add_option("--std", at_std, "TorchScript surrogates: normalisation std")->delimiter(',');
  attack_cmd->add_option("--data", at.data, "Data SPEC to attack");
  attack_cmd->add_option("--attack", at.attack, "Attack name, '+'-composed (default pgd)");
  add_attack_params(attack_cmd, at_values, {});
  bool at_random_start = false, at_nesterov = false;
  // Negatable: pgd starts at a random point by default, ni-fgsm looks ahead.
  auto* at_random_start_opt = attack_cmd->add_flag(
      "--random-start,!--no-random-start", at_random_start,
      "Start from a random point of the ball (pgd's default; --no-random-start: "
      "from the clean image)");
  auto* at_nesterov_opt =
      attack_cmd->add_flag("--nesterov,!--no-nesterov", at_nesterov,
                           "Gradient at the Nesterov look-ahead point (ni-fgsm's)");
  attack_cmd->add_option("--batch-size", at.batch_size, "Batch size")->capture_default_str();
  attack_cmd->add_option("--limit", at.limit, "Attack only N samples, taken from the classes in turn");
  attack_cmd->add_option("--device", at.device, "cpu (default), cuda, cuda:N or auto");
  attack_cmd->add_option("--out", at.out, "Output adversarial set directory");
  attack_cmd->add_flag("--force", at_force, "Replace --out if it exists");

  // xfer transfer
  auto* transfer_cmd = app.add_subcommand(
      "transfer",
      "Transferability matrix: adversarial examples crafted on each source (A+B = ensemble) for each\n"
      "attack and budget, evaluated on every target. Writes matrix.json, matrix.csv, heatmap.svg;\n"
      "adversarial sets are cached by content under OUT/adv (or --cache), so a rerun crafts nothing.");
  xfer::eval::TransferOptions tf;
  std::vector<std::string> tf_sources, tf_targets;
  std::string tf_attacks = "pgd", tf_eps = "0.1";
  bool tf_no_predictors = false;
  std::map<std::string, std::string> tf_values;
  transfer_cmd->add_option("--sources", tf_sources, "Source models: directories or .pt files; A+B = ensemble")
      ->delimiter(',')
      ->required();
  transfer_cmd->add_option("--targets", tf_targets, "Target models: directories or .pt files")
      ->delimiter(',')
      ->required();
  transfer_cmd->add_option("--data", tf.data, "Data SPEC")->required();
  transfer_cmd->add_option("--attack", tf_attacks, "Attacks, comma list ('+' composes; default pgd)");
  transfer_cmd->add_option("--eps", tf_eps, "Budgets, comma list (0.1 or 8/255; default 0.1)");
  add_attack_params(transfer_cmd, tf_values, {"eps", "alpha"});
  transfer_cmd->add_option("--limit", tf.limit, "Use only N samples, taken from the classes in turn");
  transfer_cmd->add_option("--batch-size", tf.batch_size, "Batch size")->capture_default_str();
  transfer_cmd->add_option("--device", tf.device, "cpu (default), cuda, cuda:N or auto");
  transfer_cmd->add_flag("--no-predictors", tf_no_predictors, "Skip gradient alignment, CKA and agreement");
  transfer_cmd->add_option("--predictor-samples", tf.predictor_samples, "Clean samples for the predictors")
      ->capture_default_str();
  transfer_cmd->add_option("--cache", tf.cache, "Adversarial set cache directory (default OUT/adv)");
  transfer_cmd->add_option("--out", tf.out, "Output directory (new, or an earlier transfer output)")->required();

  // xfer audit
  auto* audit_cmd = app.add_subcommand(
      "audit",
      "Lineage-aware risk report: how often do attacks crafted on the proxies an attacker may hold\n"
      "(ancestors, siblings, unrelated models) fool --target? Reads card.json lineage, runs the\n"
      "attack suite (and the feature attack on ancestors), ranks proxies with 95% CIs.\n"
      "Writes audit.json and summary.md. A TorchScript target is audited as a black box.");
  xfer::eval::AuditOptions au;
  std::string au_target, au_attacks = "fgsm,pgd,mi-fgsm+di+ti", au_eps = "0.1";
  std::vector<std::string> au_proxies;
  bool au_no_feature = false, au_no_reference = false;
  std::map<std::string, std::string> au_values;
  audit_cmd->add_option("--target", au_target, "The audited model: a directory or a .pt file")->required();
  audit_cmd->add_option("--proxies", au_proxies, "Models an attacker may hold (comma list)")
      ->delimiter(',')
      ->required();
  audit_cmd->add_option("--data", au.data, "Data SPEC")->required();
  audit_cmd->add_option("--attack", au_attacks, "Attack suite, comma list (default fgsm,pgd,mi-fgsm+di+ti)");
  audit_cmd->add_option("--eps", au_eps, "Budgets, comma list; the first is the headline (default 0.1)");
  add_attack_params(audit_cmd, au_values, {"eps", "alpha", "target"});  // --target is the model
  audit_cmd->add_flag("--no-feature", au_no_feature, "Skip the feature attack on ancestors (proxies with other classes keep it)");
  audit_cmd->add_flag("--no-reference", au_no_reference, "Skip white-box PGD on the target");
  audit_cmd->add_option("--limit", au.limit, "Use only N samples, taken from the classes in turn");
  audit_cmd->add_option("--batch-size", au.batch_size, "Batch size")->capture_default_str();
  audit_cmd->add_option("--device", au.device, "cpu (default), cuda, cuda:N or auto");
  audit_cmd->add_option("--predictor-samples", au.predictor_samples, "Clean samples for the predictors")
      ->capture_default_str();
  audit_cmd->add_option("--cache", au.cache, "Adversarial set cache directory (default OUT/adv)");
  audit_cmd->add_option("--out", au.out, "Output directory (new, or an earlier audit output)")->required();

  // xfer study
  auto* study_cmd = app.add_subcommand(
      "study",
      "The default study of DESIGN.md on Fashion-MNIST: public bases, fine-tuned and scratch victims,\n"
      "data-efficiency curves, attackers A/B/C, lineage effect, predictors, hardening. Models and\n"
      "adversarial sets are cached by content in --out: a rerun or a resumed run redoes nothing.\n"
      "Writes config.json, results.json, CSV tables and transfer/.");
  std::string st_preset = "default", st_config, st_out;
  study_cmd->add_option("--preset", st_preset, "quick | default | full")->capture_default_str();
  study_cmd->add_option("--config", st_config, "Study config JSON (the config.json a study writes)");
  study_cmd->add_option("--out", st_out, "Output directory (new, or an earlier study to resume)")->required();

  // xfer report
  auto* report_cmd = app.add_subcommand(
      "report", "Re-render DIR/report.html from a study's DIR/results.json (runs nothing).");
  std::string rp_dir;
  report_cmd->add_option("DIR", rp_dir, "Study directory")->required();

  // xfer eval
  auto* eval_cmd = app.add_subcommand(
      "eval",
      "Accuracy, per-class accuracy and confusion matrix of --model DIR, --weights FILE --arch NAME\n"
      "or --torchscript FILE.pt (a TorchScript file runs code written by its author).");
  xfer::eval::EvalRunOptions ev;
  add_model_source_options(eval_cmd, ev.source);
  eval_cmd->add_option("--data", ev.data, "Data SPEC")->required();
  eval_cmd->add_option("--json", ev.json, "Also write the full result to this JSON file");
  eval_cmd->add_option("--batch-size", ev.batch_size, "Batch size")->capture_default_str();
  eval_cmd->add_option("--device", ev.device, "cpu (default), cuda, cuda:N or auto");

  // xfer predict
  auto* predict_cmd = app.add_subcommand(
      "predict",
      "Logits and probabilities of a model on images (safetensors 'images', a PNG/JPEG, or a folder).\n"
      "Model from --model DIR, --weights FILE.safetensors --arch NAME, or --torchscript FILE.pt.\n"
      "A TorchScript file runs code written by its author: load only files you trust.\n"
      "xfer never loads pickle files.");
  xfer::eval::PredictOptions pr;
  add_model_source_options(predict_cmd, pr.source);
  predict_cmd->add_option("--input", pr.input, "Images: .safetensors, .png/.jpg, or a folder")->required();
  predict_cmd->add_option("--out", pr.out, "Output .safetensors (logits, probabilities, predictions)")
      ->required();
  predict_cmd->add_option("--batch-size", pr.batch_size, "Batch size")->capture_default_str();
  predict_cmd->add_option("--device", pr.device, "cpu (default), cuda, cuda:N or auto");

  // xfer launch
  auto* launch_cmd = app.add_subcommand(
      "launch",
      "Run a command as N local processes of one distributed job (as torchrun does): each gets RANK,\n"
      "LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; signals are forwarded; when one fails the\n"
      "others are stopped. Example: xfer launch --nproc 2 -- xfer finetune --from base --data ... --out m");
  xfer::dist::LaunchOptions ln;
  launch_cmd->add_option("--nproc", ln.nproc, "Processes")->capture_default_str();
  launch_cmd->add_option("--master-addr", ln.master_addr, "Rendezvous address")->capture_default_str();
  launch_cmd->add_option("--master-port", ln.master_port, "Rendezvous port (0 = a free one)")->capture_default_str();
  launch_cmd->add_option("command", ln.command, "The command after --")->required();

  // CLI11 reports a misspelt command as "a subcommand is required"; name it instead.
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" || a == "--image-size" || a == "--dist-timeout") {
      ++i;
      continue;
    }
    if (!a.empty() && a[0] == '-') {
      // Likewise an option before the command that xfer does not have.
      const std::string name = a.substr(0, a.find('='));
      static const char* const kGlobal[] = {"--threads", "--image-size", "--dist-timeout",
                                            "--quiet",   "-q",           "--help",
                                            "-h",        "--version"};
      if (std::find(std::begin(kGlobal), std::end(kGlobal), name) == std::end(kGlobal)) {
        std::fprintf(stderr,
                     "xfer: error: unknown option '%s' before the command (options before it: "
                     "--threads, --image-size, --quiet, --dist-timeout; a command's own options "
                     "follow it, see xfer COMMAND --help)\n",
                     name.c_str());
        return 2;
      }
      continue;
    }
    std::string known;
    bool found = false;
    for (const auto* sc : app.get_subcommands({})) {
      known += (known.empty() ? "" : ", ") + sc->get_name();
      found = found || sc->get_name() == a;
    }
    if (!found) {
      std::fprintf(stderr, "xfer: error: unknown command '%s' (commands: %s)\n", a.c_str(), known.c_str());
      return 2;
    }
    break;
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    // Point at the help of the (sub)command whose flags were wrong: "xfer data info --help".
    std::string cmd = "xfer";
    for (CLI::App* at = &app; !at->get_subcommands().empty();) {
      at = at->get_subcommands().front();
      cmd += " " + at->get_name();
    }
    std::fprintf(stderr, "xfer: error: %s (see %s --help)\n", msg.c_str(), cmd.c_str());
    return 2;
  }

  if (launch_cmd->parsed()) {
    auto r = xfer::dist::launch(ln);
    // Ranks that exit with 1 or 2 printed their own error line.
    if (r.exit_code != 0 && r.exit_code != 1 && r.exit_code != 2) {
      std::fprintf(stderr, "xfer: error: launch: %s\n", r.failure.c_str());
    }
    return r.exit_code;
  }
  DistSession dist_session;
  XFER_CHECK_USAGE(g.threads >= 0, "--threads must be >= 0 (0: one per core), got ", g.threads);
  XFER_CHECK_USAGE(std::isfinite(g.dist_timeout) && g.dist_timeout > 0, "--dist-timeout must be > 0 seconds, got ",
                   g.dist_timeout);
  const auto env = xfer::dist::Env::from_environment();
  if (env.world_size > 1) {
    const bool distributable = train_cmd->parsed() || ft_cmd->parsed() || eval_cmd->parsed() ||
                               predict_cmd->parsed() || attack_cmd->parsed() || transfer_cmd->parsed() ||
                               audit_cmd->parsed() || study_cmd->parsed();
    XFER_CHECK_USAGE(distributable, "WORLD_SIZE=", env.world_size,
                     ": only train, finetune, eval, predict, attack, transfer, audit and study run distributed");
    g_rank = env.rank;
    xfer::dist::init(env, std::chrono::milliseconds(static_cast<int64_t>(g.dist_timeout * 1000)));
    if (g.threads <= 0) {
      // Share the cores among the local processes (torchrun sets one thread each).
      const char* local = std::getenv("LOCAL_WORLD_SIZE");
      const int64_t procs = local != nullptr ? std::max<int64_t>(1, std::atoll(local)) : env.world_size;
      g.threads = std::max<int>(1, static_cast<int>(std::thread::hardware_concurrency() / procs));
    }
    if (env.rank > 0) {
      // One rank reports: the others compute the same numbers.
      g.quiet = true;
      if (std::freopen("/dev/null", "w", stdout) == nullptr) std::fprintf(stderr, "xfer: warning: stdout\n");
    }
  }
  xfer::set_quiet(g.quiet);
  xfer::set_threads(g.threads);

  auto sized = [&](const std::string& spec) {
    return spec.empty() ? spec : xfer::data::with_image_size(spec, image_size);
  };
  if (info_cmd->parsed()) {
    auto info = xfer::data::describe(xfer::data::load(sized(info_spec)));
    std::cout << (info_json ? info.dump(2) + "\n" : xfer::data::describe_text(info));
    return 0;
  }
  auto print_epoch = [](const xfer::train::EpochRecord& r) {
    std::fprintf(stderr, "epoch %lld: train loss %.4f acc %.4f", static_cast<long long>(r.epoch),
                 r.train_loss, r.train_accuracy);
    if (r.val_accuracy >= 0) std::fprintf(stderr, " | val loss %.4f acc %.4f", r.val_loss, r.val_accuracy);
    std::fprintf(stderr, " | %.0f img/s, %.1fs\n", r.images_per_second, r.seconds);
  };
  if (attack_cmd->parsed()) {
    if (at_list) {
      std::cout << xfer::attack::attack_list_text();
      return 0;
    }
    for (const auto& d : at_dirs) {
      xfer::io::ModelSource src;
      src.dir = d;
      at.surrogates.push_back(src);
    }
    for (const auto& f : at_ts) {
      xfer::io::ModelSource src;
      src.torchscript = f;
      src.torchscript_mode = at_mode;
      src.mean = at_mean;
      src.std = at_std;
      at.surrogates.push_back(src);
    }
    at.data = sized(at.data);
    at.overrides = xfer::attack::overrides_from_text(at_values);
    // Given either way, the flag overrides the attack's own setting (never ignored).
    if (at_random_start_opt->count() > 0) at.overrides["random_start"] = at_random_start;
    if (at_nesterov_opt->count() > 0) at.overrides["nesterov"] = at_nesterov;
    at.overwrite = at_force ? xfer::Overwrite::kYes : xfer::Overwrite::kNo;
    auto r = xfer::attack::run_attack_set(at);
    std::printf("wrote %s: %lld adversarial examples (%s), %.1f s, %.1f images/s\n", at.out.c_str(),
                static_cast<long long>(r.samples), at.attack.c_str(), r.seconds, r.images_per_second);
    const auto& wb = r.info["white_box_success"];
    if (!wb.is_null()) std::printf("white-box success on the surrogate: %.4f\n", wb["rate"].get<double>());
    std::printf("mean Linf %.4f, mean L2 %.4f\n", r.info["norms"]["linf_mean"].get<double>(),
                r.info["norms"]["l2_mean"].get<double>());
    return 0;
  }
  if (study_cmd->parsed()) {
    xfer::study::StudyOptions so;
    so.config = st_config.empty() ? xfer::study::StudyConfig::preset_config(st_preset)
                                  : xfer::study::StudyConfig::load(
                                        st_config, study_cmd->count("--preset") ? st_preset : "");
    so.config.source = sized(so.config.source);
    so.config.target = sized(so.config.target);
    so.config.test = sized(so.config.test);
    so.out = st_out;
    if (!g.quiet) so.on_message = [](const std::string& m) { std::fprintf(stderr, "%s\n", m.c_str()); };
    auto r = xfer::study::run_study(so);
    std::cout << r.summary;
    std::printf("wrote %s/results.json and %s/report.html (%lld models trained, %lld reused; %.0f s)\n",
                st_out.c_str(), st_out.c_str(),
                static_cast<long long>(r.models_trained), static_cast<long long>(r.models_cached), r.seconds);
    return 0;
  }
  if (report_cmd->parsed()) {
    std::printf("wrote %s\n", xfer::report::write_report(rp_dir).c_str());
    return 0;
  }
  if (transfer_cmd->parsed()) {
    for (const auto& t : tf_sources) tf.sources.push_back(xfer::eval::TransferSource::parse(t));
    for (const auto& t : tf_targets) tf.targets.push_back(xfer::eval::model_source_from_path(t));
    tf.data = sized(tf.data);
    tf.attacks = xfer::split(tf_attacks, ',');
    tf.eps = xfer::parse_fraction_list(tf_eps, "--eps");
    tf.overrides = xfer::attack::overrides_from_text(tf_values);
    tf.predictors = !tf_no_predictors;
    auto r = xfer::eval::run_transfer(tf);
    std::cout << xfer::eval::transfer_text(r);
    std::printf("wrote %s/matrix.json, matrix.csv, heatmap.svg\n", tf.out.c_str());
    return 0;
  }
  if (audit_cmd->parsed()) {
    au.target = xfer::eval::model_source_from_path(au_target);
    for (const auto& p : au_proxies) au.proxies.push_back(xfer::eval::model_source_from_path(p));
    au.data = sized(au.data);
    au.attacks = xfer::split(au_attacks, ',');
    au.eps = xfer::parse_fraction_list(au_eps, "--eps");
    au.overrides = xfer::attack::overrides_from_text(au_values);
    au.feature_on_ancestors = !au_no_feature;
    au.white_box_reference = !au_no_reference;
    auto r = xfer::eval::run_audit(au);
    std::cout << r.summary;
    std::printf("wrote %s/audit.json, summary.md\n", au.out.c_str());
    return 0;
  }
  if (ft_cmd->parsed()) {
    ft.data = sized(ft.data);
    ft.val_data = sized(ft.val_data);
    ft.train.epochs(ft_epochs).batch_size(ft_batch).seed(ft_seed);
    xfer::data::AugmentOptions aug;
    aug.crop_padding = ft_crop;
    aug.hflip = ft_hflip;
    ft.train.augment(aug);
    ft.lora_merge = !ft_lora_separate;
    ft.checkpoints = !ft_no_checkpoint;
    ft.overwrite = ft_force ? xfer::Overwrite::kYes : xfer::Overwrite::kNo;
    if (!g.quiet) {
      ft.on_epoch = print_epoch;
      ft.on_message = [](const std::string& m) { std::fprintf(stderr, "%s\n", m.c_str()); };
    }
    apply_lr_find(ft_cmd, ft.lr_find, ft_lr_range, ft.lr_find_options);
    auto r = xfer::train::run_finetune(ft);
    if (ft.lr_find) {
      std::cout << r.lr_find->text();
      if (r.lr_find_scale != 1) {
        std::printf("phase '%s' trains at --lr x %g: the suggestion as --lr is %.3g\n",
                    r.lr_find_phase.c_str(), r.lr_find_scale,
                    r.lr_find->valley_lr / r.lr_find_scale);
      } else {
        std::printf("on phase '%s'; nothing trained to keep, nothing written%s\n",
                    r.lr_find_phase.c_str(), ft.lr_find_json.empty() ? "" : " but --lr-find-json");
      }
      return 0;
    }
    if (ft.dry_run) {
      std::cout << r.plan_text;
      std::printf("dry run: %lld training samples; nothing trained, nothing written\n",
                  static_cast<long long>(r.train_samples));
      return 0;
    }
    if (r.already_done) {
      std::printf("%s is already complete (id %s); checkpoint removed\n", ft.out.c_str(),
                  r.card.id.substr(0, 16).c_str());
      return 0;
    }
    std::printf("wrote %s (id %s, parent %s)\n", ft.out.c_str(), r.card.id.substr(0, 16).c_str(),
                r.card.parent ? r.card.parent->id.substr(0, 16).c_str() : "-");
    std::printf("%s on %lld samples: %lld trainable parameters, %.1f s\n", ft.strategy.c_str(),
                static_cast<long long>(r.train_samples),
                static_cast<long long>(r.trainable_parameters), r.wall_seconds);
    return 0;
  }
  if (train_cmd->parsed()) {
    tr.data = xfer::train::with_shots(sized(tr.data), train_shots, seed);
    tr.val_data = sized(tr.val_data);
    tr.train.epochs(epochs).batch_size(batch).seed(seed);
    xfer::data::AugmentOptions aug;
    aug.crop_padding = crop;
    aug.hflip = hflip;
    tr.train.augment(aug);
    tr.overwrite = force ? xfer::Overwrite::kYes : xfer::Overwrite::kNo;
    tr.checkpoints = !train_no_checkpoint;
    if (!g.quiet) {
      tr.on_epoch = print_epoch;
      tr.on_message = [](const std::string& m) { std::fprintf(stderr, "%s\n", m.c_str()); };
    }
    apply_lr_find(train_cmd, tr.lr_find, tr_lr_range, tr.lr_find_options);
    auto r = xfer::train::run_train(tr);
    if (tr.lr_find) {
      std::cout << r.lr_find->text();
      return 0;
    }
    if (r.already_done) {
      std::printf("%s is already complete (id %s); checkpoint removed\n", tr.out.c_str(),
                  r.card.id.substr(0, 16).c_str());
      return 0;
    }
    std::printf("wrote %s (id %s)\n", tr.out.c_str(), r.card.id.substr(0, 16).c_str());
    if (r.train.best_val_accuracy >= 0) {
      std::printf("best val accuracy %.4f at epoch %lld\n", r.train.best_val_accuracy,
                  static_cast<long long>(r.train.best_epoch));
    }
    // The rate counts the optimizer steps only; the wall time includes validation and saving.
    std::printf("trained %lld samples, %lld trainable parameters, %.1f s wall, %.0f images/s in steps\n",
                static_cast<long long>(r.train_samples),
                static_cast<long long>(r.train.trainable_parameters), r.train.wall_seconds,
                r.train.images_per_second);
    return 0;
  }
  if (predict_cmd->parsed()) {
    auto r = xfer::eval::run_predict(pr);
    std::printf("wrote %s: %lld predictions from model %s\n", pr.out.c_str(),
                static_cast<long long>(r.predictions.size(0)), r.model_id.substr(0, 16).c_str());
    return 0;
  }
  if (eval_cmd->parsed()) {
    ev.data = sized(ev.data);
    auto r = xfer::eval::run_eval(ev);
    std::cout << xfer::eval::evaluation_text(r.evaluation);
    return 0;
  }
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const xfer::Error& e) {
    const bool usage = e.kind() == xfer::ErrorKind::kUsage;
    if (!(usage && g_rank > 0)) std::fprintf(stderr, "xfer: error: %s\n", e.what());
    return usage ? 2 : 1;
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    auto nl = msg.find('\n');
    if (nl != std::string::npos) msg.resize(nl);
    std::fprintf(stderr, "xfer: error: torch: %s\n", msg.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xfer: error: %s\n", e.what());
    return 1;
  }
}
