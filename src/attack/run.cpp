#include "xfer/attack/run.h"

#include <chrono>
#include <filesystem>

#include "xfer/core/dist.h"
#include "xfer/core/error.h"
#include "xfer/core/json.h"
#include "xfer/core/progress.h"
#include "xfer/core/runtime.h"
#include "xfer/data/image_folder.h"
#include "xfer/data/spec.h"
#include "xfer/io/safetensors.h"

namespace fs = std::filesystem;

namespace xfer::attack {
namespace {

// Rows clean / perturbation (mid-grey = 0, scaled by the largest |change| so
// that an L2 perturbation, far below eps per pixel, shows too) / adversarial.
torch::Tensor preview_grid(const torch::Tensor& all_clean, const torch::Tensor& all_adv,
                           const torch::Tensor& positions) {
  const auto clean = all_clean.index_select(0, positions);
  const auto adv = all_adv.index_select(0, positions);
  const int64_t n = clean.size(0);
  const int64_t c = clean.size(1), h = clean.size(2), w = clean.size(3), gap = 2;
  auto grid = torch::ones({c, 3 * h + 4 * gap, n * w + (n + 1) * gap});
  const double scale = std::max((adv - clean).abs().max().item<double>(), 1e-12);
  auto delta = ((adv - clean) / (2 * scale) + 0.5).clamp(0, 1);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t x0 = gap + i * (w + gap);
    const torch::Tensor rows[3] = {clean[i], delta[i], adv[i]};
    for (int64_t r = 0; r < 3; ++r) {
      const int64_t y0 = gap + r * (h + gap);
      grid.slice(1, y0, y0 + h).slice(2, x0, x0 + w).copy_(rows[r]);
    }
  }
  return grid.mul(255).round().clamp(0, 255).to(torch::kUInt8);
}

}  // namespace

torch::Tensor preview_positions(const torch::Tensor& labels) {
  return data::balanced_positions(labels, kPreviewColumns);
}

void AttackSetOptions::validate() const {
  XFER_CHECK_USAGE(!surrogates.empty(), "--surrogate is required");
  for (const auto& s : surrogates) s.validate(true);
  XFER_CHECK_USAGE(!data.empty(), "--data is required");
  XFER_CHECK_USAGE(!out.empty(), "--out is required");
  XFER_CHECK_USAGE(batch_size >= 1, "--batch-size must be >= 1, got ", batch_size);
  XFER_CHECK_USAGE(limit >= 0, "--limit must be >= 0, got ", limit);
  check_fixed_settings(attack, overrides);
  resolved().validate();
}

AttackOptions AttackSetOptions::resolved() const { return resolve(attack, base, overrides); }

AttackSetResult run_attack_set(const AttackSetOptions& opt) {
  opt.validate();
  check_output_path(opt.out, opt.overwrite);
  data::Dataset ds = data::load(opt.data);
  ds = data::limit_balanced(ds, opt.limit);
  XFER_CHECK(ds.size() > 0, opt.data, ": no samples");
  const bool feature = opt.resolved().feature();
  std::vector<io::LoadedModel> loaded;
  for (const auto& src : opt.surrogates) {
    io::ModelSource s = src;
    if (s.dir.empty() && s.input_shape.empty()) s.input_shape = {ds.channels(), ds.height(), ds.width()};
    loaded.push_back(io::load_model_source(s));
    io::check_model_for_data(loaded.back(), ds, opt.data, !feature);
  }
  return run_attack_set(opt, loaded, ds);
}

AttackSetResult run_attack_set(const AttackSetOptions& opt, const std::vector<io::LoadedModel>& loaded,
                               const data::Dataset& ds) {
  XFER_CHECK_USAGE(!loaded.empty(), "an attack needs at least one surrogate");
  XFER_CHECK_USAGE(!opt.out.empty(), "--out is required");
  XFER_CHECK_USAGE(opt.batch_size >= 1, "--batch-size must be >= 1, got ", opt.batch_size);
  const AttackOptions o = opt.resolved();
  o.validate();
  check_output_path(opt.out, opt.overwrite);
  XFER_CHECK(ds.size() > 0, opt.data, ": no samples");
  const torch::Device device = parse_device(opt.device);
  std::vector<models::Classifier> models;
  Json surrogates = Json::array();
  for (const auto& lm : loaded) {
    lm.model->to(device);
    lm.model->eval();
    models.push_back(lm.model);
    surrogates.push_back({{"id", lm.card.id}, {"path", lm.path}, {"arch", lm.config.arch}});
  }

  const int64_t n = ds.size();
  auto all_images = ds.float_images();
  std::vector<torch::Tensor> advs, targets;
  // In a distributed run each rank crafts whole batches of its shard: a batch
  // is seeded by its index, so the gathered set equals a one-process run's.
  const auto [first, last] = dist::shard(n, opt.batch_size);
  Progress progress(str_cat("attack ", opt.attack), last - first);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t batch_index = first / opt.batch_size;
  for (int64_t b = first; b < last; b += opt.batch_size, ++batch_index) {
    const int64_t e = std::min(last, b + opt.batch_size);
    auto x = all_images.slice(0, b, e).to(device);
    auto y = ds.labels.slice(0, b, e).to(device);
    auto r = run_attack(models, x, y, o, batch_index);
    advs.push_back(r.adv.cpu());
    if (r.targets.defined()) targets.push_back(r.targets.cpu());
    progress.advance(e - b);
  }
  progress.done();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto local = advs.empty() ? torch::empty({0, all_images.size(1), all_images.size(2), all_images.size(3)})
                            : torch::cat(advs, 0);
  auto adv = dist::all_gather_rows(local).contiguous();
  if (dist::active() && o.target() != "none") {
    auto t = targets.empty() ? torch::empty({0}, torch::kLong) : torch::cat(targets);
    targets = {dist::all_gather_rows(t)};
  }

  // Norms and white-box success (ensemble logits) on the samples it classified correctly.
  auto delta = (adv - all_images).flatten(1);
  auto linf = delta.abs().amax(1);
  auto l2 = delta.norm(2, 1);
  Json info;
  {
    torch::NoGradGuard ng;
    std::vector<torch::Tensor> clean_pred, adv_pred;
    for (int64_t b = 0; b < n; b += opt.batch_size) {
      const int64_t e = std::min(n, b + opt.batch_size);
      auto logits = [&](const torch::Tensor& x) {
        torch::Tensor s;
        for (const auto& m : models) s = s.defined() ? s + m->forward(x.to(device)) : m->forward(x.to(device));
        return s.argmax(1).cpu();
      };
      if (!o.feature()) {
        clean_pred.push_back(logits(all_images.slice(0, b, e)));
        adv_pred.push_back(logits(adv.slice(0, b, e)));
      }
    }
    Json success = nullptr;
    if (!clean_pred.empty() && !o.feature()) {
      auto cp = torch::cat(clean_pred), ap = torch::cat(adv_pred);
      auto correct = cp.eq(ds.labels);
      const int64_t nc = correct.sum().item<int64_t>();
      if (targets.empty()) {
        const int64_t fooled = (correct & ap.ne(ds.labels)).sum().item<int64_t>();
        success = {{"definition", "untargeted: misclassified among the clean-correct samples"},
                   {"rate", nc ? double(fooled) / double(nc) : 0.0},
                   {"fooled", fooled},
                   {"clean_correct", nc}};
      } else {
        auto t = torch::cat(targets);
        // A sample already of its target class (label:K on class K) is no success.
        const auto eligible = t.ne(ds.labels);
        const int64_t m = eligible.sum().item<int64_t>();
        const int64_t hit = (eligible & ap.eq(t)).sum().item<int64_t>();
        success = {
            {"definition",
             "targeted: classified as the target label, among the samples not already of it"},
            {"rate", m ? double(hit) / double(m) : 0.0},
            {"hit", hit},
            {"samples", m},
            {"already_target", n - m}};
      }
    }
    info = {{"format", "xfer-adv/1"},
            {"attack", opt.attack},
            {"options", o.to_json()},
            {"batch_size", opt.batch_size},  // random draws are seeded per batch
            {"surrogates", surrogates},
            {"data", {{"spec", opt.data}, {"sha256", ds.content_hash()}, {"samples", n}}},
            {"norms",
             {{"linf_mean", linf.mean().item<double>()},
              {"linf_max", linf.max().item<double>()},
              {"l2_mean", l2.mean().item<double>()},
              {"l2_max", l2.max().item<double>()}}},
            {"white_box_success", success},
            {"seconds", seconds},
            {"images_per_second", double(n) / std::max(seconds, 1e-9)},
            {"threads", torch::get_num_threads()},
            {"xfer_version", version()},
            {"created", utc_timestamp()}};
  }

  io::TensorFile file;
  file.add("images", adv);
  file.add("labels", ds.labels.contiguous());
  file.add("index", ds.index.contiguous());
  if (!targets.empty()) file.add("targets", torch::cat(targets).contiguous());
  file.metadata["format"] = "xfer-adv/1";
  if (dist::is_main()) {
    StagedDir staged(opt.out, opt.overwrite);
    io::write_safetensors(staged.file("adv.safetensors"), file);
    write_json(staged.file("attack.json"), info);
    data::write_png(staged.file("preview.png"),
                    preview_grid(all_images, adv, preview_positions(ds.labels)));
    staged.commit();
  }
  dist::barrier();  // the set exists for every rank from here on
  AttackSetResult r;
  r.info = info;
  r.samples = n;
  r.seconds = seconds;
  r.images_per_second = double(n) / std::max(seconds, 1e-9);
  return r;
}

AdversarialSet load_adversarial_set(const std::string& dir) {
  const std::string st = (fs::path(dir) / "adv.safetensors").string();
  const std::string js = (fs::path(dir) / "attack.json").string();
  std::error_code ec;
  XFER_CHECK(fs::is_directory(dir, ec), dir, ": not an adversarial set directory (no such folder)");
  AdversarialSet s;
  s.info = read_json(js);
  XFER_CHECK(s.info.is_object() && s.info.value("format", "") == "xfer-adv/1", js,
             ": not an xfer adversarial set (format xfer-adv/1)");
  auto f = io::read_safetensors(st);
  for (const char* k : {"images", "labels", "index"}) {
    XFER_CHECK(f.contains(k), st, ": missing tensor '", k, "'");
  }
  s.images = f.at("images");
  s.labels = f.at("labels");
  s.index = f.at("index");
  XFER_CHECK(s.images.dim() == 4 && s.images.scalar_type() == torch::kFloat, st,
             ": images must be float32 [N,C,H,W]");
  const int64_t n = s.images.size(0);
  XFER_CHECK(s.labels.scalar_type() == torch::kLong && s.labels.dim() == 1 && s.labels.size(0) == n, st,
             ": labels must be int64 [", n, "]");
  XFER_CHECK(s.index.scalar_type() == torch::kLong && s.index.dim() == 1 && s.index.size(0) == n, st,
             ": index must be int64 [", n, "]");
  XFER_CHECK(n == 0 || (s.images.min().item<float>() >= 0 && s.images.max().item<float>() <= 1), st,
             ": images must be in [0, 1]");
  if (f.contains("targets")) {
    s.targets = f.at("targets");
    XFER_CHECK(s.targets.scalar_type() == torch::kLong && s.targets.dim() == 1 && s.targets.size(0) == n,
               st, ": targets must be int64 [", n, "]");
  }
  return s;
}

}  // namespace xfer::attack
