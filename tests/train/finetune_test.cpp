#include "xfer/train/finetune.h"

#include <filesystem>
#include <functional>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/data/spec.h"
#include "xfer/io/checkpoint.h"
#include "xfer/core/fs.h"
#include "xfer/core/runtime.h"
#include "xfer/core/sha256.h"
#include "xfer/models/torchscript.h"
#include "xfer/train/run.h"

namespace xfer::train {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;
namespace fs = std::filesystem;

// A small pre-trained cnn (4 source classes) and a 3-class target task.
class FinetuneTest : public SeededTest {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    fs::create_directories(tmp_->file("src"));
    fs::create_directories(tmp_->file("dst"));
    TrainRunOptions t;
    t.data = xfer::testing::write_synthetic_idx(tmp_->file("src"), 160, 4, 12, 12, 1);
    t.arch = "cnn";
    t.arch_options = R"({"widths": [8, 16], "hidden": 24, "dropout": 0.25})";
    t.val_fraction = 0;
    t.train.epochs(2).batch_size(32);
    t.out = tmp_->file("base");
    run_train(t);
    target_ = xfer::testing::write_synthetic_idx(tmp_->file("dst"), 90, 3, 12, 12, 2);
  }
  static void TearDownTestSuite() { delete tmp_; }

  FinetuneRunOptions options(const std::string& strategy, const std::string& out) {
    FinetuneRunOptions o;
    o.source.dir = tmp_->file("base");
    o.data = target_;
    o.strategy = strategy;
    o.train.epochs(3).batch_size(16).seed(5);
    o.out = dir_.file(out);
    return o;
  }
  static std::map<std::string, torch::Tensor> tensors(const io::LoadedModel& m) {
    std::map<std::string, torch::Tensor> t;
    for (const auto& p : m.model->named_parameters()) t[p.key()] = p.value();
    for (const auto& b : m.model->named_buffers()) t[b.key()] = b.value();
    return t;
  }
  static TempDir* tmp_;
  static std::string target_;
  TempDir dir_;
};
TempDir* FinetuneTest::tmp_ = nullptr;
std::string FinetuneTest::target_;

TEST_F(FinetuneTest, LinearProbeKeepsTheBackboneAndBatchNormStatsBitIdentical) {
  auto r = run_finetune(options("linear-probe", "lp"));
  auto base = tensors(io::load_model_dir(tmp_->file("base")));
  auto tuned_model = io::load_model_dir(dir_.file("lp"));
  auto tuned = tensors(tuned_model);
  int compared = 0;
  for (const auto& [k, v] : tuned) {
    if (k.rfind("head.", 0) == 0) continue;
    ASSERT_TRUE(base.count(k)) << k;
    EXPECT_TENSOR_EQ(v, base[k]);  // includes stages.0.1.running_mean / running_var
    ++compared;
  }
  EXPECT_GT(compared, 10);
  EXPECT_EQ(tuned_model.config.num_classes, 3);
  EXPECT_EQ(r.card.parent->id, io::load_model_dir(tmp_->file("base")).card.id);
  EXPECT_EQ(r.card.parent->path, tmp_->file("base"));
  EXPECT_EQ(r.card.recipe["strategy"], "linear-probe");
  EXPECT_EQ(r.card.metrics["trainable_parameters"], 24 * 3 + 3);
  EXPECT_EQ(r.card.metrics["phases"][0]["history"].size(), 3u);
  EXPECT_FALSE(fs::exists(dir_.file("lp.ckpt")));  // removed after success
}

TEST_F(FinetuneTest, CosineHeadLinearProbeTrainsOnlyTheHeadAndIsSavedAsCosine) {
  auto o = options("linear-probe", "cos");
  o.head_type = "cosine:6";
  o.train.lr(0.05).epochs(6);
  auto r = run_finetune(o);
  EXPECT_EQ(r.card.recipe["head_type"], "cosine:6");
  auto base = tensors(io::load_model_dir(tmp_->file("base")));
  auto lm = io::load_model_dir(dir_.file("cos"));
  EXPECT_EQ(lm.config.head, models::HeadOptions().kind("cosine").scale(6));
  EXPECT_EQ(lm.model->head_options(), lm.config.head);
  for (const auto& [k, v] : tensors(lm)) {
    if (k.rfind("head.", 0) != 0) EXPECT_TENSOR_EQ(v, base[k]);
  }
  // Training moved the head: its training loss fell from the first epoch to the last.
  const auto& h = r.card.metrics["phases"][0]["history"];
  EXPECT_LT(h.back()["train_loss"].get<double>(), h.front()["train_loss"].get<double>());
  // The default stays linear, and a linear fine-tune of a cosine-headed parent is linear again.
  auto lin = run_finetune(options("linear-probe", "lin"));
  EXPECT_EQ(lin.card.recipe["head_type"], "linear");
  EXPECT_FALSE(read_json(dir_.file("lin") + "/config.json").contains("head"));
  auto again = options("linear-probe", "again");
  again.source.dir = dir_.file("cos");
  run_finetune(again);
  EXPECT_EQ(io::load_model_dir(dir_.file("again")).model->head_options().kind(), "linear");
  // --head keep keeps the parent's cosine head.
  auto keep = options("full", "keep");
  keep.source.dir = dir_.file("cos");
  keep.head = "keep";
  run_finetune(keep);
  EXPECT_EQ(io::load_model_dir(dir_.file("keep")).model->head_options(), lm.config.head);
}

TEST_F(FinetuneTest, FullFineTuningMovesEveryTensor) {
  run_finetune(options("full", "full"));
  auto base = tensors(io::load_model_dir(tmp_->file("base")));
  auto tuned = tensors(io::load_model_dir(dir_.file("full")));
  EXPECT_FALSE(torch::equal(tuned["stages.0.0.weight"], base["stages.0.0.weight"]));
  EXPECT_FALSE(torch::equal(tuned["stages.0.1.running_mean"], base["stages.0.1.running_mean"]));
}

TEST_F(FinetuneTest, PartialTrainsOnlyTheLastStages) {
  run_finetune(options("partial:1", "partial"));
  auto base = tensors(io::load_model_dir(tmp_->file("base")));
  auto tuned = tensors(io::load_model_dir(dir_.file("partial")));
  EXPECT_TENSOR_EQ(tuned["stages.1.0.weight"], base["stages.1.0.weight"]);
  EXPECT_TENSOR_EQ(tuned["stages.1.1.running_var"], base["stages.1.1.running_var"]);
  EXPECT_FALSE(torch::equal(tuned["neck.1.weight"], base["neck.1.weight"]));
}

TEST_F(FinetuneTest, HugeL2SpAlphaStaysAtThePretrainedWeights) {
  // AdamW moves a weight by about lr per step whatever the gradient's size, so
  // a huge penalty keeps it within a few lr of w0 while full fine-tuning drifts.
  const double lr = 1e-3;
  auto o = options("l2-sp:1e6", "l2sp");
  o.train.lr(lr).warmup_epochs(0);
  run_finetune(o);
  auto f = options("full", "full");
  f.train.lr(lr).warmup_epochs(0);
  run_finetune(f);
  auto base = tensors(io::load_model_dir(tmp_->file("base")));
  auto l2 = tensors(io::load_model_dir(dir_.file("l2sp")));
  auto full = tensors(io::load_model_dir(dir_.file("full")));
  for (const char* k : {"stages.0.0.weight", "stages.1.0.weight", "neck.1.weight", "stages.0.1.weight"}) {
    double d_l2 = (l2[k] - base[k]).abs().max().item<double>();
    double d_full = (full[k] - base[k]).abs().max().item<double>();
    std::cout << k << ": max |w - w0| l2-sp " << d_l2 << ", full " << d_full << "\n";
    EXPECT_LT(d_l2, 2.5 * lr) << k;
    EXPECT_GT(d_full, 4 * lr) << k;
  }
}

TEST_F(FinetuneTest, L2SpPenaltyLimitsDriftComparedWithFull) {
  auto o = options("l2-sp:10", "l2sp");
  o.train.lr(3e-3);
  run_finetune(o);
  auto f = options("full", "full");
  f.train.lr(3e-3);
  run_finetune(f);
  auto base = tensors(io::load_model_dir(tmp_->file("base")));
  auto l2 = tensors(io::load_model_dir(dir_.file("l2sp")));
  auto full = tensors(io::load_model_dir(dir_.file("full")));
  auto drift = [&](std::map<std::string, torch::Tensor>& m) {
    double s = 0;
    for (const char* k : {"stages.0.0.weight", "stages.1.0.weight", "neck.1.weight"}) {
      s += (m[k] - base[k]).pow(2).sum().item<double>();
    }
    return s;
  };
  EXPECT_LT(drift(l2), 0.5 * drift(full));
}

TEST_F(FinetuneTest, DryRunCountsEqualTheRealTrainableCounts) {
  for (const char* s : {"linear-probe", "full", "partial:2", "lp-ft", "lora:2", "l2-sp:0.1"}) {
    auto dry = options(s, "dry");
    dry.dry_run = true;
    auto plan = run_finetune(dry);
    EXPECT_FALSE(fs::exists(dir_.file("dry"))) << s;
    EXPECT_FALSE(plan.plan_text.empty());
    std::string name = std::string("run-") + (s[0] == 'p' ? "partial" : s[0] == 'l' && s[1] == 'o' ? "lora" : s);
    for (auto& c : name) c = c == ':' ? '-' : c;
    auto real = run_finetune(options(s, name));
    EXPECT_EQ(plan.trainable_parameters, real.card.metrics["trainable_parameters"].get<int64_t>()) << s;
    ASSERT_EQ(plan.plans.size(), std::string(s) == "lp-ft" ? 2u : 1u);
    ASSERT_EQ(real.phases.size(), plan.plans.size());
    for (size_t p = 0; p < plan.plans.size(); ++p) {
      EXPECT_EQ(plan.plans[p].trainable, real.phases[p].trainable_parameters)
          << s << " phase " << p;
      // The decay printed is the decay each optimizer group trained with.
      for (const auto& g : plan.plans[p].groups) {
        if (std::string(s) == "l2-sp:0.1" && !g.head) EXPECT_EQ(g.weight_decay, 0.0) << g.name;
      }
    }
  }
}

TEST_F(FinetuneTest, LoraMergesIntoAPlainModelOrKeepsAdaptersSeparate) {
  auto r = run_finetune(options("lora:2", "lora"));
  auto merged = io::load_model_dir(dir_.file("lora"));
  EXPECT_EQ(merged.model->lora(), nullptr);
  EXPECT_EQ(merged.config.arch, "cnn");
  auto o = options("lora:2", "lora-separate");
  o.lora_merge = false;
  run_finetune(o);
  auto separate = io::load_model_dir(dir_.file("lora-separate"));
  ASSERT_NE(separate.model->lora(), nullptr);
  auto x = torch::rand({5, 1, 12, 12});
  torch::NoGradGuard ng;
  EXPECT_TENSOR_CLOSE(separate.model->forward(x), merged.model->forward(x), 1e-5);
  // Only adapters and head trained: (8*9+16*72+24*256)... checked as adapters + head.
  int64_t lora = 0;
  for (const auto& p : separate.model->named_parameters()) {
    if (p.key().rfind("lora.", 0) == 0) lora += p.value().numel();
  }
  EXPECT_EQ(r.card.metrics["trainable_parameters"].get<int64_t>(), lora + 24 * 3 + 3);
}

TEST_F(FinetuneTest, LpFtRunsTwoPhasesAtTwoRates) {
  auto o = options("lp-ft", "lpft");
  o.train.epochs(4).lr(2e-3);
  auto r = run_finetune(o);
  ASSERT_EQ(r.phases.size(), 2u);
  EXPECT_EQ(r.phases[0].history.size(), 2u);
  EXPECT_EQ(r.phases[1].history.size(), 2u);
  EXPECT_EQ(r.phases[0].trainable_parameters, 24 * 3 + 3);
  EXPECT_GT(r.phases[1].trainable_parameters, r.phases[0].trainable_parameters);
  EXPECT_DOUBLE_EQ(r.plans[1].to_json(2e-4)["groups"][0]["lr"].get<double>(), 2e-4);
  EXPECT_EQ(r.card.metrics["phases"].size(), 2u);
  // The card counts epochs over the whole run: the fine-tuning phase's best
  // epoch comes after the probe's two.
  ASSERT_GE(r.phases[1].best_epoch, 1);
  EXPECT_EQ(r.card.metrics["best_epoch"].get<int64_t>(), 2 + r.phases[1].best_epoch);
}

TEST_F(FinetuneTest, LbfgsProbeFitsOnlyTheHeadInOneDeterministicSolve) {
  auto o = options("linear-probe", "lb");
  o.probe_solver = "lbfgs";
  o.head_type = "cosine:5";
  auto r = run_finetune(o);
  auto base = tensors(io::load_model_dir(tmp_->file("base")));
  for (const auto& [k, v] : tensors(io::load_model_dir(o.out))) {
    if (k.rfind("head.", 0) != 0) EXPECT_TENSOR_EQ(v, base[k]) << k;  // BN statistics included
  }
  EXPECT_EQ(r.card.recipe["probe"]["solver"], "lbfgs");
  EXPECT_EQ(r.card.recipe["probe"]["l2"].get<double>(), 0.0);  // a cosine head takes no penalty
  const auto& phase = r.card.metrics["phases"][0];
  EXPECT_EQ(phase["history"].size(), 1u);
  EXPECT_LT(phase["solver"]["grad_max"].get<double>(), 1e-4);
  EXPECT_EQ(r.card.metrics["trainable_parameters"], 24 * 3 + 3);
  // Deterministic: the same run writes the same weights (the card id is their hash).
  auto again = o;
  again.out = dir_.file("lb2");
  EXPECT_EQ(run_finetune(again).card.id, r.card.id);
  // A linear head gets the default penalty; --dry-run says what the phase does.
  auto lin = options("linear-probe", "lin");
  lin.probe_solver = "lbfgs";
  EXPECT_EQ(run_finetune(lin).card.recipe["probe"]["l2"].get<double>(), 1e-3);
  auto dry = options("lp-ft", "dry");
  dry.probe_solver = "lbfgs";
  dry.dry_run = true;
  auto plan = run_finetune(dry).plan_text;
  EXPECT_NE(plan.find("phase 1 (linear-probe, one L-BFGS solve"), std::string::npos) << plan;
  EXPECT_NE(plan.find("phase 2 (fine-tune, 3 epochs)"), std::string::npos) << plan;
  EXPECT_FALSE(fs::exists(dry.out));
}

// A crash is simulated by an exception thrown after an epoch's checkpoint.
struct Crash {};

TEST_F(FinetuneTest, ResumeAfterACrashGivesTheSameWeights) {
  // "lp-ft lbfgs": the probe is one solve without a checkpoint (its record is
  // the first on_epoch call), then 4 fine-tuning epochs with checkpoints.
  for (std::string s : {"full", "lp-ft", "lora:2", "lp-ft lbfgs"}) {
    const bool lbfgs = s == "lp-ft lbfgs";
    if (lbfgs) s = "lp-ft";
    auto ref = options(s, "ref");
    if (lbfgs) ref.probe_solver = "lbfgs";
    ref.train.epochs(4);
    ref.train.augment().crop_padding = 1;
    auto expected = run_finetune(ref).card.id;
    for (int crash_after : lbfgs ? std::vector<int>{2, 4} : std::vector<int>{1, 3}) {
      auto o = options(s, "resumed");
      if (lbfgs) o.probe_solver = "lbfgs";
      o.train.epochs(4);
      o.train.augment().crop_padding = 1;
      o.checkpoint_every = 2;
      int epochs = 0;
      o.on_epoch = [&](const EpochRecord&) {
        if (++epochs == crash_after) throw Crash{};
      };
      EXPECT_THROW(run_finetune(o), Crash);
      EXPECT_FALSE(fs::exists(o.out));
      ASSERT_TRUE(io::has_checkpoint(o.out + ".ckpt"));
      // Starting over without --resume is refused while the checkpoint exists.
      o.on_epoch = nullptr;
      xfer::testing::expect_error_naming([&] { run_finetune(o); }, "--resume");
      o.resume = o.out + ".ckpt";
      auto r = run_finetune(o);
      EXPECT_TRUE(r.resumed);
      EXPECT_EQ(r.card.id, expected)
          << s << (lbfgs ? " lbfgs" : "") << " crash after epoch " << crash_after;
      if (lbfgs) EXPECT_EQ(r.phases[0].solver["name"], "lbfgs");  // the probe's record survives
      EXPECT_FALSE(fs::exists(o.resume));
      fs::remove_all(o.out);
    }
    fs::remove_all(ref.out);
  }
}

// Killed between two step checkpoints inside an epoch (every strategy with
// mini-batch phases): the resumed run restores the partial epoch's position,
// counters, optimizer and generator, and ends on the same weights.
TEST_F(FinetuneTest, ResumeMidEpochGivesTheSameWeightsForEveryStrategy) {
  for (const std::string s : {"full", "partial:1", "lp-ft", "lora:2", "l2-sp:0.1"}) {
    auto configure = [&](const std::string& out) {
      auto o = options(s, out);
      o.train.epochs(4);
      o.train.augment().crop_padding = 1;
      o.checkpoint_every = 2;
      return o;
    };
    auto ref = configure("ref");
    const auto expected = run_finetune(ref).card.id;
    // 90 images, batch 16: 5 steps an epoch, checkpoints after steps 2, 4, ...
    // (counted within a phase); the 4th step is in the first epoch, the 13th in
    // the third (lp-ft: the first epoch of its fine-tuning phase).
    for (int crash_at : {4, 13}) {
      auto o = configure("resumed");
      int steps = 0;
      o.on_step = [&](const StepRecord&) -> bool {
        if (++steps == crash_at) throw Crash{};
        return true;
      };
      EXPECT_THROW(run_finetune(o), Crash);
      const auto c = io::read_checkpoint(o.out + ".ckpt");
      EXPECT_GT(c.state["batch"].get<int64_t>(), 0) << s << " " << crash_at;
      o.on_step = nullptr;
      o.resume = o.out + ".ckpt";
      auto r = run_finetune(o);
      EXPECT_TRUE(r.resumed);
      EXPECT_EQ(r.card.id, expected) << s << " crash at step " << crash_at;
      fs::remove_all(o.out);
    }
    fs::remove_all(ref.out);
  }
}

TEST_F(FinetuneTest, ResumeRefusesADifferentRecipe) {
  auto o = options("full", "m");
  o.on_epoch = [](const EpochRecord&) { throw Crash{}; };
  EXPECT_THROW(run_finetune(o), Crash);
  o.on_epoch = nullptr;
  o.resume = o.out + ".ckpt";
  o.train.lr(0.01);
  try {
    run_finetune(o);
    ADD_FAILURE() << "resumed a different recipe";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
    EXPECT_NE(std::string(e.what()).find("lr 0.01"), std::string::npos) << e.what();
  }
}

// Weights read with other flags (normalisation, arch options) are another
// parent even though the file, and so parent_id, is the same.
TEST_F(FinetuneTest, ResumeRefusesTheSameWeightsReadAsAnotherModel) {
  auto o = options("full", "w");
  o.source = io::ModelSource();
  o.source.weights = tmp_->file("base") + "/model.safetensors";
  o.source.arch = "cnn";
  o.source.arch_options = R"({"widths": [8, 16], "hidden": 24, "dropout": 0.25})";
  o.source.mean = {0.5};
  o.source.std = {0.25};
  o.on_epoch = [](const EpochRecord&) { throw Crash{}; };
  EXPECT_THROW(run_finetune(o), Crash);
  o.on_epoch = nullptr;
  o.resume = o.out + ".ckpt";
  auto other = o;
  other.source.mean = {0.4};
  xfer::testing::expect_error_naming([&] { run_finetune(other); }, "parent_config");
  other = o;
  other.source.arch_options = R"({"widths": [8, 16], "hidden": 24, "dropout": 0.5})";
  xfer::testing::expect_error_naming([&] { run_finetune(other); }, "parent_config");
  EXPECT_TRUE(run_finetune(o).resumed);
}

TEST_F(FinetuneTest, LrFindRunsOnTheFirstPhaseWithARateAndWritesNoModel) {
  auto o = options("lp-ft", "lf");
  o.probe_solver = "lbfgs";
  o.ft_lr_scale = 0.2;
  o.lr_find = true;
  o.out.clear();  // a range test writes no model: --out is refused with it
  o.lr_find_options.start_lr(1e-6).end_lr(1).steps(30);
  o.lr_find_json = dir_.file("curve.json");
  auto r = run_finetune(o);
  ASSERT_TRUE(r.lr_find.has_value());
  // lp-ft with the solver: the head is solved first, the test runs on the fine-tuning phase.
  EXPECT_EQ(r.lr_find_phase, "fine-tune");
  EXPECT_DOUBLE_EQ(r.lr_find_scale, 0.2);
  ASSERT_EQ(r.phases.size(), 1u);  // the solve
  EXPECT_FALSE(r.phases[0].solver.is_null());
  EXPECT_GE(r.lr_find->lr.size(), 2u);
  EXPECT_FALSE(fs::exists(dir_.file("lf")));
  EXPECT_FALSE(fs::exists(dir_.file("lf.ckpt")));
  auto j = Json::parse(read_file(dir_.file("curve.json")));
  EXPECT_EQ(j["phase"], "fine-tune");
  EXPECT_EQ(j["lr"].size(), r.lr_find->lr.size());
  EXPECT_DOUBLE_EQ(j["suggested_lr"].get<double>(), r.lr_find->valley_lr);

  // Mini-batch lp-ft: its first phase (the head) at --lr itself.
  auto m = options("lp-ft", "lf2");
  m.lr_find = true;
  m.out.clear();
  m.lr_find_options.steps(10);
  auto r2 = run_finetune(m);
  EXPECT_EQ(r2.lr_find_phase, "linear-probe");
  EXPECT_DOUBLE_EQ(r2.lr_find_scale, 1.0);
  EXPECT_GE(r2.lr_find->lr.size(), 1u);
}

TEST_F(FinetuneTest, RefusesBadCombinations) {
  struct Case {
    std::string strategy;
    std::function<void(FinetuneRunOptions&)> edit;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"lp-ft", [](auto& o) { o.train.epochs(1); }, "lp-ft needs --epochs >= 2"},
      {"lora:4",
       [](auto& o) {
         o.source = {};
         o.source.torchscript = "m.pt";
         o.source.input_shape = {1, 12, 12};
       },
       "TorchScript"},
      {"scratch", [](auto&) {}, "xfer train"},
      {"partial:7", [](auto&) {}, "backbone stages"},
      {"full", [](auto& o) { o.lp_epochs = 2; }, "--lp-epochs"},
      {"full", [](auto& o) { o.ft_lr_scale = 0.5; },
       "--ft-lr-scale only applies to --strategy lp-ft"},
      {"lp-ft", [](auto& o) { o.ft_lr_scale = 1.5; }, "--ft-lr-scale must be in (0, 1]"},
      {"full", [this](auto& o) { o.resume = dir_.file("nothing"); }, "no such checkpoint"},
      {"full", [](auto& o) { o.head = "keep"; }, "--head keep"},
      {"linear-probe",
       [](auto& o) {
         o.head_type = "cosine";
         o.head = "keep";
       },
       "--head-type applies to a new head"},
      {"linear-probe", [](auto& o) { o.head_type = "cosine:zero"; }, "--head-type"},
      {"full", [](auto& o) { o.probe_solver = "lbfgs"; },
       "applies to --strategy linear-probe and lp-ft"},
      {"linear-probe", [](auto& o) { o.probe_solver = "newton"; }, "--probe-solver"},
      {"linear-probe", [](auto& o) { o.probe_l2 = 0.1; }, "only apply to --probe-solver lbfgs"},
      {"lp-ft",
       [](auto& o) {
         o.probe_solver = "lbfgs";
         o.lp_epochs = 1;
       },
       "--lp-epochs"},
      {"linear-probe",
       [](auto& o) {
         o.probe_solver = "lbfgs";
         o.head_type = "cosine";
         o.probe_l2 = 0.1;
       },
       "--probe-l2 applies to a linear head"},
      {"linear-probe",
       [](auto& o) {
         o.probe_solver = "lbfgs";
         o.lr_find = true;
       },
       "no learning rate to find"},
      {"full",
       [](auto& o) {
         o.lr_find = true;
         o.dry_run = true;
       },
       "--lr-find trains nothing to keep"},
      {"full", [](auto& o) { o.lr_find_json = "c.json"; }, "--lr-find-json needs --lr-find"},
      {"full", [](auto& o) { o.lr_find = true; }, "drop --out"},
      {"full",
       [](auto& o) {
         o.data += ":shots=3";
         o.shots = 2;
       },
       "sets shots=3 itself"},
      {"full",
       [](auto& o) {
         o.val_data = o.data;
         o.val_fraction = 0.2;
       },
       "alternatives"},
      {"full",
       [](auto& o) {
         o.lr_find = true;
         o.lr_find_options.end_lr(1e-9);
       },
       "--lr-find-range"},
  };
  for (const auto& c : cases) {
    auto o = options(c.strategy, "x");
    c.edit(o);
    try {
      run_finetune(o);
      ADD_FAILURE() << "accepted: " << c.needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.needle), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(fs::exists(dir_.file("x")));
}

// A backbone without parameters (a scripted flatten under a new head) leaves
// L2-SP nothing to hold: a usage error, where it used to crash.
TEST_F(FinetuneTest, L2SpWithNothingOutsideTheHeadIsAUsageError) {
  torch::jit::Module flat("Flat");
  flat.define("def forward(self, x):\n    return x.flatten(1)\n");
  flat.save(dir_.file("flat.pt"));
  auto o = options("l2-sp:0.1", "l2");
  o.source = {};
  o.source.torchscript = dir_.file("flat.pt");
  o.source.torchscript_mode = "backbone";
  o.source.input_shape = {1, 12, 12};
  xfer::testing::expect_error_containing([&] { run_finetune(o); },
                                         {"l2-sp", "no parameters outside its head"});
  EXPECT_FALSE(fs::exists(o.out));
  o.strategy = "full";  // the head alone trains
  o.train.epochs(1);
  EXPECT_GT(run_finetune(o).trainable_parameters, 0);
}

TEST_F(FinetuneTest, TorchScriptBackboneFineTunesAndReloadsFromItsDirectory) {
  std::string cmd = "/usr/bin/python3 '" + xfer::testing::source_dir() + "/tests/python/make_torchscript_golden.py' '" +
                    dir_.path() + "' >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "python3-torch not available";
  fs::create_directories(dir_.file("d28"));
  FinetuneRunOptions o;
  o.source.torchscript = dir_.file("backbone.pt");
  o.source.torchscript_mode = "backbone";
  o.data = xfer::testing::write_synthetic_idx(dir_.file("d28"), 40, 2, 28, 28, 4);
  o.strategy = "partial:1";  // proj trains; conv1, bn1, conv2 stay
  o.train.epochs(2).batch_size(8);
  o.out = dir_.file("ts");
  auto r = run_finetune(o);
  EXPECT_EQ(r.card.parent->id, sha256_file(dir_.file("backbone.pt")));
  auto tuned = io::load_model_dir(o.out);
  EXPECT_EQ(tuned.config.arch, "torchscript");
  EXPECT_TRUE(fs::exists(o.out + "/module.pt"));
  auto original = models::TorchScriptClassifier(models::load_torchscript(dir_.file("backbone.pt")), "backbone",
                                                std::vector<int64_t>{1, 28, 28}, 2);
  auto before = original->named_parameters();
  auto after = tuned.model->named_parameters();
  EXPECT_TENSOR_EQ(after["ts__conv1__weight"], before["ts__conv1__weight"]);
  EXPECT_TENSOR_EQ(tuned.model->named_buffers()["ts__bn1__running_mean"],
                   original->named_buffers()["ts__bn1__running_mean"]);
  EXPECT_FALSE(torch::equal(after["ts__proj__weight"], before["ts__proj__weight"]));
  // The directory reloads to the same function as the model that was saved.
  auto x = torch::rand({3, 1, 28, 28});
  auto again = io::load_model_dir(o.out);
  torch::NoGradGuard ng;
  EXPECT_TENSOR_EQ(again.model->forward(x), tuned.model->forward(x));
  // Its model directory takes no adapters either: a usage error before any training.
  auto lora = o;
  lora.source = io::ModelSource();
  lora.source.dir = o.out;
  lora.strategy = "lora:2";
  lora.out = dir_.file("ts-lora");
  try {
    run_finetune(lora);
    ADD_FAILURE() << "lora on a TorchScript model";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
    EXPECT_NE(std::string(e.what()).find("no linear or convolution layer"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(lora.out));
  // The scripted code is pinned by its hash.
  write_file_atomic(o.out + "/module.pt", read_file(dir_.file("classifier.pt")));
  xfer::testing::expect_error_naming([&] { io::load_model_dir(o.out); }, "module.pt");
}

TEST(WithShotsTest, AddsShotsAndTheRunSeedUnlessTheSpecHasOne) {
  EXPECT_EQ(with_shots("fashion-mnist:train:classes=5-9", 10, 3),
            data::DataSpec::parse("fashion-mnist:train:classes=5-9:shots=10:seed=3").str());
  EXPECT_EQ(with_shots("fashion-mnist:seed=7", 2, 3),
            data::DataSpec::parse("fashion-mnist:shots=2:seed=7").str());
  EXPECT_EQ(with_shots("fashion-mnist", 0, 3), "fashion-mnist");
}

}  // namespace
}  // namespace xfer::train

namespace xfer::train {
namespace {

// settings() is a cache key: a default spelled out is the same key, any
// setting that changes the weights is another.
TEST(FinetuneSettingsTest, DefaultsResolveAndEverySettingCounts) {
  FinetuneRunOptions a;
  a.source.dir = "parent";
  a.data = "fashion-mnist:train:classes=5-9";
  a.shots = 10;
  a.strategy = "lp-ft";
  const Json key = a.settings();
  EXPECT_EQ(key["revision"], results_revision());
  EXPECT_EQ(key["ft_lr_scale"], 0.1);
  EXPECT_EQ(key["lp_epochs"], a.train.epochs() / 2);
  auto same = [&](const std::function<void(FinetuneRunOptions&)>& edit) {
    FinetuneRunOptions b = a;
    edit(b);
    return b.settings() == key;
  };
  EXPECT_TRUE(same([](auto& b) { b.ft_lr_scale = 0.1; }));
  EXPECT_TRUE(same([](auto& b) { b.head_type = "linear"; }));
  EXPECT_TRUE(same([](auto& b) { b.lp_epochs = b.train.epochs() / 2; }));
  EXPECT_TRUE(same([](auto& b) { b.source.dir = "moved"; }));  // named by the parent's id instead
  EXPECT_FALSE(same([](auto& b) { b.ft_lr_scale = 0.2; }));
  EXPECT_FALSE(same([](auto& b) { b.head_type = "cosine"; }));
  EXPECT_FALSE(same([](auto& b) { b.probe_solver = "lbfgs"; }));
  EXPECT_FALSE(same([](auto& b) { b.freeze.bn_mode("eval"); }));
  EXPECT_FALSE(same([](auto& b) { b.freeze.layer_decay(0.5); }));
  EXPECT_FALSE(same([](auto& b) { b.val_fraction = 0.2; }));
  EXPECT_FALSE(same([](auto& b) { b.train.seed(1); }));  // another draw of the shots
  EXPECT_FALSE(same([](auto& b) { b.shots = 5; }));
  EXPECT_FALSE(same([](auto& b) { b.train.lr(3e-3); }));
  // An L-BFGS probe's penalty resolves by head type.
  a.probe_solver = "lbfgs";
  EXPECT_EQ(a.settings()["probe"]["l2"], 1e-3);
  a.head_type = "cosine";
  EXPECT_EQ(a.settings()["probe"]["l2"], 0.0);
  // Bad settings are refused as the run would refuse them.
  a.strategy = "lora:0";
  EXPECT_THROW(a.settings(), UsageError);
}

}  // namespace
}  // namespace xfer::train
