// Attack throughput: adversarial examples per second of one attack on one of
// the small built-in models (1x28x28, 10 classes, seeded weights), median of
// R timed runs after a warm-up. Writes the model directory (once) and the
// attack's resolved options as JSON, so the PyTorch reference
// (bench/reference/attack_throughput.py) runs the same update rule on the same
// weights. Prints one JSON line.
//
// Usage: xfer_bench_attack ARCH ATTACK WORK_DIR [--batch B] [--reps R] [--threads T]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "xfer/xfer.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s ARCH ATTACK WORK_DIR [--batch B] [--reps R] [--threads T]\n", argv[0]);
    return 2;
  }
  const std::string arch = argv[1], attack = argv[2], work = argv[3];
  int64_t batch = 64, reps = 3;
  int threads = 0;
  for (int i = 4; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    int64_t v = std::atoll(argv[i + 1]);
    if (k == "--batch") batch = v;
    else if (k == "--reps") reps = v;
    else if (k == "--threads") threads = static_cast<int>(v);
  }
  try {
    int t = xfer::set_threads(threads);
    const std::string dir = work + "/" + arch;
    if (!std::filesystem::exists(dir)) {
      xfer::seed_everything(0);
      xfer::io::ModelConfig c;
      c.arch = arch;
      c.num_classes = 10;
      c.input_shape = {1, 28, 28};
      c.mean = {0.2860};
      c.std = {0.3530};
      auto m = xfer::io::build_model(c);
      xfer::io::save_model_dir(dir, *m, c, {});
    }
    auto model = xfer::io::load_model_dir(dir).model;
    auto o = xfer::attack::options_for(attack, xfer::attack::AttackOptions().eps(0.1).steps(10));
    xfer::write_json(work + "/" + attack + ".json", o.to_json());
    xfer::seed_everything(1);
    auto x = torch::rand({batch, 1, 28, 28});
    auto y = torch::randint(0, 10, {batch}, torch::kLong);
    xfer::attack::run_attack({model}, x.slice(0, 0, 8), y.slice(0, 0, 8), o);  // warm-up
    std::vector<double> times;
    for (int64_t r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      xfer::attack::run_attack({model}, x, y, o, r);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    std::printf("{\"impl\": \"xfer\", \"arch\": \"%s\", \"attack\": \"%s\", \"images_per_second\": %.3f, "
                "\"threads\": %d, \"batch\": %lld}\n",
                arch.c_str(), attack.c_str(), double(batch) / times[times.size() / 2], t,
                static_cast<long long>(batch));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xfer_bench_attack: %s\n", e.what());
    return 1;
  }
  return 0;
}
