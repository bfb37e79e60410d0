#include "support/support.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "xfer/core/json.h"
#include "xfer/core/runtime.h"
#include "xfer/core/sha256.h"
#include "xfer/data/idx.h"
#include "xfer/data/spec.h"
#include "xfer/io/safetensors.h"

namespace fs = std::filesystem;

namespace xfer::testing {

// The one file compiled with the clone's absolute paths (tests/CMakeLists.txt).
const std::string& source_dir() {
  static const std::string dir = XFER_SOURCE_DIR;
  return dir;
}

const std::string& xfer_binary() {
  static const std::string path = XFER_BINARY;
  return path;
}

void SeededTest::SetUp() { seed_everything(kSeed); }

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "xfer-test-XXXXXX").string();
  char* made = mkdtemp(tmpl.data());
  if (made == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

::testing::AssertionResult tensors_close(const torch::Tensor& a, const torch::Tensor& b,
                                         double atol, double rtol) {
  if (a.sizes() != b.sizes()) {
    return ::testing::AssertionFailure() << "shapes differ: " << a.sizes() << " vs " << b.sizes();
  }
  auto ad = a.detach().to(torch::kCPU, torch::kDouble);
  auto bd = b.detach().to(torch::kCPU, torch::kDouble);
  auto diff = (ad - bd).abs();
  auto tol = atol + rtol * bd.abs();
  auto bad = (diff > tol).logical_or(diff.isnan());
  if (bad.any().item<bool>()) {
    return ::testing::AssertionFailure()
           << bad.sum().item<int64_t>() << " of " << a.numel()
           << " elements differ; max abs diff " << diff.max().item<double>() << " (atol " << atol
           << ", rtol " << rtol << ")";
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult tensors_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type()) {
    return ::testing::AssertionFailure() << "dtypes differ: " << a.scalar_type() << " vs "
                                         << b.scalar_type();
  }
  if (a.sizes() != b.sizes()) {
    return ::testing::AssertionFailure() << "shapes differ: " << a.sizes() << " vs " << b.sizes();
  }
  if (!torch::equal(a.cpu(), b.cpu())) return ::testing::AssertionFailure() << "values differ";
  return ::testing::AssertionSuccess();
}

RunResult run_xfer(const std::string& args, const std::string& env, const std::string& prefix) {
  TempDir tmp;
  std::string cmd = "(" + (prefix.empty() ? std::string() : prefix + "; ") + "exec " +
                    (env.empty() ? std::string() : "env " + env + " ") + "'" + xfer::testing::xfer_binary() + "' " + args + ") >'" +
                    tmp.file("out") + "' 2>'" + tmp.file("err") + "' </dev/null";
  int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  r.out = slurp(tmp.file("out"));
  r.err = slurp(tmp.file("err"));
  return r;
}

::testing::AssertionResult files_complete(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir)) return ::testing::AssertionSuccess();
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator(); ++it) {
    const fs::path p = it->path();
    if (p.filename().string().find(".tmp-") != std::string::npos) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    try {
      if (p.extension() == ".json") {
        xfer::read_json(p.string());
      } else if (p.extension() == ".safetensors") {
        xfer::io::read_safetensors(p.string());
      } else if (it->is_directory() && fs::exists(p / "card.json") && fs::exists(p / "model.safetensors")) {
        const std::string id = xfer::read_json((p / "card.json").string())["id"];
        if (id != xfer::sha256_file((p / "model.safetensors").string())) {
          return ::testing::AssertionFailure() << p << ": card id does not match the weights";
        }
      }
    } catch (const std::exception& e) {
      return ::testing::AssertionFailure() << p << " is not complete: " << e.what();
    }
  }
  return ::testing::AssertionSuccess();
}

bool run_xfer_until(const std::string& args, const std::function<bool()>& stop, const std::string& env) {
  const std::string cmd = "exec " + (env.empty() ? std::string() : "env " + env + " ") + "'" + xfer::testing::xfer_binary() + "' " + args + " >/dev/null 2>&1 </dev/null";
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  for (;;) {
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    if (stop()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return true;
}

bool make_torchscript_golden(const std::string& dir) {
  const std::string cmd = "/usr/bin/python3 '" + xfer::testing::source_dir() + "/tests/python/make_torchscript_golden.py' '" +
                          dir + "' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

bool have_fashion_mnist() {
  return fs::exists(data::fashion_mnist_dir() + "/t10k-images-idx3-ubyte.gz");
}

std::string write_synthetic_idx(const std::string& dir, int64_t n, int64_t k, int64_t h,
                                int64_t w, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto labels = torch::arange(n, torch::kLong).remainder(k);
  // Class c is a bright bar in row band c plus noise: learnable and distinct.
  auto images = torch::randint(0, 60, {n, h, w}, gen, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = labels[i].item<int64_t>();
    int64_t r0 = (c * h) / k, r1 = std::max(r0 + 1, ((c + 1) * h) / k);
    images[i].slice(0, r0, r1).add_(180);
  }
  auto imgs = images.clamp(0, 255).to(torch::kUInt8);
  data::write_idx(dir + "/images.gz", imgs);
  data::write_idx(dir + "/labels.gz", labels.to(torch::kUInt8));
  return "idx:" + dir + "/images.gz," + dir + "/labels.gz";
}

void copy_model_renaming_classes(const std::string& from, const std::string& to,
                                 const std::vector<std::string>& class_names) {
  std::filesystem::copy(from, to);
  const std::string config = (std::filesystem::path(to) / "config.json").string();
  auto cfg = read_json(config);
  cfg["class_names"] = class_names;
  write_json(config, cfg);
}

}  // namespace xfer::testing
