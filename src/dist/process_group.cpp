#include "src/dist/process_group.h"

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cerrno>
#include <cstdlib>
#include <optional>

#include "util/error.h"

namespace tunekit::dist {

namespace {

// The variable `name` as an integer in [lo, hi]; `fallback` when unset (required: an Error).
int int_var(const EnvGetter& get, const char* name, int lo, int hi, std::optional<int> fallback,
            const std::string& why_required) {
  const char* raw = get(name);
  if (raw == nullptr || *raw == '\0') {
    if (fallback) return *fallback;
    throw Error(fmt::format("environment: {} is not set ({})", name, why_required));
  }
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(raw, &end, 10);
  if (errno != 0 || end == raw || *end != '\0' || v < lo || v > hi)
    throw Error(fmt::format("environment: {}=\"{}\" is not an integer in {}..{}", name, raw, lo, hi));
  return int(v);
}

// The first line of a (LibTorch, possibly multi-line) message, without c10's trailing source note.
std::string first_line(const std::string& msg) {
  size_t start = msg.find_first_not_of("\n ");
  if (start == std::string::npos) return msg;
  std::string line = msg.substr(start, msg.find('\n', start) - start);
  const size_t note = line.find(" Exception raised from ");
  return note == std::string::npos ? line : line.substr(0, note);
}

// The network device Gloo binds, chosen as torch.distributed does: GLOO_SOCKET_IFNAME's (first)
// interface when set; the loopback address when the master is on it (one machine); else the
// address this machine's hostname resolves to.
std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master_addr) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr && *ifname != '\0') {
    const std::string list = ifname;
    return c10d::ProcessGroupGloo::createDeviceForInterface(list.substr(0, list.find(',')));
  }
  if (master_addr == "localhost" || master_addr.rfind("127.", 0) == 0)
    return c10d::ProcessGroupGloo::createDeviceForHostname(master_addr);
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

}  // namespace

DistEnv parse_dist_env(const EnvGetter& get) {
  DistEnv env;
  constexpr int kMaxRanks = 1 << 16;
  env.world_size = int_var(get, "WORLD_SIZE", 1, kMaxRanks, 1, "");
  const std::string why = fmt::format("WORLD_SIZE={} asks for a process group", env.world_size);
  const std::optional<int> single = env.distributed() ? std::nullopt : std::optional<int>(0);
  env.rank = int_var(get, "RANK", 0, kMaxRanks, single, why);
  if (env.rank >= env.world_size)
    throw Error(fmt::format("environment: RANK={} is not below WORLD_SIZE={}", env.rank, env.world_size));
  if (!env.distributed()) return env;
  env.local_rank = int_var(get, "LOCAL_RANK", 0, env.world_size - 1, env.rank, why);
  const char* addr = get("MASTER_ADDR");
  if (addr == nullptr || *addr == '\0') throw Error(fmt::format("environment: MASTER_ADDR is not set ({})", why));
  env.master_addr = addr;
  env.master_port = int_var(get, "MASTER_PORT", 1, 65535, std::nullopt, why);
  const char* agent = get("TORCHELASTIC_USE_AGENT_STORE");
  env.agent_store = agent != nullptr && std::string(agent) == "True";
  if (env.agent_store) env.restart_count = std::to_string(int_var(get, "TORCHELASTIC_RESTART_COUNT", 0, 1 << 30, 0, ""));
  return env;
}

DistEnv dist_env_from_process() {
  return parse_dist_env([](const char* name) { return static_cast<const char*>(std::getenv(name)); });
}

std::chrono::milliseconds dist_timeout(const EnvGetter& get) {
  const char* raw = get("TUNEKIT_DIST_TIMEOUT_S");
  if (raw == nullptr || *raw == '\0') return std::chrono::minutes(kDefaultDistTimeoutMinutes);
  char* end = nullptr;
  errno = 0;
  const double s = std::strtod(raw, &end);
  if (errno != 0 || end == raw || *end != '\0' || !(s > 0) || s > 7 * 24 * 3600)
    throw Error(fmt::format("environment: TUNEKIT_DIST_TIMEOUT_S=\"{}\" is not a number of seconds in (0, 604800]",
                            raw));
  return std::chrono::milliseconds(int64_t(s * 1000));
}

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

ProcessGroup::ProcessGroup(const DistEnv& env, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()), env_(env), timeout_(timeout) {
  const std::string where = fmt::format("{}:{}", env.master_addr, env.master_port);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = env.rank == 0 && !env.agent_store;
    so.numWorkers = static_cast<size_t>(env.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    if (env.agent_store)  // as torch.distributed's env:// rendezvous does under torchrun
      impl_->store = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + env.restart_count, impl_->store);
  } catch (const std::exception& e) {
    throw Error(fmt::format("joining the process group: the store at {} (rank {} of {}, timeout {} s) failed: {}", where,
                            env.rank, env.world_size, timeout.count() / 1000.0, first_line(e.what())));
  }
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    options->devices.push_back(gloo_device(env.master_addr));
    options->threads = 2;
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env.rank, env.world_size, options);
  } catch (const std::exception& e) {
    throw Error(fmt::format("joining the process group: Gloo over {} (rank {} of {}, timeout {} s) failed: {}", where,
                            env.rank, env.world_size, timeout.count() / 1000.0, first_line(e.what())));
  }
}

ProcessGroup::~ProcessGroup() = default;

c10d::ProcessGroup& ProcessGroup::backend() { return *impl_->pg; }

void ProcessGroup::fail(const std::string& what, const std::exception& e) const {
  throw Error(fmt::format("{} failed on rank {} of {} (another rank died, or did not answer within the {} s timeout, "
                          "TUNEKIT_DIST_TIMEOUT_S): {}",
                          what, env_.rank, env_.world_size, timeout_.count() / 1000.0, first_line(e.what())));
}

void ProcessGroup::allreduce_sum(torch::Tensor& t, const std::string& what) {
  std::vector<torch::Tensor> ts{t};
  try {
    impl_->pg->allreduce(ts)->wait();
  } catch (const std::exception& e) {
    fail(what, e);
  }
}

void ProcessGroup::broadcast(torch::Tensor& t, int root, const std::string& what) {
  std::vector<torch::Tensor> ts{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  try {
    impl_->pg->broadcast(ts, o)->wait();
  } catch (const std::exception& e) {
    fail(what, e);
  }
}

void ProcessGroup::barrier(const std::string& what) {
  try {
    impl_->pg->barrier()->wait();
  } catch (const std::exception& e) {
    fail(what, e);
  }
}

double ProcessGroup::sum(double v, const std::string& what) {
  auto t = torch::full({1}, v, torch::kDouble);
  allreduce_sum(t, what);
  return t.item<double>();
}

int64_t ProcessGroup::from_rank0(int64_t v, const std::string& what) {
  auto t = torch::full({1}, v, torch::kLong);
  broadcast(t, 0, what);
  return t.item<int64_t>();
}

}  // namespace tunekit::dist
