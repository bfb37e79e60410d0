#pragma once
/// \file
/// Transfer-based adversarial attacks as pure functions over (surrogate
/// models, images in [0,1], labels, options), as torch splits nn::functional
/// from modules. One iterative engine carries every gradient method of the
/// literature (FGSM, I-FGSM/BIM, PGD, MI-, NI-, VMI-, VNI-FGSM) and the input
/// transformations that compose with them (DI, TI, SI, Admix), as
/// TransferAttack does; the named attacks are presets of AttackOptions and a
/// name like "mi-fgsm+di+ti" composes them. Normalisation lives inside the
/// models, never here. Models are put in eval mode for the attack.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "xfer/core/json.h"
#include "xfer/models/classifier.h"

namespace xfer::attack {

struct AttackOptions {
  /// Perturbation norm: "linf" or "l2".
  TORCH_ARG(std::string, norm) = "linf";
  TORCH_ARG(double, eps) = 0.1;
  /// Step size; 0 = alpha_factor * eps / steps (eps for one step).
  TORCH_ARG(double, alpha) = 0.0;
  /// Default step size as a multiple of eps / steps: 1 for the transfer attacks
  /// (BIM, MI-FGSM: alpha = eps / steps), 2.5 for PGD (Madry et al.'s rule, also
  /// torchattacks' 2/255 at eps 8/255 and 10 steps), which must first walk back
  /// from its random start.
  TORCH_ARG(double, alpha_factor) = 1.0;
  TORCH_ARG(int64_t, steps) = 10;
  /// Start from a uniform point of the eps ball (PGD).
  TORCH_ARG(bool, random_start) = false;
  /// Momentum decay mu over L1-normalised gradients (MI-FGSM); 0 = none.
  TORCH_ARG(double, momentum) = 0.0;
  /// Gradient at the look-ahead point x + alpha * mu * g (NI-FGSM).
  TORCH_ARG(bool, nesterov) = false;
  /// Variance tuning (VMI/VNI): N neighbours drawn in a (beta * eps) ball; 0 = off.
  TORCH_ARG(int64_t, variance_samples) = 0;
  TORCH_ARG(double, variance_beta) = 1.5;
  /// DI: with this probability, resize to [H, H * di_ratio), pad to H * di_ratio, resize back.
  TORCH_ARG(double, di_prob) = 0.0;
  TORCH_ARG(double, di_ratio) = 1.1;
  /// TI: smooth the gradient with a Gaussian kernel of this odd size (0 = off; -1 = suited
  /// to the image: 15 at 224 pixels, scaled, at least 3).
  TORCH_ARG(int64_t, ti_kernel) = 0;
  /// SI: average the gradient over copies x / 2^i, i < si_copies (0 or 1 = off).
  TORCH_ARG(int64_t, si_copies) = 0;
  /// Admix: admix_copies images of other classes mixed in with strength admix_eta
  /// (each with the SI scales when si_copies > 1); 0 = off.
  TORCH_ARG(int64_t, admix_copies) = 0;
  TORCH_ARG(double, admix_eta) = 0.2;
  /// Targeting: "none", "label:K", "random" (a random other class) or "least-likely".
  TORCH_ARG(std::string, target) = "none";
  /// Ensembles: average the surrogates' "logits" or their "loss".
  TORCH_ARG(std::string, ensemble) = "logits";
  /// Feature-space attack: maximise ||f(x') - f(x)||^2 of the backbone features
  /// (no labels, no head).
  TORCH_ARG(bool, feature) = false;
  TORCH_ARG(uint64_t, seed) = 0;

 public:
  /// Throws xfer::UsageError on bad values (eps > 0, steps >= 1, alpha >= 0, ...).
  void validate() const;
  /// The step size actually used.
  double step_size() const {
    return alpha() > 0 ? alpha() : steps() == 1 ? eps() : alpha_factor() * eps() / double(steps());
  }
  /// Every option, for attack.json.
  Json to_json() const;
};

/// A named attack: its description and the options it sets.
struct AttackInfo {
  std::string name;
  std::string description;
  std::string paper;
  Json defaults;  ///< the options it sets
  /// The subset of `defaults` that defines the method, which an override may
  /// not change (fgsm's single step: more steps are bim).
  Json fixed = Json::object();
};

/// The registry: gradient methods (fgsm, bim, pgd, mi-fgsm, ni-fgsm, vmi-fgsm,
/// vni-fgsm, feature) and input transforms (di, ti, si, admix).
const std::vector<AttackInfo>& attack_list();

/// Options of an attack name, "+"-composed ("mi-fgsm+di+ti"; a transform alone
/// means mi-fgsm + that transform, as in its paper), on top of `base` (which
/// carries eps, steps, norm, seed... set by the user). Throws
/// xfer::UsageError naming unknown parts.
AttackOptions options_for(const std::string& name, AttackOptions base = {});

/// What `xfer attack --list` prints: each attack, its paper and what it sets,
/// then every parameter with its default.
std::string attack_list_text();

/// Turns CLI values (option name with dashes -> text) into typed overrides:
/// eps and alpha accept "8/255"; throws xfer::UsageError naming the flag.
Json overrides_from_text(const std::map<std::string, std::string>& values);

/// Applies user overrides given as JSON (e.g. {"momentum": 0.5}) to options.
void apply_overrides(AttackOptions& options, const Json& overrides);

/// The settings an attack name fixes (AttackInfo::fixed of its method).
Json fixed_settings(const std::string& name);
/// `overrides` less the settings `name` fixes: one --steps given to a suite of
/// attacks applies to the iterative ones and leaves fgsm a single step.
Json overrides_for(const std::string& name, const Json& overrides);
/// What an attack runs with: the presets of `name` on `base`, then the user's
/// `overrides` less the settings `name` fixes (options_for, overrides_for,
/// apply_overrides). eps, when set per budget, is the caller's.
AttackOptions resolve(const std::string& name, const AttackOptions& base, const Json& overrides);
/// Throws xfer::UsageError when `overrides` change a setting `name` fixes (one
/// attack named with a flag that contradicts it: `--attack fgsm --steps 10`).
void check_fixed_settings(const std::string& name, const Json& overrides);

struct AttackResult {
  torch::Tensor adv;      ///< float32 [N,C,H,W] in [0,1]
  torch::Tensor targets;  ///< int64 [N] target labels (targeted), else undefined
};

/// Crafts adversarial examples on one surrogate or an ensemble. `images` are
/// float [N,C,H,W] in [0,1]; `labels` int64 [N] (unused by the feature
/// attack). `batch_index` decorrelates the random draws of batches of one run
/// (same seed + same batch index = same output).
AttackResult run_attack(const std::vector<models::Classifier>& surrogates, const torch::Tensor& images,
                        const torch::Tensor& labels, const AttackOptions& options,
                        int64_t batch_index = 0);

/// The Gaussian kernel TI smooths with ([k, k], sums to 1).
torch::Tensor gaussian_kernel(int64_t size);
/// TI kernel size for an image side (odd, >= 3).
int64_t ti_kernel_for(int64_t image_size);

/// Parses an epsilon: "8/255", "0.03", "1e-2". Throws xfer::UsageError naming `what`.
double parse_epsilon(const std::string& text, const std::string& what);

}  // namespace xfer::attack
