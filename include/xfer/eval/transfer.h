#pragma once
/// \file
/// `xfer transfer`: sources x targets x attacks x budgets. Each (source or
/// ensemble, attack, eps) is crafted once, every target is evaluated on it in
/// inference mode, and each cell reports (DESIGN.md "Measures"): the success
/// rate on the samples the target classified correctly, the rate over all
/// samples, the targeted hit rate, n, Wilson 95% intervals and the mean
/// perturbation norms. Adversarial sets are cached by content (surrogate ids,
/// data hash, resolved attack options), so a rerun crafts nothing. Outputs:
/// matrix.json, matrix.csv (tidy, one row per cell), heatmap.svg.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "xfer/attack/attack.h"
#include "xfer/attack/run.h"
#include "xfer/core/json.h"
#include "xfer/data/dataset.h"
#include "xfer/eval/predictors.h"
#include "xfer/io/import.h"

namespace xfer::eval {

/// A model directory, or a TorchScript file (a path ending in .pt or .pth
/// that is a file), as a model source.
io::ModelSource model_source_from_path(const std::string& path);

/// One attacker: a model, or an ensemble attacked together ("A+B" on the CLI).
struct TransferSource {
  std::vector<io::ModelSource> models;
  /// Only label-free attacks (feature) from this source, whatever its class
  /// names: a base pre-trained on another task whose labels happen to be
  /// named alike (idx: data names classes by number).
  bool label_free = false;
  /// "A+B" -> an ensemble of A and B; each part as model_source_from_path.
  static TransferSource parse(const std::string& text);
};

struct TransferOptions {
  std::vector<TransferSource> sources;
  std::vector<io::ModelSource> targets;
  std::string data;                          ///< data SPEC
  std::vector<std::string> attacks = {"pgd"};  ///< names, "+"-composed
  std::vector<double> eps = {0.1};           ///< budgets (success-vs-eps curves)
  attack::AttackOptions base;                ///< steps, norm, target, seed ...
  Json overrides = Json::object();           ///< explicit flags (eps is set per budget)
  int64_t limit = 0;                         ///< only the first N samples (0 = all)
  int64_t batch_size = 128;
  std::string device = "cpu";
  bool predictors = true;
  int64_t predictor_samples = 500;           ///< clean samples the predictors use
  std::string cache;                         ///< adversarial set cache (empty = OUT/adv)
  std::string out;
  /// Throws xfer::UsageError on bad values, before any model or data is read.
  void validate() const;
};

/// One (source, target, attack, eps) cell.
struct TransferCell {
  std::string source, target, attack;
  double eps = 0;
  bool white_box = false;  ///< the source is the target itself
  bool targeted = false;
  int64_t n = 0;              ///< samples
  int64_t clean_correct = 0;  ///< samples the target classifies correctly when clean
  int64_t fooled = 0;         ///< of those, misclassified after the attack
  int64_t misclassified = 0;  ///< adversarial samples misclassified, over all n
  int64_t target_n = 0;       ///< targeted: samples whose true label is not their target
  int64_t target_hits = 0;    ///< targeted: of those, classified as the target label
  double success_rate = 0, success_low = 0, success_high = 0;
  double rate_all = 0, rate_all_low = 0, rate_all_high = 0;
  double target_rate = 0, target_low = 0, target_high = 0;
  double linf_mean = 0, l2_mean = 0;
  Json to_json() const;

  /// The rate a table shows for the cell, with its interval and counts: the targeted rate
  /// (target_hits of target_n) for a targeted attack, else the success rate (fooled of
  /// clean_correct).
  struct Rate {
    double rate = 0, low = 0, high = 1;
    int64_t hits = 0, n = 0;
  };
  Rate headline() const;
};

/// The counts and rates of a cell from labels, the target's clean and
/// adversarial predictions, and the target labels (undefined = untargeted).
/// Rates with no denominator are 0 with the interval [0, 1].
TransferCell transfer_cell(const torch::Tensor& labels, const torch::Tensor& clean_pred,
                           const torch::Tensor& adv_pred, const torch::Tensor& targets = {});

/// Tidy CSV: a header then one row per cell (predictors joined when given,
/// keyed by "source\ttarget").
std::string transfer_csv(const std::vector<TransferCell>& cells, const Json& pair_predictors = Json::object());

/// One heatmap panel per (attack, eps): rows sources, columns targets,
/// colour = success rate, white-box cells outlined. A complete SVG document.
std::string transfer_heatmap_svg(const std::vector<TransferCell>& cells);

/// Escapes & < > " for XML and HTML text and attribute values (the SVG charts, report.html).
std::string xml_escape(const std::string& s);

// --- building blocks shared with `xfer audit` ---------------------------

/// A loaded model with the name it has in tables.
struct NamedModel {
  std::string name;
  io::LoadedModel loaded;
};

/// Loads each source once, checks it against the data (image shape; classes
/// unless check_classes is false) and names it by its directory or file
/// name (made unique with "#2", "#3").
std::vector<NamedModel> load_named_models(const std::vector<io::ModelSource>& sources, const data::Dataset& data,
                                          const std::string& spec, bool check_classes = true);

/// What crafting needs besides the surrogates.
struct CraftContext {
  const data::Dataset* data = nullptr;
  std::string spec;
  std::string cache_dir;
  attack::AttackOptions base;
  Json overrides = Json::object();
  int64_t batch_size = 128;
  std::string device = "cpu";
};

/// Directory name of a cached adversarial set: sha256 over the surrogate
/// ids, the data's content hash, the resolved attack options and the batch
/// size (random draws are seeded per batch: another size, another set), the
/// xfer version and results_revision().
std::string adversarial_cache_key(const std::vector<std::string>& surrogate_ids,
                                  const std::string& data_sha256, const Json& resolved_options,
                                  int64_t batch_size);

/// The adversarial set of `attack` at `eps` on the surrogates (an ensemble
/// when several): loaded from the cache when a matching set is there (its
/// attack.json names the same surrogates, data and options), else crafted
/// and written there. `cached` tells which.
attack::AdversarialSet craft_or_reuse(const CraftContext& ctx, const std::vector<const NamedModel*>& surrogates,
                                      const std::string& attack, double eps, bool* cached = nullptr);

/// The predictors' clean samples: `n` of `images` and their labels, taken from
/// the classes in turn (data::balanced_positions), not the first n of
/// class-sorted data.
std::pair<torch::Tensor, torch::Tensor> predictor_samples(const data::Dataset& data,
                                                          const torch::Tensor& images, int64_t n);

/// Predicted classes [N] of a model on float images (eval mode, no grad).
torch::Tensor predict_classes(models::ClassifierImpl& model, const torch::Tensor& images, int64_t batch_size,
                              torch::Device device);

/// Throws xfer::Error naming the model and both class lists unless the
/// target predicts the data's classes (io::label_space_matches).
void check_label_space(const NamedModel& target, const data::Dataset& data, const std::string& spec);
/// The same for any loaded model; `why` ends the message.
void check_label_space(const io::LoadedModel& model, const data::Dataset& data, const std::string& spec,
                       const std::string& why);

/// Checks every attack at every budget (presets, then overrides, then eps):
/// xfer::UsageError naming the flag, before any model or data is read. eps
/// must come from the budget list, not the overrides.
void validate_attack_grid(const std::vector<std::string>& attacks, const std::vector<double>& eps,
                          const attack::AttackOptions& base, const Json& overrides);

/// Prepares an output directory that several runs may fill: created when
/// missing; an existing one must be a directory that is empty or holds
/// `marker` (a previous run's output) or, with `adv_marks`, `adv/` (the cache
/// of a run killed before it wrote `marker`).
void prepare_results_dir(const std::string& dir, const std::string& marker, bool adv_marks = true);

struct TransferResult {
  std::vector<TransferCell> cells;
  Json matrix;  ///< what matrix.json holds
  int64_t sets_crafted = 0, sets_cached = 0;
  double seconds = 0;
};

/// Runs the whole matrix and writes matrix.json, matrix.csv and heatmap.svg
/// (each atomically) into options.out.
TransferResult run_transfer(const TransferOptions& options);

/// Readable summary: one block per (attack, eps), success rates with CI.
std::string transfer_text(const TransferResult& result);

}  // namespace xfer::eval
