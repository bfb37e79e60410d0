// Training throughput of the built-in models: images/s of full training steps
// (forward, loss, backward, AdamW step) on random 1x28x28 batches, after warmup.
// Prints one JSON line per repetition; bench/run_train_throughput alternates it
// with the PyTorch reference (bench/reference/train_throughput.py) and reports
// medians and ratios.
//
// Usage: xfer_bench_train ARCH [--batch B] [--steps N] [--reps R] [--threads T]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "xfer/xfer.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s ARCH [--batch B] [--steps N] [--reps R] [--threads T]\n", argv[0]);
    return 2;
  }
  std::string arch = argv[1];
  int64_t batch = 128, steps = 20, reps = 1;
  int threads = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    int64_t v = std::atoll(argv[i + 1]);
    if (k == "--batch") batch = v;
    else if (k == "--steps") steps = v;
    else if (k == "--reps") reps = v;
    else if (k == "--threads") threads = static_cast<int>(v);
  }
  try {
    int t = xfer::set_threads(threads);
    xfer::seed_everything(0);
    xfer::models::ModelOptions o;
    o.num_classes = 10;
    auto model = xfer::models::create_model(arch, o);
    model->train();
    torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-3));
    auto x = torch::rand({batch, 1, 28, 28});
    auto y = torch::randint(0, 10, {batch}, torch::kLong);
    auto step = [&] {
      opt.zero_grad();
      torch::nn::functional::cross_entropy(model->forward(x), y).backward();
      opt.step();
    };
    for (int i = 0; i < 3; ++i) step();
    for (int64_t r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < steps; ++i) step();
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("{\"impl\": \"xfer\", \"arch\": \"%s\", \"threads\": %d, \"batch\": %lld, "
                  "\"images_per_second\": %.1f}\n",
                  arch.c_str(), t, static_cast<long long>(batch), double(batch * steps) / s);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xfer_bench_train: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
