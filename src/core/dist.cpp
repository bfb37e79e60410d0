#include "xfer/core/dist.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <thread>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "xfer/core/error.h"
#include "xfer/core/parse.h"

namespace xfer::dist {
namespace {

using ms = std::chrono::milliseconds;
constexpr ms kBeatInterval{250};

struct State {
  Env env;
  ms timeout{0};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  std::thread beat;
  std::atomic<bool> stop{false};
  std::string prefix = "xfer/0/";  // per torchrun restart, so keys of an earlier attempt never match
};

State& state() {
  static State s;
  return s;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

c10::intrusive_ptr<c10d::Store> connect(const Env& env, bool server, ms timeout, bool wait_workers) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = server;
  so.timeout = timeout;
  so.waitWorkers = wait_workers;
  if (wait_workers) so.numWorkers = static_cast<size_t>(env.world_size);
  return c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
}

std::string beat_key(int64_t r) { return state().prefix + "beat/" + std::to_string(r); }

// Which ranks stopped: those whose heartbeat counters did not move over a few
// beat intervals. A store that cannot be reached means its host is gone.
std::string who_stopped() {
  const State& s = state();
  try {
    auto client = connect(s.env, false, ms(3000), false);
    auto read = [&] {
      std::vector<int64_t> v;
      for (int64_t r = 0; r < s.env.world_size; ++r) v.push_back(client->add(beat_key(r), 0));
      return v;
    };
    const auto before = read();
    std::this_thread::sleep_for(kBeatInterval * 6);
    const auto after = read();
    std::string dead;
    for (int64_t r = 0; r < s.env.world_size; ++r) {
      if (r != s.env.rank && before[r] == after[r]) dead += str_cat(dead.empty() ? "" : ", ", "rank ", r);
    }
    return dead.empty() ? std::string("no rank stopped; a collective timed out") : dead + " stopped";
  } catch (const std::exception&) {
    return s.env.agent_store ? std::string("the launcher's store is unreachable")
                             : std::string("rank 0 (it hosts the store) stopped");
  }
}

// Runs one collective and waits for it; a failure names the rank that stopped.
void run(const char* what, const std::function<c10::intrusive_ptr<c10d::Work>()>& start) {
  State& s = state();
  try {
    auto work = start();
    work->wait(s.timeout);
  } catch (const std::exception& e) {
    throw Error(str_cat("rank ", s.env.rank, ": ", what, " failed: ", who_stopped(), " (", first_line(e.what()),
                        ")"));
  }
}

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return parse_integer(v, name);
}

// Tensors of one dtype in flat buckets of at most bucket_bytes; `op` runs on each bucket.
void bucketed(std::vector<torch::Tensor>& tensors, int64_t bucket_bytes,
              const std::function<void(std::vector<torch::Tensor>&)>& op) {
  std::map<int, std::vector<size_t>> by_dtype;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].defined() && tensors[i].numel() > 0) by_dtype[static_cast<int>(tensors[i].scalar_type())].push_back(i);
  }
  for (const auto& [dtype, idx] : by_dtype) {
    size_t i = 0;
    while (i < idx.size()) {
      size_t j = i;
      int64_t bytes = 0;
      do {
        bytes += tensors[idx[j]].numel() * static_cast<int64_t>(tensors[idx[j]].element_size());
        ++j;
      } while (j < idx.size() && bytes + tensors[idx[j]].numel() * static_cast<int64_t>(tensors[idx[j]].element_size()) <=
                                     bucket_bytes);
      std::vector<torch::Tensor> parts;
      for (size_t k = i; k < j; ++k) parts.push_back(tensors[idx[k]].detach().reshape({-1}));
      std::vector<torch::Tensor> flat = {torch::cat(parts).contiguous()};
      op(flat);
      int64_t off = 0;
      for (size_t k = i; k < j; ++k) {
        auto& t = tensors[idx[k]];
        const int64_t n = t.numel();
        torch::NoGradGuard ng;
        t.copy_(flat[0].slice(0, off, off + n).view(t.sizes()));
        off += n;
      }
      i = j;
    }
  }
}

}  // namespace

Env Env::from_environment() {
  Env e;
  e.world_size = env_int("WORLD_SIZE", 1);
  XFER_CHECK_USAGE(e.world_size >= 1, "WORLD_SIZE must be >= 1, got ", e.world_size);
  e.rank = env_int("RANK", 0);
  XFER_CHECK_USAGE(e.rank >= 0 && e.rank < e.world_size, "RANK must be in [0, WORLD_SIZE=", e.world_size, "), got ",
                   e.rank);
  e.local_rank = env_int("LOCAL_RANK", e.rank);
  XFER_CHECK_USAGE(e.local_rank >= 0, "LOCAL_RANK must be >= 0, got ", e.local_rank);
  if (const char* a = std::getenv("MASTER_ADDR"); a != nullptr && *a != '\0') e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", e.master_port);
  XFER_CHECK_USAGE(e.master_port >= 1 && e.master_port <= 65535, "MASTER_PORT must be in [1, 65535], got ",
                   e.master_port);
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  e.agent_store = agent != nullptr && (std::string(agent) == "True" || std::string(agent) == "1");
  return e;
}

void init(const Env& env, ms timeout) {
  State& s = state();
  XFER_CHECK(!s.group, "the process group is already initialised");
  s.env = env;
  s.timeout = timeout;
  if (env.world_size <= 1) return;
  const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");
  s.prefix = str_cat("xfer/", restart != nullptr && *restart != '\0' ? restart : "0", "/");
  const std::string where = str_cat(env.master_addr, ":", env.master_port);
  try {
    s.store = connect(env, env.rank == 0 && !env.agent_store, timeout, !env.agent_store);
  } catch (const std::exception& e) {
    throw Error(str_cat("rank ", env.rank, ": rendezvous at ", where, " failed within ", timeout.count() / 1000,
                        " s (", first_line(e.what()), ")"));
  }
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname != nullptr && *ifname != '\0') {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (env.master_addr == "localhost" || env.master_addr.rfind("127.", 0) == 0) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(s.prefix + "pg", s.store);
    s.group = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, static_cast<int>(env.rank),
                                                          static_cast<int>(env.world_size), options);
  } catch (const std::exception& e) {
    throw Error(str_cat("rank ", env.rank, ": rendezvous at ", where, " failed within ", timeout.count() / 1000,
                        " s: cannot create the Gloo process group (", first_line(e.what()), ")"));
  }
  s.stop = false;
  s.beat = std::thread([env] {
    try {
      auto client = connect(env, false, ms(5000), false);
      while (!state().stop) {
        client->add(beat_key(env.rank), 1);
        std::this_thread::sleep_for(kBeatInterval);
      }
    } catch (const std::exception&) {
      // The store is gone: collectives will fail and say so.
    }
  });
  barrier();
}

void shutdown() {
  State& s = state();
  s.stop = true;
  if (s.beat.joinable()) s.beat.join();
  s.group.reset();
  s.store.reset();
  s.env = Env();
}

bool active() { return state().group.defined(); }
int64_t rank() { return active() ? state().env.rank : 0; }
int64_t world_size() { return active() ? state().env.world_size : 1; }

void all_reduce_sum(std::vector<torch::Tensor>& tensors, int64_t bucket_bytes) {
  if (!active()) return;
  bucketed(tensors, bucket_bytes, [](std::vector<torch::Tensor>& flat) {
    run("all-reduce", [&] { return state().group->allreduce(flat); });
  });
}

void all_reduce_sum(torch::Tensor& tensor) {
  std::vector<torch::Tensor> v = {tensor};
  all_reduce_sum(v);
}

void broadcast(std::vector<torch::Tensor>& tensors, int64_t root) {
  if (!active()) return;
  bucketed(tensors, 25 << 20, [root](std::vector<torch::Tensor>& flat) {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    run("broadcast", [&] { return state().group->broadcast(flat, o); });
  });
}

torch::Tensor all_gather_rows(const torch::Tensor& local) {
  if (!active()) return local;
  const int64_t w = world_size();
  const bool is_bool = local.scalar_type() == torch::kBool;
  auto x = (is_bool ? local.to(torch::kUInt8) : local).contiguous();
  std::vector<torch::Tensor> count = {torch::tensor({x.size(0)}, torch::kLong)};
  std::vector<std::vector<torch::Tensor>> counts(1);
  for (int64_t r = 0; r < w; ++r) counts[0].push_back(torch::zeros({1}, torch::kLong));
  run("all-gather", [&] { return state().group->allgather(counts, count); });
  int64_t most = 0;
  std::vector<int64_t> n(w);
  for (int64_t r = 0; r < w; ++r) most = std::max(most, n[r] = counts[0][r].item<int64_t>());
  auto shape = x.sizes().vec();
  shape[0] = most;
  std::vector<torch::Tensor> padded = {torch::zeros(shape, x.options())};
  padded[0].slice(0, 0, x.size(0)).copy_(x);
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int64_t r = 0; r < w; ++r) out[0].push_back(torch::empty(shape, x.options()));
  run("all-gather", [&] { return state().group->allgather(out, padded); });
  std::vector<torch::Tensor> parts;
  for (int64_t r = 0; r < w; ++r) parts.push_back(out[0][r].slice(0, 0, n[r]));
  auto all = torch::cat(parts);
  return is_bool ? all.to(torch::kBool) : all;
}

void barrier() {
  if (!active()) return;
  // A barrier as a one-element all-reduce: it shares the timeout and error path.
  std::vector<torch::Tensor> one = {torch::ones({1})};
  run("barrier", [&] { return state().group->allreduce(one); });
}

std::pair<int64_t, int64_t> shard(int64_t n, int64_t block) { return shard(n, block, rank(), world_size()); }

std::pair<int64_t, int64_t> shard(int64_t n, int64_t block, int64_t r, int64_t w) {
  XFER_CHECK(n >= 0 && block >= 1 && w >= 1 && r >= 0 && r < w, "shard: bad sizes n=", n, " block=", block,
             " rank=", r, " world=", w);
  const int64_t blocks = (n + block - 1) / block;
  const int64_t base = blocks / w, extra = blocks % w;
  const int64_t first = r * base + std::min(r, extra);
  const int64_t count = base + (r < extra ? 1 : 0);
  return {std::min(n, first * block), std::min(n, (first + count) * block)};
}

// ---------------------------------------------------------------------------
// xfer launch

namespace {

volatile std::sig_atomic_t g_forward = 0;
void on_signal(int sig) { g_forward = sig; }

int64_t free_port(const std::string& addr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  XFER_CHECK(fd >= 0, "launch: cannot open a socket (", std::strerror(errno), ")");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = 0;
  if (::inet_pton(AF_INET, addr == "localhost" ? "127.0.0.1" : addr.c_str(), &a.sin_addr) != 1) {
    ::close(fd);
    throw UsageError(str_cat("--master-addr: '", addr, "' is not an IPv4 address (give --master-port to use a name)"));
  }
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  const int err = errno;
  ::close(fd);
  XFER_CHECK(ok, "launch: cannot find a free port on ", addr, " (", std::strerror(err), ")");
  return ntohs(a.sin_port);
}

std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("xfer");
}

}  // namespace

LaunchResult launch(const LaunchOptions& o) {
  XFER_CHECK_USAGE(o.nproc >= 1, "--nproc must be >= 1, got ", o.nproc);
  XFER_CHECK_USAGE(!o.command.empty(), "launch: give the command after --, e.g. xfer launch --nproc 2 -- xfer train ...");
  XFER_CHECK_USAGE(o.master_port >= 0 && o.master_port <= 65535, "--master-port must be in [0, 65535]");
  const int64_t port = o.master_port > 0 ? o.master_port : free_port(o.master_addr);
  // "xfer" means this very binary, so `xfer launch -- xfer ...` works without PATH.
  const std::string program = o.command[0] == "xfer" ? self_exe() : o.command[0];

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  g_forward = 0;

  std::map<pid_t, int64_t> rank_of;
  const pid_t parent = ::getpid();
  for (int64_t r = 0; r < o.nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      for (const auto& [p, rr] : rank_of) ::kill(p, SIGKILL);
      throw Error(str_cat("launch: cannot start rank ", r, " (", std::strerror(errno), ")"));
    }
    if (pid == 0) {
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      // A launcher killed outright (SIGKILL) takes its ranks with it.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(128 + SIGTERM);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", o.master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(program.c_str()));
      for (size_t i = 1; i < o.command.size(); ++i) argv.push_back(const_cast<char*>(o.command[i].c_str()));
      argv.push_back(nullptr);
      ::execvp(program.c_str(), argv.data());
      std::fprintf(stderr, "xfer: error: launch: cannot run %s (%s)\n", program.c_str(), std::strerror(errno));
      ::_exit(127);
    }
    rank_of[pid] = r;
  }

  LaunchResult result;
  auto stop_rest = [&](int sig) {
    for (const auto& [p, r] : rank_of) ::kill(p, sig);
  };
  auto grace_end = [&] {
    return std::chrono::steady_clock::now() +
           std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(o.grace_seconds));
  };
  std::chrono::steady_clock::time_point kill_at{};
  bool stopping = false;
  while (!rank_of.empty()) {
    if (g_forward != 0) {
      stop_rest(g_forward);
      if (!stopping) {
        stopping = true;
        kill_at = grace_end();
      }
      if (result.exit_code == 0) {
        result.exit_code = 128 + g_forward;
        result.failure = str_cat("interrupted by signal ", g_forward);
      }
      g_forward = 0;
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0 && rank_of.count(pid)) {
      const int64_t r = rank_of.at(pid);
      rank_of.erase(pid);
      int code = 0;
      std::string why;
      if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        code = WEXITSTATUS(status);
        why = str_cat("rank ", r, " exited with code ", code);
      } else if (WIFSIGNALED(status)) {
        code = 128 + WTERMSIG(status);
        why = str_cat("rank ", r, " was killed by signal ", WTERMSIG(status));
      }
      if (code != 0 && result.exit_code == 0) {
        result.exit_code = code;
        result.failure = why;
      }
      if (code != 0 && !stopping) {
        stopping = true;
        stop_rest(SIGTERM);
        kill_at = grace_end();
      }
      continue;
    }
    if (stopping && std::chrono::steady_clock::now() >= kill_at) stop_rest(SIGKILL);
    std::this_thread::sleep_for(ms(20));
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  return result;
}

}  // namespace xfer::dist
