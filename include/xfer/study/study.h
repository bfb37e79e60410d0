#pragma once
/// \file
/// `xfer study`: the default study of DESIGN.md in one command. Public bases
/// pre-trained on the source task; victims fine-tuned from the public base
/// (strategies x shots x seeds) and trained from scratch; data-efficiency
/// curves; attackers A (the public base alone: feature attack), B (a
/// surrogate fine-tuned from the public base on its own draw of labels) and C
/// (an independent surrogate) against every victim; the lineage effect
/// (descendants vs unrelated victims, pooled Wilson CIs); predictors vs
/// measured transfer; hardening by adversarial fine-tuning. Every model and
/// adversarial set is cached by content under the output directory, so a
/// rerun, or a run resumed after a kill, recomputes nothing finished.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "xfer/core/json.h"

namespace xfer::study {

struct StudyConfig {
  std::string preset = "default";
  std::string source = "fashion-mnist:train:classes=0-4";  ///< pre-training task
  std::string target = "fashion-mnist:train:classes=5-9";  ///< the victims' task
  std::string test = "fashion-mnist:test:classes=5-9";     ///< evaluation and attacks
  int64_t test_shots = 200;   ///< test samples per class (0 = all)
  int64_t base_shots = 1000;  ///< pre-training samples per class (0 = all)
  int64_t base_epochs = 3;
  std::vector<std::string> base_archs = {"cnn", "resnet", "vit"};
  std::string public_base = "resnet";  ///< the base the victims descend from
  std::vector<std::string> strategies = {"linear-probe", "full", "lp-ft", "lora:8"};
  std::vector<int64_t> shots = {10, 100};
  std::vector<int64_t> seeds = {0, 1, 2};
  std::vector<std::string> scratch_archs = {"resnet", "cnn"};
  int64_t min_epochs = 10;  ///< fine-tuning / scratch budget: at least this many epochs
  int64_t min_steps = 100;  ///< ... and at least this many optimizer steps
  double scratch_lr = 3e-3;
  std::vector<std::string> attacks = {"pgd", "mi-fgsm+di+ti"};
  std::vector<double> eps = {0.1};
  int64_t attack_steps = 10;
  int64_t attacker_shots = 100;       ///< labels per class of attackers B and C
  std::string attacker_c_arch = "cnn";
  std::string adv_train = "pgd:0.1:5";  ///< hardening recipe ("" = skip)
  int64_t predictor_samples = 300;

  /// quick (minutes on 2 cores), default, full; another name is an
  /// xfer::UsageError naming `what`.
  static StudyConfig preset_config(const std::string& name, const std::string& what = "--preset");
  Json to_json() const;
  /// Every key optional (missing = the preset's value, "preset" picks it);
  /// unknown keys and bad values are xfer::UsageError naming `what`.
  static StudyConfig from_json(const Json& j, const std::string& what);
  /// Reads a config file (the config.json a study writes). A non-empty
  /// `preset` (--preset beside --config) supplies the preset of a file
  /// without one; a file naming another preset is refused, never overridden
  /// in silence.
  static StudyConfig load(const std::string& path, const std::string& preset = "");
  /// Refuses bad values before anything is trained: unknown architectures,
  /// data SPECs that do not parse or that set what the study sets (shots=,
  /// seed=), repeated seeds, shots, strategies, attacks, eps or archs (a
  /// repeated seed would count one victim twice in a mean and its std).
  void validate() const;
};

struct StudyOptions {
  StudyConfig config;
  std::string out;
  std::function<void(const std::string&)> on_message;  ///< stage starts (the CLI prints them)
};

struct StudyResult {
  Json results;  ///< what results.json holds
  std::string summary;
  int64_t models_trained = 0, models_cached = 0;
  double seconds = 0;
};

/// Runs (or resumes) the study and writes config.json, results.json, the CSV
/// tables, transfer/ (matrix.json, matrix.csv, heatmap.svg) and report.html
/// into out.
StudyResult run_study(const StudyOptions& options);

/// Plain-language findings computed from results.json's numbers.
std::string findings_text(const Json& results);

}  // namespace xfer::study
