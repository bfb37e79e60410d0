#pragma once
/// \file
/// `xfer attack`: craft adversarial examples for a data SPEC on one surrogate
/// or an ensemble, batch by batch, and write the adversarial set directory of
/// DESIGN.md: adv.safetensors (images float32 [N,C,H,W] in [0,1], labels,
/// index into the source data, targets when targeted), attack.json (attack,
/// every parameter, surrogate ids, data spec and hash, perturbation norms,
/// white-box success) and preview.png (rows: clean, perturbation, adversarial).

#include <functional>
#include <string>
#include <vector>

#include "xfer/attack/attack.h"
#include "xfer/core/fs.h"
#include "xfer/io/import.h"

namespace xfer::attack {

/// Samples shown in an adversarial set's preview.png: at the positions
/// preview_positions gives, one class after another.
constexpr int64_t kPreviewColumns = 8;

/// The positions of a set's samples that its preview shows
/// (data::balanced_positions of its labels: every class, not the first one
/// of class-sorted data).
torch::Tensor preview_positions(const torch::Tensor& labels);

struct AttackSetOptions {
  std::vector<io::ModelSource> surrogates;
  std::string data;
  std::string attack = "pgd";
  AttackOptions base;             ///< eps, norm, steps, target, ensemble, seed ...
  Json overrides = Json::object();  ///< options the user set explicitly (win over presets)
  int64_t batch_size = 128;
  int64_t limit = 0;  ///< attack only the first N samples (0 = all)
  std::string device = "cpu";
  std::string out;
  Overwrite overwrite = Overwrite::kNo;

  /// Throws xfer::UsageError on bad values (before any data or model is read).
  void validate() const;
  /// The options the attack runs with (presets of `attack`, then overrides).
  AttackOptions resolved() const;
};

struct AttackSetResult {
  Json info;  ///< what attack.json holds
  int64_t samples = 0;
  double seconds = 0;
  double images_per_second = 0;
};

AttackSetResult run_attack_set(const AttackSetOptions& options);

/// The same on surrogates already loaded and data already read (xfer transfer
/// and audit load each model once): `options.surrogates` and `options.limit`
/// are not used; `options.data` only names the data in attack.json.
AttackSetResult run_attack_set(const AttackSetOptions& options, const std::vector<io::LoadedModel>& surrogates,
                               const data::Dataset& data);

/// A loaded adversarial set directory.
struct AdversarialSet {
  torch::Tensor images, labels, index, targets;  ///< targets undefined when untargeted
  Json info;
};
/// Reads and validates an adversarial set directory (shapes, dtypes, [0,1] range).
AdversarialSet load_adversarial_set(const std::string& dir);

}  // namespace xfer::attack
