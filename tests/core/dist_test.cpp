// xfer::dist: sharding arithmetic, the torchrun environment, and real
// two-process runs on Gloo over 127.0.0.1 through the xfer binary.

#include "xfer/core/dist.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/fs.h"
#include "xfer/core/json.h"
#include "xfer/io/safetensors.h"

namespace xfer::dist {
namespace {

using xfer::testing::run_xfer;
using xfer::testing::TempDir;
namespace fs = std::filesystem;

TEST(DistShardTest, CoversAllRowsInRankOrderInWholeBlocks) {
  for (int64_t world : {1, 2, 3, 5}) {
    for (int64_t n : {0, 1, 7, 64, 100, 257}) {
      for (int64_t block : {1, 16, 64}) {
        int64_t next = 0, most = 0, least = LLONG_MAX;
        for (int64_t r = 0; r < world; ++r) {
          const auto [b, e] = shard(n, block, r, world);
          EXPECT_EQ(b, next) << n << " " << block << " " << world;
          EXPECT_LE(b, e);
          if (e < n) EXPECT_EQ(e % block, 0) << "a cut inside a batch";
          const int64_t blocks = (e - b + block - 1) / block;
          most = std::max(most, blocks);
          least = std::min(least, blocks);
          next = e;
        }
        EXPECT_EQ(next, n);
        EXPECT_LE(most - least, 1) << "unbalanced: n " << n << " block " << block << " world " << world;
      }
    }
  }
  // One process: everything.
  EXPECT_EQ(shard(10, 4), std::make_pair(int64_t{0}, int64_t{10}));
  xfer::testing::expect_error_naming([] { shard(5, 0, 0, 1); }, "block");
  xfer::testing::expect_error_naming([] { shard(5, 1, 2, 2); }, "rank");
}

// Sets environment variables for one scope and restores them after.
class ScopedEnv {
 public:
  void set(const char* name, const char* value) {
    if (!saved_.count(name)) {
      const char* old = std::getenv(name);
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
    }
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    for (const auto& [k, v] : saved_) {
      if (v) ::setenv(k.c_str(), v->c_str(), 1);
      else ::unsetenv(k.c_str());
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

TEST(DistEnvTest, ReadsTheTorchrunVariablesAndRefusesBadOnes) {
  ScopedEnv env;
  for (const char* k : {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"}) {
    env.set(k, nullptr);
  }
  Env e = Env::from_environment();
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.rank, 0);
  EXPECT_FALSE(e.agent_store);
  env.set("WORLD_SIZE", "4");
  env.set("RANK", "3");
  env.set("LOCAL_RANK", "1");
  env.set("MASTER_ADDR", "10.1.2.3");
  env.set("MASTER_PORT", "29611");
  env.set("TORCHELASTIC_USE_AGENT_STORE", "True");
  e = Env::from_environment();
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "10.1.2.3");
  EXPECT_EQ(e.master_port, 29611);
  EXPECT_TRUE(e.agent_store);
  env.set("RANK", "4");
  xfer::testing::expect_error_naming([] { Env::from_environment(); }, "RANK");
  env.set("RANK", "0");
  env.set("MASTER_PORT", "70000");
  xfer::testing::expect_error_naming([] { Env::from_environment(); }, "MASTER_PORT");
  env.set("MASTER_PORT", "29500");
  env.set("WORLD_SIZE", "two");
  xfer::testing::expect_error_naming([] { Env::from_environment(); }, "WORLD_SIZE");
}

TEST(DistTest, OneProcessCollectivesLeaveTensorsAlone) {
  ASSERT_FALSE(active());
  EXPECT_EQ(world_size(), 1);
  EXPECT_TRUE(is_main());
  auto t = torch::arange(6, torch::kFloat).reshape({2, 3});
  const auto before = t.clone();
  all_reduce_sum(t);
  EXPECT_TRUE(torch::equal(t, before));
  std::vector<torch::Tensor> v = {t};
  broadcast(v);
  EXPECT_TRUE(torch::equal(v[0], before));
  EXPECT_TRUE(torch::equal(all_gather_rows(t), before));
  barrier();
}

int64_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Two processes through `xfer launch` against one, on the same data.
class DistRunTest : public ::testing::Test {
 protected:
  void SetUp() override { spec_ = xfer::testing::write_synthetic_idx(tmp_.path(), 96, 3, 10, 10, 5); }
  // --threads 1 on both sides: the same arithmetic, so sharded outputs are bit-identical.
  static std::string two(const std::string& args) {
    return "launch --nproc 2 -- xfer --quiet --threads 1 --dist-timeout 60 " + args;
  }
  static std::string one(const std::string& args) { return "--quiet --threads 1 " + args; }
  std::string train_args(const std::string& out, int64_t epochs = 2, const char* val_fraction = "0.25") const {
    return "train --data '" + spec_ + "' --arch mlp --arch-options '{\"hidden\":[16],\"dropout\":0}' --epochs " +
           std::to_string(epochs) + " --batch-size 16 --val-fraction " + val_fraction + " --seed 3 --out '" + out +
           "'";
  }
  TempDir tmp_;
  std::string spec_;
};

TEST_F(DistRunTest, TwoProcessesTrainLikeOneWithTheSameGlobalBatch) {
  const std::string a = tmp_.file("one"), b = tmp_.file("two");
  auto r = run_xfer(one(train_args(a)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_xfer(two(train_args(b)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto ca = read_json(a + "/card.json"), cb = read_json(b + "/card.json");
  EXPECT_EQ(ca["metrics"]["world_size"], 1);
  EXPECT_EQ(cb["metrics"]["world_size"], 2);
  // Parameters identical across the two ranks after training.
  EXPECT_EQ(cb["metrics"]["rank_max_param_diff"].get<double>(), 0.0);
  // Per-rank batch 8 x 2 ranks = one process's batch 16: the same training up to summation order.
  const auto wa = io::read_safetensors(a + "/model.safetensors"), wb = io::read_safetensors(b + "/model.safetensors");
  ASSERT_EQ(wa.tensors.size(), wb.tensors.size());
  for (const auto& [name, t] : wa.tensors) {
    EXPECT_TRUE(xfer::testing::tensors_close(wb.at(name), t, 1e-4, 1e-4)) << name;
  }
  EXPECT_NEAR(ca["metrics"]["val_accuracy"].get<double>(), cb["metrics"]["val_accuracy"].get<double>(), 1e-9);
  EXPECT_FALSE(fs::exists(b + ".ckpt"));
}

// NT-Xent needs every rank's embeddings: gathered as constants, with each
// rank's own carrying the gradient, two processes match one.
TEST_F(DistRunTest, TwoProcessesPretrainSimclrLikeOne) {
  const std::string a = tmp_.file("one"), b = tmp_.file("two");
  const std::string ssl = " --objective simclr --proj-dim 8";
  auto r = run_xfer(one(train_args(a) + ssl));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_xfer(two(train_args(b) + ssl));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto ca = read_json(a + "/card.json"), cb = read_json(b + "/card.json");
  EXPECT_EQ(cb["metrics"]["rank_max_param_diff"].get<double>(), 0.0);
  const auto wa = io::read_safetensors(a + "/model.safetensors"), wb = io::read_safetensors(b + "/model.safetensors");
  for (const auto& [name, t] : wa.tensors) {
    EXPECT_TRUE(xfer::testing::tensors_close(wb.at(name), t, 1e-4, 1e-4)) << name;
  }
  EXPECT_NEAR(ca["metrics"]["val_accuracy"].get<double>(), cb["metrics"]["val_accuracy"].get<double>(), 1e-9);
  const auto ha = ca["metrics"]["history"], hb = cb["metrics"]["history"];
  EXPECT_NEAR(ha.back()["train_loss"].get<double>(), hb.back()["train_loss"].get<double>(), 1e-4);
}

// A checkpoint of a 2-process run resumes in one process (the global batch
// does not depend on the world size) and ends where an uninterrupted run does.
TEST_F(DistRunTest, ACheckpointOfTwoProcessesResumesInOne) {
  const std::string ref = tmp_.file("ref"), out = tmp_.file("m");
  auto r = run_xfer(one(train_args(ref, 30, "0")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string ckpt = out + ".ckpt/checkpoint.safetensors";
  // Killing the launcher takes its ranks with it; stop at the first checkpoint.
  ASSERT_TRUE(xfer::testing::run_xfer_until(two(train_args(out, 30, "0")), [&] { return fs::exists(ckpt); }));
  ASSERT_FALSE(fs::exists(out));
  r = run_xfer(one(train_args(out, 30, "0") + " --resume '" + out + ".ckpt'"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto wa = io::read_safetensors(ref + "/model.safetensors"), wb = io::read_safetensors(out + "/model.safetensors");
  for (const auto& [name, t] : wa.tensors) {
    EXPECT_TRUE(xfer::testing::tensors_close(wb.at(name), t, 1e-4, 1e-4)) << name;
  }
}

TEST_F(DistRunTest, ShardedEvalAttackAndTransferEqualOneProcess) {
  const std::string m = tmp_.file("m");
  auto r = run_xfer(one(train_args(m)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // eval
  r = run_xfer(one("eval --model '" + m + "' --data '" + spec_ + "' --batch-size 10 --json '" + tmp_.file("e1.json") + "'"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_xfer(two("eval --model '" + m + "' --data '" + spec_ + "' --batch-size 10 --json '" + tmp_.file("e2.json") + "'"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json(tmp_.file("e1.json")), read_json(tmp_.file("e2.json")));
  // attack: the same adversarial images (each batch is seeded by its index).
  const std::string attack = "attack --surrogate '" + m + "' --data '" + spec_ +
                             "' --attack pgd --eps 0.1 --steps 3 --batch-size 10 --out '";
  r = run_xfer(one(attack + tmp_.file("adv1") + "'"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_xfer(two(attack + tmp_.file("adv2") + "'"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto s1 = io::read_safetensors(tmp_.file("adv1") + "/adv.safetensors");
  const auto s2 = io::read_safetensors(tmp_.file("adv2") + "/adv.safetensors");
  EXPECT_TRUE(torch::equal(s1.at("images"), s2.at("images")));
  EXPECT_TRUE(torch::equal(s1.at("index"), s2.at("index")));
  EXPECT_EQ(read_json(tmp_.file("adv1") + "/attack.json")["white_box_success"],
            read_json(tmp_.file("adv2") + "/attack.json")["white_box_success"]);
  // transfer: the same matrix, predictors included.
  const std::string transfer = "transfer --sources '" + m + "' --targets '" + m + "' --data '" + spec_ +
                               "' --attack fgsm,pgd --eps 0.1 --steps 2 --predictor-samples 20 --out '";
  r = run_xfer(one(transfer + tmp_.file("t1") + "'"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_xfer(two(transfer + tmp_.file("t2") + "'"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(tmp_.file("t1") + "/matrix.csv"), read_file(tmp_.file("t2") + "/matrix.csv"));
}

// The whole study on two processes: models trained data-parallel, attacks and
// evaluation sharded, one results.json and report from rank 0.
TEST_F(DistRunTest, TheStudyRunsOnTwoProcesses) {
  for (const char* d : {"src", "dst", "tst"}) fs::create_directories(tmp_.file(d));
  Json cfg = {{"preset", "quick"},
              {"source", xfer::testing::write_synthetic_idx(tmp_.file("src"), 60, 3, 10, 10, 1)},
              {"target", xfer::testing::write_synthetic_idx(tmp_.file("dst"), 60, 3, 10, 10, 2)},
              {"test", xfer::testing::write_synthetic_idx(tmp_.file("tst"), 30, 3, 10, 10, 3)},
              {"test_shots", 0},          {"base_shots", 0},
              {"base_epochs", 1},         {"base_archs", {"mlp", "cnn"}},
              {"public_base", "mlp"},     {"strategies", {"full"}},
              {"shots", {3}},             {"seeds", {0}},
              {"scratch_archs", {"mlp"}}, {"min_epochs", 1},
              {"min_steps", 2},           {"attacks", {"fgsm"}},
              {"attack_steps", 1},        {"attacker_shots", 3},
              {"attacker_c_arch", "mlp"}, {"adv_train", ""},
              {"predictor_samples", 10}};
  write_json(tmp_.file("cfg.json"), cfg);
  const std::string out = tmp_.file("study");
  auto r = run_xfer(two("study --config '" + tmp_.file("cfg.json") + "' --out '" + out + "'"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto res = read_json(out + "/results.json");
  EXPECT_EQ(res["timing"]["models_trained"], 6);  // 2 bases, 1 fine-tuned, 1 scratch, attackers B and C
  EXPECT_TRUE(fs::exists(out + "/report.html"));
  for (const auto& m : res["models"]) {
    EXPECT_EQ(read_json(m["dir"].get<std::string>() + "/card.json")["metrics"]["world_size"], 2) << m["label"];
  }
}

TEST_F(DistRunTest, ARankThatDiesStopsTheOtherWithAnErrorNamingIt) {
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port());
  // Rank 1 must die after the rendezvous, and a process can take seconds to
  // start (a sanitizer build on a loaded machine took 7 s): the kill waits for
  // a few start-up times, and the timeout is far beyond that.
  const auto s0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run_xfer("--version").exit_code, 0);
  const double startup = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
  const double kill_after = 4.0 + 3.0 * startup;
  const double timeout = 60.0 + 2.0 * kill_after;
  const std::string args = "--quiet --threads 1 --dist-timeout " + std::to_string(int(timeout)) + " " +
                           train_args(tmp_.file("m"), 100000);
  std::thread rank1([&] {
    const auto t0 = std::chrono::steady_clock::now();
    xfer::testing::run_xfer_until(
        args,
        [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > kill_after; },
        env + " RANK=1");
  });
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run_xfer(args, env + " RANK=0");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rank1.join();
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.err.rfind("xfer: error: rank 0: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("rank 1 stopped"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_LT(seconds, kill_after + 0.5 * (timeout - kill_after))
      << "waited for the timeout instead of noticing the dead rank (killed after " << kill_after << " s)";
  EXPECT_FALSE(fs::exists(tmp_.file("m")));
}

TEST_F(DistRunTest, RendezvousWithoutPeersTimesOutWithAClearError) {
  const std::string env = "WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port());
  auto r = run_xfer("--quiet --dist-timeout 2 " + train_args(tmp_.file("m")), env);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("rendezvous at 127.0.0.1:"), std::string::npos) << r.err;
  // Commands that do not run distributed say so; a bad RANK is named.
  r = run_xfer("data info '" + spec_ + "'", env);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("run distributed"), std::string::npos) << r.err;
  r = run_xfer("data info '" + spec_ + "'", "WORLD_SIZE=2 RANK=7");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("RANK"), std::string::npos) << r.err;
}

// PyTorch's own launcher (Debian's python3-torch): its agent hosts the store.
// --redirects/--tee 1: torch 1.13's default "0" fails to parse under Python
// 3.11 (IntFlag iteration skips the zero member).
TEST_F(DistRunTest, TorchrunLaunchesXferDataParallel) {
  if (!fs::exists("/usr/bin/torchrun")) GTEST_SKIP() << "torchrun not installed (python3-torch)";
  const std::string out = tmp_.file("m"), log = tmp_.file("log");
  const std::string cmd = "/usr/bin/torchrun --no_python --redirects 1 --tee 1 --nproc_per_node 2 --master_port " +
                          std::to_string(free_port()) + " '" + xfer::testing::xfer_binary() + "' --quiet --threads 1 " +
                          train_args(out) + " >'" + log + "' 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(log);
  const auto card = read_json(out + "/card.json");
  EXPECT_EQ(card["metrics"]["world_size"], 2);
  EXPECT_EQ(card["metrics"]["rank_max_param_diff"].get<double>(), 0.0);
}

TEST(DistLaunchTest, ReportsAKilledRankAndStopsTheOthers) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_xfer("launch --nproc 3 -- sh -c 'if [ \"$RANK\" = 1 ]; then kill -9 $$; fi; exec sleep 60'");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.exit_code, 137);
  EXPECT_EQ(r.err, "xfer: error: launch: rank 1 was killed by signal 9\n");
  EXPECT_LT(seconds, 30.0);
  // Every rank sees its own RANK and the shared rendezvous variables.
  TempDir dir;
  r = run_xfer("launch --nproc 2 -- sh -c 'echo $RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR > \"" + dir.path() +
               "/r$RANK\"; test -n \"$MASTER_PORT\"'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(dir.file("r0")), "0 0 2 127.0.0.1\n");
  EXPECT_EQ(read_file(dir.file("r1")), "1 1 2 127.0.0.1\n");
  // A failing rank's exit code comes back; the rank printed its own error.
  r = run_xfer("launch --nproc 2 -- sh -c 'exit 3'");
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("exited with code 3"), std::string::npos) << r.err;
  r = run_xfer("launch --nproc 0 -- true");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--nproc"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace xfer::dist
