#pragma once
/// \file
/// Scale-out on PyTorch's own distributed engine, c10d: rendezvous through a
/// TCPStore from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
/// MASTER_ADDR, MASTER_PORT), a Gloo process group on CPU, and the few
/// collectives xfer needs. With one process every call is a no-op, so library
/// code calls them unconditionally.
///
/// The model: every rank runs the same command on the same data; work is split
/// by rows (samples) in whole blocks, results are gathered so that every rank
/// holds the same numbers, and only rank 0 writes files.

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace xfer::dist {

/// Where this process stands in a distributed run, as launchers describe it.
struct Env {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  /// TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent hosts the store, so
  /// rank 0 joins it as a client instead of serving it.
  bool agent_store = false;

  /// Reads the variables; no WORLD_SIZE means one process. Malformed or
  /// inconsistent values are xfer::UsageError naming the variable.
  static Env from_environment();
};

/// Joins the process group (nothing to do for world size 1). `timeout` bounds
/// the rendezvous and every collective, so a rank that dies or hangs makes the
/// others fail with xfer::Error naming it instead of waiting forever.
void init(const Env& env, std::chrono::milliseconds timeout);
/// Leaves the group (also at exit). Safe to call when not initialised.
void shutdown();

bool active();  ///< more than one process
int64_t rank();
int64_t world_size();
inline bool is_main() { return rank() == 0; }

/// Sums each tensor across ranks, in place (CPU tensors). Tensors of one dtype
/// travel together in flat buckets of at most `bucket_bytes`, as torch's DDP
/// reducer does, so many small gradients cost few messages.
void all_reduce_sum(std::vector<torch::Tensor>& tensors, int64_t bucket_bytes = 25 << 20);
void all_reduce_sum(torch::Tensor& tensor);
/// Copies rank `root`'s tensors to every rank, in place.
void broadcast(std::vector<torch::Tensor>& tensors, int64_t root = 0);
/// Every rank's rows (dim 0; counts may differ) concatenated in rank order, on every rank.
torch::Tensor all_gather_rows(const torch::Tensor& local);
void barrier();

/// The rows [begin, end) of n this rank handles: contiguous, in rank order,
/// cut at multiples of `block` so that batches are the same as in one process.
std::pair<int64_t, int64_t> shard(int64_t n, int64_t block);
/// The same for a given rank of `world` processes.
std::pair<int64_t, int64_t> shard(int64_t n, int64_t block, int64_t rank, int64_t world);

/// `xfer launch`: starts `nproc` local copies of `command` with the torchrun
/// environment (MASTER_PORT 0 = a free port), forwards SIGINT and SIGTERM to
/// them, and when one fails stops the others.
struct LaunchOptions {
  int64_t nproc = 2;
  std::vector<std::string> command;  ///< program and arguments
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 0;
  double grace_seconds = 10;  ///< after a failure: SIGTERM the rest, SIGKILL after this long
};
struct LaunchResult {
  int exit_code = 0;  ///< 0 when every rank succeeded, else the first failure's code
  std::string failure;  ///< "rank R exited with code C" / "rank R was killed by signal S"
};
LaunchResult launch(const LaunchOptions& options);

}  // namespace xfer::dist
