#include "xfer/attack/attack.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "xfer/core/error.h"
#include "xfer/core/parse.h"

namespace xfer::attack {
namespace {

namespace F = torch::nn::functional;

torch::Tensor per_sample(const torch::Tensor& t, double p) {
  return t.flatten(1).norm(p, 1).clamp_min(1e-12).view({-1, 1, 1, 1});
}

torch::Tensor project(const torch::Tensor& delta, const AttackOptions& o) {
  if (o.norm() == "linf") return delta.clamp(-o.eps(), o.eps());
  auto n = per_sample(delta, 2);
  return delta * (o.eps() / n).clamp_max(1.0);
}

// The last step rounds: in float32, clean + delta can lie a unit in the last
// place outside the ball (and eps itself, 0.1 say, rounds up to a float above
// it), so attack.json recorded linf_max 0.10000002 for eps 0.1. Pull such
// pixels towards the clean image until the budget holds as a double compares.
torch::Tensor hold_budget(torch::Tensor adv, const torch::Tensor& clean, const AttackOptions& o) {
  float bound = static_cast<float>(o.eps());
  if (static_cast<double>(bound) > o.eps()) bound = std::nextafter(bound, 0.0f);
  const auto limit = torch::full({}, bound, clean.options());
  // Stepping the radius (not the pixel) by a unit: a pixel near 0 has far
  // finer units than a difference near eps, so its own would take thousands.
  auto radius = torch::full_like(adv, bound);
  double shrink = 1e-6;
  for (int i = 0; i < 32; ++i) {
    auto d = adv - clean;
    if (o.norm() == "linf") {
      auto over = d.abs() > limit;
      if (!over.any().item<bool>()) break;
      radius = torch::where(over, torch::nextafter(radius, torch::zeros_like(radius)), radius);
      adv = torch::where(over, (clean + d.sign() * radius).clamp(0, 1), adv);
    } else {
      auto n = per_sample(d, 2);
      auto over = n > limit;
      if (!over.any().item<bool>()) break;
      adv = torch::where(over, (clean + d * (limit / n) * (1 - shrink)).clamp(0, 1), adv);
      shrink *= 2;
    }
  }
  return adv;
}

torch::Tensor uniform(const std::vector<int64_t>& sizes, double lo, double hi, at::Generator& gen,
                      const torch::TensorOptions& opts) {
  return (at::rand(sizes, gen, torch::kFloat) * (hi - lo) + lo).to(opts);
}

// A random point of the norm's ball of the given radius around 0, one per sample.
torch::Tensor random_point(const torch::Tensor& x, const std::string& norm, double radius,
                           at::Generator& gen) {
  if (norm == "linf") return uniform(x.sizes().vec(), -radius, radius, gen, x.options());
  // L2: a uniform direction times a length uniform in [0, radius] (torchattacks' PGDL2).
  auto d = at::normal(0.0, 1.0, x.sizes(), gen).to(x.options());
  auto r = uniform({x.size(0), 1, 1, 1}, 0.0, radius, gen, x.options());
  return d / per_sample(d, 2) * r;
}

// Keeps every model in eval mode for the attack and restores the modes after.
class EvalGuard {
 public:
  explicit EvalGuard(const std::vector<models::Classifier>& ms) : ms_(ms) {
    for (const auto& m : ms_) {
      modes_.push_back(m->is_training());
      m->eval();
    }
  }
  ~EvalGuard() {
    // Last in, first out: a model listed twice ends in the mode it came in with.
    for (size_t i = ms_.size(); i-- > 0;) ms_[i]->train(modes_[i]);
  }

 private:
  const std::vector<models::Classifier>& ms_;
  std::vector<bool> modes_;
};

// DI (Xie et al. 2019): random resize to [H, R), random zero pad to R x R, resize back to H.
torch::Tensor diverse_input(const torch::Tensor& x, const AttackOptions& o, at::Generator& gen) {
  if (at::rand({1}, gen).item<double>() >= o.di_prob()) return x;
  const int64_t h = x.size(2), w = x.size(3);
  const int64_t big = std::max<int64_t>(h + 1, static_cast<int64_t>(std::floor(h * o.di_ratio())));
  const int64_t rnd = at::randint(h, big, {1}, gen).item<int64_t>();
  auto resized = F::interpolate(x, F::InterpolateFuncOptions().size(std::vector<int64_t>{rnd, rnd})
                                       .mode(torch::kNearest));
  const int64_t rem = big - rnd;
  const int64_t top = at::randint(0, rem + 1, {1}, gen).item<int64_t>();
  const int64_t left = at::randint(0, rem + 1, {1}, gen).item<int64_t>();
  auto padded = F::pad(resized, F::PadFuncOptions({left, rem - left, top, rem - top}));
  return F::interpolate(padded, F::InterpolateFuncOptions()
                                    .size(std::vector<int64_t>{h, w})
                                    .mode(torch::kBilinear)
                                    .align_corners(false));
}

struct Engine {
  const std::vector<models::Classifier>& models;
  const AttackOptions& o;
  at::Generator& gen;
  torch::Tensor clean, labels, targets;
  // Per model (backbones may differ in width); unused when paired().
  std::vector<torch::Tensor> clean_features;
  torch::Tensor kernel;  // TI

  torch::Tensor logits(const torch::Tensor& x) {
    torch::Tensor sum;
    for (const auto& m : models) sum = sum.defined() ? sum + m->forward(x) : m->forward(x);
    return sum / double(models.size());
  }

  // The objective the attack ascends, summed over samples.
  torch::Tensor objective(const torch::Tensor& x, const torch::Tensor& y,
                          const std::vector<torch::Tensor>& f0) {
    auto ce = [&](const torch::Tensor& z) {
      auto opts = F::CrossEntropyFuncOptions().reduction(torch::kSum);
      return targets.defined() ? -F::cross_entropy(z, y, opts) : F::cross_entropy(z, y, opts);
    };
    if (o.feature()) {
      torch::Tensor sum;
      for (size_t i = 0; i < models.size(); ++i) {
        auto d = (models[i]->features(x) - f0[i]).pow(2).sum();
        sum = sum.defined() ? sum + d : d;
      }
      return sum / double(models.size());
    }
    if (o.ensemble() == "logits" || models.size() == 1) return ce(logits(x));
    torch::Tensor sum;
    for (const auto& m : models) sum = sum.defined() ? sum + ce(m->forward(x)) : ce(m->forward(x));
    return sum / double(models.size());
  }

  // The feature attack with input transforms measures each transformed copy against the clean
  // image under the same transform (the same mix, scale and DI draw): the clean half rides along
  // in the batch. Against untransformed clean features the distortion is not zero at x itself,
  // and part of the step would chase the transform rather than the image.
  bool paired() const {
    return o.feature() && (o.admix_copies() > 0 || o.si_copies() > 1 || o.di_prob() > 0);
  }

  // Gradient of the objective at x through the input transformations
  // (Admix, SI, DI), smoothed by TI.
  torch::Tensor grad(const torch::Tensor& at_point) {
    auto x = at_point.detach().requires_grad_(true);
    const int64_t n = x.size(0);
    const bool paired = this->paired();
    const auto both = paired ? torch::cat({x, clean}) : x;
    std::vector<torch::Tensor> copies{both};
    if (o.admix_copies() > 0) {
      copies.clear();
      // The feature attack has no labels: then any other image.
      const bool labelled = labels.defined();
      const auto lab_cpu = labelled ? labels.to(torch::kCPU, torch::kLong).contiguous()
                                    : torch::zeros({n}, torch::kLong);
      const auto lab = lab_cpu.accessor<int64_t, 1>();
      for (int64_t j = 0; j < o.admix_copies(); ++j) {
        // Mix with images of other classes (any other image if the batch has one class).
        auto pick = at::randint(0, n, {n}, gen, torch::kLong);
        auto p = pick.accessor<int64_t, 1>();  // accessors: one item() per element was 3 syncs each
        for (int64_t i = 0; i < n; ++i) {
          for (int tries = 0; tries < 8 && n > 1; ++tries) {
            if (p[i] != i && (!labelled || lab[p[i]] != lab[i])) break;
            p[i] = at::randint(0, n, {1}, gen, torch::kLong).item<int64_t>();
          }
        }
        const auto mix = clean.index_select(0, pick.to(x.device()));
        copies.push_back(both + o.admix_eta() * (paired ? torch::cat({mix, mix}) : mix));
      }
    }
    if (o.si_copies() > 1) {
      std::vector<torch::Tensor> scaled;
      for (const auto& c : copies) {
        for (int64_t i = 0; i < o.si_copies(); ++i) scaled.push_back(c / std::pow(2.0, double(i)));
      }
      copies = std::move(scaled);
    }
    if (o.di_prob() > 0) {
      for (auto& c : copies) c = diverse_input(c, o, gen);
    }
    const int64_t k = static_cast<int64_t>(copies.size());
    torch::Tensor y;
    std::vector<torch::Tensor> f0;
    if (paired) {
      std::vector<torch::Tensor> adv, ref;
      for (const auto& c : copies) {
        adv.push_back(c.slice(0, 0, n));
        ref.push_back(c.slice(0, n, 2 * n));
      }
      copies = std::move(adv);
      torch::NoGradGuard ng;
      const auto clean_batch = torch::cat(ref, 0).detach();
      for (const auto& m : models) f0.push_back(m->features(clean_batch));
    }
    auto batch = k == 1 ? copies[0] : torch::cat(copies, 0);
    if (o.feature() && !paired) {
      for (const auto& f : clean_features) {
        std::vector<int64_t> reps(size_t(f.dim()), 1);
        reps[0] = k;
        f0.push_back(k == 1 ? f : f.repeat(reps));
      }
    } else if (!o.feature()) {
      const auto& base = targets.defined() ? targets : labels;
      y = k == 1 ? base : base.repeat({k});
    }
    auto loss = objective(batch, y, f0) / double(k);
    auto g = torch::autograd::grad({loss}, {x})[0];
    if (kernel.defined()) {
      const int64_t c = g.size(1);
      auto w = kernel.to(g.options()).expand({c, 1, kernel.size(0), kernel.size(1)});
      g = F::conv2d(g, w, F::Conv2dFuncOptions().padding(kernel.size(0) / 2).groups(c));
    }
    return g;
  }

  torch::Tensor step_direction(const torch::Tensor& g) {
    if (o.norm() == "linf") return g.sign();
    return g / per_sample(g, 2);
  }
};

}  // namespace

void AttackOptions::validate() const {
  XFER_CHECK_USAGE(norm() == "linf" || norm() == "l2", "--norm: expected linf or l2, got '", norm(), "'");
  XFER_CHECK_USAGE(std::isfinite(eps()) && eps() > 0, "--eps must be a positive number, got ", eps());
  XFER_CHECK_USAGE(norm() == "l2" || eps() <= 1, "--eps must be <= 1 for linf (images are in [0,1]), got ",
                   eps());
  XFER_CHECK_USAGE(steps() >= 1 && steps() <= 100000, "--steps must be in [1, 100000], got ", steps());
  XFER_CHECK_USAGE(std::isfinite(alpha()) && alpha() >= 0,
                   "--alpha must be > 0 (0: the attack's default step), got ", alpha());
  XFER_CHECK_USAGE(std::isfinite(alpha_factor()) && alpha_factor() > 0 && alpha_factor() <= 100,
                   "--alpha-factor must be in (0, 100], got ", alpha_factor());
  XFER_CHECK_USAGE(std::isfinite(momentum()) && momentum() >= 0, "--momentum must be >= 0, got ",
                   momentum());
  // Bounded: each sample is a forward and backward pass per step, and a TI
  // kernel is k x k per channel (a 100001 kernel would be 40 GB).
  XFER_CHECK_USAGE(variance_samples() >= 0 && variance_samples() <= 1000,
                   "--variance-samples must be in [0, 1000], got ", variance_samples());
  XFER_CHECK_USAGE(std::isfinite(variance_beta()) && variance_beta() > 0, "--variance-beta must be > 0");
  XFER_CHECK_USAGE(di_prob() >= 0 && di_prob() <= 1, "--di-prob must be in [0, 1], got ", di_prob());
  XFER_CHECK_USAGE(std::isfinite(di_ratio()) && di_ratio() > 1 && di_ratio() <= 4,
                   "--di-ratio must be in (1, 4], got ", di_ratio());
  XFER_CHECK_USAGE(ti_kernel() == -1 || ti_kernel() == 0 ||
                       (ti_kernel() >= 3 && ti_kernel() <= 255 && ti_kernel() % 2 == 1),
                   "--ti-kernel must be odd and in [3, 255] (or 0 = off), got ", ti_kernel());
  XFER_CHECK_USAGE(si_copies() >= 0 && si_copies() <= 16, "--si-copies must be in [0, 16]");
  XFER_CHECK_USAGE(admix_copies() >= 0 && admix_copies() <= 16, "--admix-copies must be in [0, 16]");
  XFER_CHECK_USAGE(std::isfinite(admix_eta()) && admix_eta() >= 0, "--admix-eta must be >= 0");
  XFER_CHECK_USAGE(ensemble() == "logits" || ensemble() == "loss",
                   "--ensemble: expected logits or loss, got '", ensemble(), "'");
  const auto& t = target();
  bool ok = t == "none" || t == "random" || t == "least-likely";
  if (t.rfind("label:", 0) == 0) {
    const std::string k = t.substr(6);
    ok = !k.empty() && k.find_first_not_of("0123456789") == std::string::npos && k.size() < 9;
  }
  XFER_CHECK_USAGE(ok, "--target: expected none, label:K, random or least-likely, got '", t, "'");
  XFER_CHECK_USAGE(!(feature() && t != "none"), "the feature attack uses no labels: --target must be none");
}

Json AttackOptions::to_json() const {
  return {{"norm", norm()},
          {"eps", eps()},
          {"alpha", step_size()},
          {"alpha_factor", alpha_factor()},
          {"steps", steps()},
          {"random_start", random_start()},
          {"momentum", momentum()},
          {"nesterov", nesterov()},
          {"variance_samples", variance_samples()},
          {"variance_beta", variance_beta()},
          {"di_prob", di_prob()},
          {"di_ratio", di_ratio()},
          {"ti_kernel", ti_kernel()},
          {"si_copies", si_copies()},
          {"admix_copies", admix_copies()},
          {"admix_eta", admix_eta()},
          {"target", target()},
          {"ensemble", ensemble()},
          {"feature", feature()},
          {"seed", seed()}};
}

const std::vector<AttackInfo>& attack_list() {
  static const std::vector<AttackInfo> list = {
      {"fgsm", "one step of eps * sign(gradient)", "Goodfellow et al. 2015",
       {{"steps", 1}, {"alpha", 0.0}, {"random_start", false}},
       {{"steps", 1}, {"alpha", 0.0}, {"random_start", false}}},
      {"bim", "iterative FGSM (I-FGSM): steps of alpha, projected to the eps ball", "Kurakin et al. 2017",
       Json::object()},
      {"pgd", "BIM from a random start in the eps ball (linf or l2)", "Madry et al. 2018",
       {{"random_start", true}, {"alpha_factor", 2.5}}},
      {"mi-fgsm", "momentum over L1-normalised gradients (decay mu)", "Dong et al. 2018", {{"momentum", 1.0}}},
      {"ni-fgsm", "MI-FGSM with the gradient at the Nesterov look-ahead point", "Lin et al. 2020",
       {{"momentum", 1.0}, {"nesterov", true}}},
      {"vmi-fgsm", "MI-FGSM with variance tuning: N neighbours in a beta*eps ball", "Wang & He 2021",
       {{"momentum", 1.0}, {"variance_samples", 20}, {"variance_beta", 1.5}}},
      {"vni-fgsm", "NI-FGSM with variance tuning", "Wang & He 2021",
       {{"momentum", 1.0}, {"nesterov", true}, {"variance_samples", 20}, {"variance_beta", 1.5}}},
      {"feature", "feature-space attack on the backbone: maximise ||f(x') - f(x)||^2 (no head, no labels)",
       "feature distortion (as in Ganeshan et al. 2019, FDA)",
       {{"feature", true}, {"random_start", true}, {"momentum", 1.0}}},
      {"di", "input diversity: random resize and pad with probability p (with mi-fgsm alone)",
       "Xie et al. 2019", {{"di_prob", 0.5}, {"di_ratio", 1.1}}},
      {"ti", "translation invariance: gradient smoothed by a Gaussian kernel sized to the image",
       "Dong et al. 2019", {{"ti_kernel", -1}}},
      {"si", "scale invariance: gradient averaged over x / 2^i, i < m", "Lin et al. 2020", {{"si_copies", 5}}},
      {"admix", "mix in images of other classes (eta) over the SI scales", "Wang et al. 2021",
       {{"admix_copies", 3}, {"admix_eta", 0.2}, {"si_copies", 5}}},
  };
  return list;
}

void apply_overrides(AttackOptions& o, const Json& j) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto& k = it.key();
    const auto& v = it.value();
    try {
      if (k == "norm") o.norm(v.get<std::string>());
      else if (k == "eps") o.eps(v.get<double>());
      else if (k == "alpha") o.alpha(v.get<double>());
      else if (k == "alpha_factor") o.alpha_factor(v.get<double>());
      else if (k == "steps") o.steps(v.get<int64_t>());
      else if (k == "random_start") o.random_start(v.get<bool>());
      else if (k == "momentum") o.momentum(v.get<double>());
      else if (k == "nesterov") o.nesterov(v.get<bool>());
      else if (k == "variance_samples") o.variance_samples(v.get<int64_t>());
      else if (k == "variance_beta") o.variance_beta(v.get<double>());
      else if (k == "di_prob") o.di_prob(v.get<double>());
      else if (k == "di_ratio") o.di_ratio(v.get<double>());
      else if (k == "ti_kernel") o.ti_kernel(v.get<int64_t>());
      else if (k == "si_copies") o.si_copies(v.get<int64_t>());
      else if (k == "admix_copies") o.admix_copies(v.get<int64_t>());
      else if (k == "admix_eta") o.admix_eta(v.get<double>());
      else if (k == "target") o.target(v.get<std::string>());
      else if (k == "ensemble") o.ensemble(v.get<std::string>());
      else if (k == "feature") o.feature(v.get<bool>());
      else if (k == "seed") o.seed(v.get<uint64_t>());
      else throw UsageError(str_cat("attack option '", k, "' is unknown"));
    } catch (const nlohmann::json::exception&) {
      throw UsageError(str_cat("attack option '", k, "': bad value ", v.dump()));
    }
  }
}

namespace {

std::vector<std::string> attack_parts(const std::string& name) {
  XFER_CHECK_USAGE(!name.empty(), "--attack is empty (see xfer attack --list)");
  std::vector<std::string> parts;
  std::stringstream ss(name);
  for (std::string p; std::getline(ss, p, '+');) parts.push_back(p);
  return parts;
}

const AttackInfo* find_attack(const std::string& part, const std::string& name) {
  for (const auto& a : attack_list()) {
    if (a.name == part) return &a;
  }
  throw UsageError(str_cat("--attack: unknown attack '", part, "' in '", name, "' (see xfer attack --list)"));
}

}  // namespace

Json fixed_settings(const std::string& name) {
  Json fixed = Json::object();
  for (const auto& p : attack_parts(name)) fixed.update(find_attack(p, name)->fixed);
  return fixed;
}

Json overrides_for(const std::string& name, const Json& overrides) {
  Json kept = overrides;
  const Json fixed = fixed_settings(name);  // named: items() of a temporary would dangle
  for (const auto& item : fixed.items()) kept.erase(item.key());
  return kept;
}

AttackOptions resolve(const std::string& name, const AttackOptions& base, const Json& overrides) {
  AttackOptions o = options_for(name, base);
  apply_overrides(o, overrides_for(name, overrides));
  return o;
}

void check_fixed_settings(const std::string& name, const Json& overrides) {
  const Json fixed = fixed_settings(name);
  for (const auto& item : fixed.items()) {
    const auto it = overrides.find(item.key());
    if (it == overrides.end() || *it == item.value()) continue;
    std::string flag = item.key();
    std::replace(flag.begin(), flag.end(), '_', '-');
    throw UsageError(str_cat("--", flag, ": ", name, " fixes ", item.key(), " to ", item.value().dump(),
                             ", got ", it->dump(), name == "fgsm" ? " (its iterative form is bim)" : ""));
  }
}

AttackOptions options_for(const std::string& name, AttackOptions base) {
  const std::vector<std::string> parts = attack_parts(name);
  auto find = [&](const std::string& p) { return find_attack(p, name); };
  auto is_transform = [](const std::string& p) { return p == "di" || p == "ti" || p == "si" || p == "admix"; };
  int methods = 0;
  for (const auto& p : parts) {
    find(p);
    methods += !is_transform(p);
  }
  XFER_CHECK_USAGE(methods <= 1, "--attack '", name, "' names more than one gradient method");
  // A transform alone runs on MI-FGSM, as in the DI/TI/SI/Admix papers.
  if (methods == 0) apply_overrides(base, find("mi-fgsm")->defaults);
  for (const auto& p : parts) {
    if (!is_transform(p)) apply_overrides(base, find(p)->defaults);
  }
  for (const auto& p : parts) {
    if (is_transform(p)) apply_overrides(base, find(p)->defaults);
  }
  return base;
}

torch::Tensor gaussian_kernel(int64_t size) {
  XFER_CHECK(size >= 1 && size % 2 == 1, "gaussian kernel size must be odd, got ", size);
  // TransferAttack's TIM: pdf of N(0,1) on linspace(-3, 3, size), outer product, normalised.
  auto x = torch::linspace(-3.0, 3.0, size, torch::kDouble);
  auto k1 = torch::exp(-0.5 * x * x);
  auto k = torch::outer(k1, k1);
  return (k / k.sum()).to(torch::kFloat);
}

int64_t ti_kernel_for(int64_t image_size) {
  int64_t k = static_cast<int64_t>(std::lround(15.0 * double(image_size) / 224.0));
  if (k % 2 == 0) ++k;
  return std::max<int64_t>(3, k);
}

AttackResult run_attack(const std::vector<models::Classifier>& surrogates, const torch::Tensor& images,
                        const torch::Tensor& labels, const AttackOptions& o, int64_t batch_index) {
  o.validate();
  XFER_CHECK(!surrogates.empty(), "attack: no surrogate model");
  XFER_CHECK(images.dim() == 4 && images.scalar_type() == torch::kFloat, "attack: images must be float [N,C,H,W], got ",
             images.sizes());
  XFER_CHECK(o.feature() || (labels.dim() == 1 && labels.size(0) == images.size(0)),
             "attack: labels must be [N] for ", images.size(0), " images");
  EvalGuard eval_guard(surrogates);
  at::Generator gen = at::detail::createCPUGenerator(o.seed() * 0x9E3779B97F4A7C15ULL + uint64_t(batch_index));
  Engine e{surrogates, o, gen};
  const auto device = images.device();
  e.clean = images.detach();
  if (!o.feature()) e.labels = labels.to(device, torch::kLong);
  if (o.ti_kernel() != 0) {
    e.kernel = gaussian_kernel(o.ti_kernel() > 0 ? o.ti_kernel() : ti_kernel_for(images.size(2)));
  }
  AttackResult result;
  {
    torch::NoGradGuard ng;
    if (o.feature()) {
      if (!e.paired()) {
        for (const auto& m : surrogates) e.clean_features.push_back(m->features(e.clean));
      }
    } else if (o.target() != "none") {
      auto z = e.logits(e.clean);
      const int64_t c = z.size(1);
      if (o.target() == "least-likely") {
        e.targets = z.argmin(1);
      } else if (o.target() == "random") {
        auto shift = at::randint(1, std::max<int64_t>(c, 2), {images.size(0)}, gen, torch::kLong).to(device);
        e.targets = (e.labels + shift).remainder(c);
      } else {
        const int64_t k = std::stoll(o.target().substr(6));
        XFER_CHECK_USAGE(k < c, "--target label:", k, ": the surrogate has only ", c, " classes");
        e.targets = torch::full({images.size(0)}, k, torch::dtype(torch::kLong).device(device));
      }
      result.targets = e.targets;
    }
  }

  const double alpha = o.step_size();
  torch::Tensor delta =
      o.random_start() ? random_point(e.clean, o.norm(), o.eps(), gen) : torch::zeros_like(e.clean);
  delta = (e.clean + project(delta, o)).clamp(0, 1) - e.clean;
  torch::Tensor momentum = torch::zeros_like(e.clean);
  torch::Tensor variance = torch::zeros_like(e.clean);
  for (int64_t t = 0; t < o.steps(); ++t) {
    auto x_adv = e.clean + delta;
    // The look-ahead is one step of the accumulated direction: alpha * mu * momentum for linf (as
    // NI-FGSM's paper, where momentum is on the scale of sign(g)); for l2 the momentum's unit
    // vector, or the point would leave the ball by sqrt(pixels).
    auto ahead = o.norm() == "linf" ? momentum : momentum / per_sample(momentum, 2);
    auto point = o.nesterov() ? x_adv + alpha * o.momentum() * ahead : x_adv;
    auto g_raw = e.grad(point);
    auto g = g_raw + variance;
    if (o.momentum() > 0) {
      momentum = o.momentum() * momentum + g / g.abs().mean({1, 2, 3}, true).clamp_min(1e-12);
      g = momentum;
    }
    if (o.variance_samples() > 0) {
      // VT: the mean gradient of neighbours of x_adv (in the attack's own norm's ball of
      // radius beta * eps) minus the gradient at x_adv.
      torch::Tensor sum = torch::zeros_like(g_raw);
      const double r = o.variance_beta() * o.eps();
      for (int64_t i = 0; i < o.variance_samples(); ++i) {
        sum += e.grad(x_adv + random_point(x_adv, o.norm(), r, gen));
      }
      variance = sum / double(o.variance_samples()) - g_raw;
    }
    delta = project(delta + alpha * e.step_direction(g), o);
    delta = (e.clean + delta).clamp(0, 1) - e.clean;
  }
  result.adv = hold_budget((e.clean + delta).detach(), e.clean, o);
  return result;
}

std::string attack_list_text() {
  std::ostringstream os;
  os << "Attacks (compose a gradient method with input transforms: mi-fgsm+di+ti):\n";
  for (const auto& a : attack_list()) {
    os << "  " << a.name << std::string(a.name.size() < 10 ? 10 - a.name.size() : 1, ' ') << a.description
       << " [" << a.paper << "]\n            sets " << a.defaults.dump() << "\n";
  }
  os << "Parameters (flag: default):\n";
  const Json d = AttackOptions().to_json();
  for (auto it = d.begin(); it != d.end(); ++it) {
    std::string flag = it.key();
    for (auto& c : flag) c = c == '_' ? '-' : c;
    if (it.key() == "alpha") {
      os << "  --alpha: alpha-factor * eps / steps\n";
    } else if (it.key() != "feature") {
      os << "  --" << flag << ": " << it.value().dump() << "\n";
    }
  }
  os << "Budgets: images are in [0,1]; for 28x28 grayscale data DESIGN.md's default is linf eps 0.1,\n"
        "alpha eps/10, 10 steps (pgd: 2.5 eps/10, Madry et al.). --eps accepts 8/255.\n";
  return os.str();
}

Json overrides_from_text(const std::map<std::string, std::string>& values) {
  Json j = Json::object();
  for (const auto& [flag, text] : values) {
    std::string key = flag;
    for (auto& c : key) c = c == '-' ? '_' : c;
    const std::string what = "--" + flag;
    if (key == "norm" || key == "target" || key == "ensemble") {
      j[key] = text;
    } else if (key == "eps" || key == "alpha" || key == "alpha_factor" || key == "momentum" || key == "variance_beta" ||
               key == "di_prob" || key == "di_ratio" || key == "admix_eta") {
      j[key] = parse_epsilon(text, what);
    } else {
      const int64_t v = parse_integer(text, what);
      XFER_CHECK_USAGE(key != "seed" || v >= 0, what, " must be >= 0");
      if (key == "seed") j[key] = static_cast<uint64_t>(v);
      else j[key] = static_cast<int64_t>(v);
    }
  }
  return j;
}

double parse_epsilon(const std::string& text, const std::string& what) {
  return parse_fraction(text, what);
}

}  // namespace xfer::attack
