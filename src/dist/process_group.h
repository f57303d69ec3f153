// Joining the ranks of a data-parallel run the way PyTorch does: the torchrun environment (RANK,
// LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) read and checked, a c10d TCPStore (rank 0 serves
// it) and a Gloo process group over it, whose collectives fail with one line naming the operation
// and the rank after a stated timeout instead of hanging.
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace c10d {
class ProcessGroup;
}

namespace tunekit::dist {

// The process's place in the run. Without WORLD_SIZE (or with WORLD_SIZE=1) a single process.
struct DistEnv {
  int rank = 0, local_rank = 0, world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  // torchrun's agent already serves the store at MASTER_ADDR:MASTER_PORT
  // (TORCHELASTIC_USE_AGENT_STORE=True): every rank is a client, under the attempt's prefix.
  bool agent_store = false;
  std::string restart_count = "0";  // TORCHELASTIC_RESTART_COUNT
  bool distributed() const { return world_size > 1; }
};

// Reads the variables through `get` (std::getenv by default; tests pass their own). Throws Error
// naming the variable and its value when one is malformed, missing while WORLD_SIZE > 1, or
// inconsistent (RANK >= WORLD_SIZE, a port outside 1..65535).
using EnvGetter = std::function<const char*(const char*)>;
DistEnv parse_dist_env(const EnvGetter& get);
DistEnv dist_env_from_process();

// How long a collective (and joining the group) waits for the other ranks before failing:
// TUNEKIT_DIST_TIMEOUT_S seconds when set (a positive number), else 30 minutes.
std::chrono::milliseconds dist_timeout(const EnvGetter& get);
inline constexpr int kDefaultDistTimeoutMinutes = 30;

// A Gloo process group (CPU tensors) joined through a TCPStore at MASTER_ADDR:MASTER_PORT.
class ProcessGroup {
 public:
  ProcessGroup(const DistEnv& env, std::chrono::milliseconds timeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return env_.rank; }
  int size() const { return env_.world_size; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // Collectives on contiguous CPU tensors (float32, float64, int64: Gloo rejects bfloat16), in
  // place, waited for. `what` names the operation in the error ("allreduce of the step 3 gradients").
  void allreduce_sum(torch::Tensor& t, const std::string& what);
  void broadcast(torch::Tensor& t, int root, const std::string& what);
  void barrier(const std::string& what);
  // A scalar summed over ranks; a flag / value as rank 0 has it.
  double sum(double v, const std::string& what);
  int64_t from_rank0(int64_t v, const std::string& what);

  // The c10d group, for asynchronous collectives (grad_sync), and the one-line error for a
  // c10d failure of `what`.
  c10d::ProcessGroup& backend();
  [[noreturn]] void fail(const std::string& what, const std::exception& e) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DistEnv env_;
  std::chrono::milliseconds timeout_;
};

}  // namespace tunekit::dist
