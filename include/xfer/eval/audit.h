#pragma once
/// \file
/// `xfer audit`: the lineage-aware risk report. Reads the card.json lineage of
/// a target model and of the proxies an attacker could hold, classifies each
/// proxy (ancestor, descendant, sibling, relative, unrelated), runs the attack
/// suite from every proxy against the target at the chosen budgets, ranks the
/// proxies by success on the target (Wilson 95% CI), relates lineage and the
/// clean-data predictors to the measured risk, and writes audit.json and a
/// readable summary.md.

#include <cstdint>
#include <string>
#include <vector>

#include "xfer/attack/attack.h"
#include "xfer/core/json.h"
#include "xfer/io/import.h"

namespace xfer::eval {

/// A model's lineage: its own id, then its ancestors' ids nearest first,
/// following card.json parent links. A parent whose directory cannot be read
/// (moved, or a weights/TorchScript file) or whose card names another id ends
/// the walk at that parent's id (complete = false).
struct Lineage {
  std::vector<std::string> ids;
  std::vector<std::string> paths;  ///< "" where the path is unknown
  bool complete = true;
  Json to_json() const;
};

/// Follows the parent links of a loaded model (at most max_depth steps; a
/// cycle ends the walk).
Lineage lineage_of(const io::LoadedModel& model, int max_depth = 64);

enum class Relation { kSelf, kAncestor, kDescendant, kSibling, kRelative, kUnrelated };

/// "self", "ancestor", "descendant", "sibling", "relative", "unrelated".
std::string relation_name(Relation relation);

struct RelationInfo {
  Relation relation = Relation::kUnrelated;
  std::string common_ancestor;  ///< nearest shared id ("" when unrelated)
  int proxy_steps = -1;         ///< generations from the proxy up to it
  int target_steps = -1;        ///< generations from the target up to it
  Json to_json() const;
};

/// The relation of a proxy to the target, by ids: the same id is self; the
/// proxy in the target's chain is an ancestor (and the reverse a descendant);
/// the same parent makes siblings; any other shared ancestor, relatives.
RelationInfo classify_relation(const Lineage& proxy, const Lineage& target);

struct AuditOptions {
  io::ModelSource target;
  std::vector<io::ModelSource> proxies;
  std::string data;
  /// The suite run from every proxy.
  std::vector<std::string> attacks = {"fgsm", "pgd", "mi-fgsm+di+ti"};
  /// Also the feature-space attack on each ancestor's backbone. A proxy that
  /// predicts other classes than the data (a base pre-trained on another
  /// task) gets only label-free attacks, so always this one.
  bool feature_on_ancestors = true;
  std::vector<double> eps = {0.1};  ///< the first is the headline budget
  attack::AttackOptions base;
  Json overrides = Json::object();
  int64_t limit = 0;
  int64_t batch_size = 128;
  std::string device = "cpu";
  int64_t predictor_samples = 500;
  /// Also white-box PGD on the target itself: the upper bound.
  bool white_box_reference = true;
  std::string cache;  ///< adversarial set cache (empty = OUT/adv)
  std::string out;
  void validate() const;
};

struct AuditResult {
  Json audit;           ///< what audit.json holds
  std::string summary;  ///< what summary.md holds
  int64_t sets_crafted = 0, sets_cached = 0;
  double seconds = 0;
};

/// Runs the audit and writes audit.json and summary.md (atomically) into out.
AuditResult run_audit(const AuditOptions& options);

}  // namespace xfer::eval
