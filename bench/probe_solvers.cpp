// The two ways `xfer finetune --strategy linear-probe` fits a head, timed on
// the same model and k-shot set: the mini-batch probe (the Trainer with the
// backbone frozen: a backbone forward pass on every step; the few-shot budget
// of docs/finetune.md, batch 32 and 100 optimizer steps) against
// --probe-solver lbfgs (train/probe.h: one embedding pass, then the
// full-batch solve). The two sides alternate R times; one JSON line each.
// bench/run_probe_solvers reports medians and the ratio.
//
// Usage: xfer_bench_probe [--shots K] [--classes C] [--steps N] [--reps R]
//                         [--threads T] [--widths A,B,C] [--blocks A,B,C]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "xfer/xfer.h"

namespace {

std::vector<int64_t> ints(const std::string& text) {
  std::vector<int64_t> v;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) v.push_back(std::atoll(item.c_str()));
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t shots = 10, classes = 5, steps = 100, reps = 5;
  int threads = 0;
  std::vector<int64_t> widths{64, 128, 256}, blocks{2, 2, 2};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--shots") shots = std::atoll(v.c_str());
    else if (k == "--classes") classes = std::atoll(v.c_str());
    else if (k == "--steps") steps = std::atoll(v.c_str());
    else if (k == "--reps") reps = std::atoll(v.c_str());
    else if (k == "--threads") threads = std::atoi(v.c_str());
    else if (k == "--widths") widths = ints(v);
    else if (k == "--blocks") blocks = ints(v);
    else {
      std::fprintf(stderr, "xfer_bench_probe: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  try {
    namespace xt = xfer::train;
    const int t = xfer::set_threads(threads);
    xfer::seed_everything(0);
    xfer::models::ModelOptions o;
    o.num_classes = classes;
    o.arch_options = {{"widths", widths}, {"blocks", blocks}};
    auto model = xfer::models::create_model("resnet", o);
    xt::apply_freeze(*model, xt::FreezeOptions().trainable_stages(0));
    const auto head_w = model->head()->weight.detach().clone();
    const auto head_b = model->head()->bias.detach().clone();

    // A k-shot set of random images (the timing does not depend on their content).
    xfer::data::Dataset ds;
    const int64_t n = shots * classes;
    ds.images = torch::randint(0, 256, {n, 1, 28, 28}, torch::kUInt8);
    ds.labels = torch::arange(n, torch::kLong).remainder(classes);
    ds.index = torch::arange(n, torch::kLong);
    for (int64_t c = 0; c < classes; ++c) ds.class_names.push_back(std::to_string(c));
    ds.source = "random";
    const xfer::data::Dataset none;

    // The mini-batch budget: batch min(32, n), epochs so that `steps` optimizer steps run.
    const int64_t batch = std::min<int64_t>(32, n);
    const int64_t per_epoch = std::max<int64_t>(1, n / batch);
    const int64_t epochs = (steps + per_epoch - 1) / per_epoch;
    auto reset_head = [&] {
      torch::NoGradGuard g;
      model->head()->weight.copy_(head_w);
      model->head()->bias.copy_(head_b);
    };
    auto run = [&](const std::string& solver, bool report = true) {
      reset_head();
      const auto t0 = std::chrono::steady_clock::now();
      if (solver == "lbfgs") {
        xt::fit_probe(*model, ds, none, xt::ProbeOptions().l2(1e-3));
      } else {
        xt::Trainer trainer(xt::TrainOptions().epochs(epochs).batch_size(batch).lr(1e-2).keep_best(false));
        trainer.fit(*model, ds, none);
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!report) return;
      std::printf("{\"solver\": \"%s\", \"threads\": %d, \"shots\": %lld, \"classes\": %lld, "
                  "\"steps\": %lld, \"seconds\": %.4f}\n",
                  solver.c_str(), t, static_cast<long long>(shots), static_cast<long long>(classes),
                  static_cast<long long>(solver == "lbfgs" ? 0 : epochs * per_epoch), s);
      std::fflush(stdout);
    };
    run("minibatch", false);  // warm-up of both paths
    run("lbfgs", false);
    for (int64_t r = 0; r < reps; ++r) {
      // Alternate which side goes first, so drift in the machine's load hits both.
      if (r % 2 == 0) {
        run("minibatch");
        run("lbfgs");
      } else {
        run("lbfgs");
        run("minibatch");
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xfer_bench_probe: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
