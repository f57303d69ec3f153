#include "util/threads.h"

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <cstdlib>
#include <exception>
#include <thread>
#include <vector>

namespace tunekit {

int hardware_cores() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

namespace {

using SetThreadsFn = void (*)(int);
using GetThreadsFn = int (*)();

// OpenBLAS's thread count setter and getter, looked up once (null on another BLAS).
SetThreadsFn blas_set_threads() {
  static const auto fn = reinterpret_cast<SetThreadsFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  return fn;
}
GetThreadsFn blas_get_threads() {
  static const auto fn = reinterpret_cast<GetThreadsFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return fn;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The OpenBLAS core this CPU supports best among the ones tunekit picks, "" when none applies.
std::string supported_core() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return "";
}

// Whether OpenBLAS's own choice `current` is weaker than `target` (a generic fallback).
bool weaker_core(const std::string& current, const std::string& target) {
  const std::string c = lower(current);
  if (c.empty()) return false;  // not OpenBLAS
  for (const char* good : {"skylakex", "cooperlake", "sapphirerapids"})
    if (c == good) return false;
  if (target == "Haswell")
    for (const char* good : {"haswell", "zen"})
      if (c == good) return false;
  return true;
}

}  // namespace

std::string openblas_core() {
  using NameFn = char* (*)();
  auto name = reinterpret_cast<NameFn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return name && name() ? std::string(name()) : "";
}

void select_blas_core(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") || std::getenv("TUNEKIT_BLAS_CORE_FROM")) return;
  if (const char* keep = std::getenv("TUNEKIT_BLAS_CORE"); keep && std::string(keep) == "keep") return;
  const std::string current = openblas_core(), target = supported_core();
  if (target.empty() || !weaker_core(current, target)) return;
  setenv("OPENBLAS_CORETYPE", target.c_str(), 1);
  setenv("TUNEKIT_BLAS_CORE_FROM", current.c_str(), 1);
  execv("/proc/self/exe", argv);
  // The re-exec failed: carry on with OpenBLAS's own choice.
  unsetenv("OPENBLAS_CORETYPE");
}

std::string blas_core_description() {
  const std::string core = openblas_core();
  if (core.empty()) return "";
  const char* from = std::getenv("TUNEKIT_BLAS_CORE_FROM");
  return from ? fmt::format("{} (chosen by tunekit; OpenBLAS alone picked {})", core, from) : core;
}

std::string apply_thread_policy(const ThreadPolicy& policy) {
  int torch_threads = policy.torch > 0 ? policy.torch : hardware_cores();
  int blas_threads = policy.blas > 0 ? policy.blas : hardware_cores();
  torch::set_num_threads(torch_threads);
  // OpenBLAS is loaded by LibTorch through libblas.so.3; look its setter up at run time so
  // tunekit still works (slowly) on the reference BLAS.
  auto set_blas = blas_set_threads();
  std::string blas = "reference BLAS (install libopenblas0-pthread: it is ~30x faster)";
  if (set_blas) {
    set_blas(blas_threads);
    blas = fmt::format("{} (OpenBLAS, core {})", blas_threads, blas_core_description());
  }
  return fmt::format("torch {}, blas {}", torch_threads, blas);
}

namespace {

// set_kernel_threads's count; 0: the policy's. Starts from TUNEKIT_KERNEL_THREADS.
std::atomic<int>& kernel_threads_override() {
  static std::atomic<int> n{[] {
    const char* env = std::getenv("TUNEKIT_KERNEL_THREADS");
    return env ? std::max(0, std::atoi(env)) : 0;
  }()};
  return n;
}

}  // namespace

void set_kernel_threads(int threads) { kernel_threads_override().store(std::max(0, threads)); }

int kernel_threads() {
  if (const int n = kernel_threads_override().load(); n > 0) return n;
  const int blas = blas_get_threads() ? blas_get_threads()() : 1;
  return std::max({1, blas, torch::get_num_threads()});
}

namespace {

// The kernel threads beyond the caller's: started on first use and kept (so OpenBLAS's per-thread
// buffers are made once), asleep between calls. One call at a time: a call made while another runs
// (from another thread, or from inside a range) runs its ranges on its own thread instead.
class KernelPool {
 public:
  static KernelPool& get() {
    static auto* pool = new KernelPool;  // never destroyed: its threads may outlive static destructors
    return *pool;
  }

  // Runs task(t) for t in [0, threads): t = 0 on the calling thread, the others on the pool's.
  // Returns false (running nothing) when the pool is busy.
  bool run(int64_t threads, const std::function<void(int64_t)>& task) {
    std::unique_lock<std::mutex> busy(dispatch_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(m_);
      if (pid_ != getpid()) {  // a forked child inherits none of the parent's threads
        workers_.clear();      // (their handles are leaked on purpose: they are not joinable here)
        placed_.clear();
        pid_ = getpid();
      }
      while (int64_t(workers_.size()) < threads - 1) {
        const int64_t index = int64_t(workers_.size()) + 1;
        workers_.push_back(new std::thread([this, index] { loop(index); }));
        placed_.push_back(-1);
      }
      place(threads);
      task_ = &task;
      active_ = threads;
      pending_ = threads - 1;
      ++generation_;
    }
    start_.notify_all();
    task(0);
    std::unique_lock<std::mutex> lock(m_);
    done_.wait(lock, [this] { return pending_ == 0; });
    task_ = nullptr;
    return true;
  }

 private:
  void loop(int64_t index) {
    int64_t seen = 0;
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      start_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (index >= active_) continue;
      const auto* task = task_;
      lock.unlock();
      (*task)(index);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  // Each worker on an allowed core other than the caller's (called with m_ held): left to itself
  // the scheduler often wakes it beside the caller, since OpenBLAS's waiting threads poll the rest.
  void place(int64_t threads) {
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    std::vector<int> cores;
    const int here = sched_getcpu();
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &allowed) && c != here) cores.push_back(c);
    for (int64_t i = 0; i + 1 < threads && size_t(i) < cores.size(); ++i) {
      if (placed_[size_t(i)] == cores[size_t(i)]) continue;
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cores[size_t(i)], &one);
      if (pthread_setaffinity_np(workers_[size_t(i)]->native_handle(), sizeof one, &one) == 0)
        placed_[size_t(i)] = cores[size_t(i)];
    }
  }

  std::mutex dispatch_, m_;
  std::condition_variable start_, done_;
  std::vector<std::thread*> workers_;
  std::vector<int> placed_;  // the core each worker is pinned to, -1 when not
  pid_t pid_ = getpid();
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t generation_ = 0, active_ = 0, pending_ = 0;
};

}  // namespace

void parallel_ranges(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn, bool serial_blas) {
  if (n <= 0) return;
  const int64_t threads = std::min<int64_t>(kernel_threads(), std::max<int64_t>(1, n / std::max<int64_t>(1, grain)));
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  // OpenBLAS on one thread per caller while the ranges run, its count restored however they end.
  struct SerialBlas {
    int saved = 0;
    explicit SerialBlas(bool on) {
      if (on && blas_get_threads() && blas_set_threads() && (saved = blas_get_threads()()) > 1) blas_set_threads()(1);
    }
    ~SerialBlas() {
      if (saved > 1) blas_set_threads()(saved);
    }
  };
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  const std::function<void(int64_t)> range = [&](int64_t t) {
    try {
      fn(n * t / threads, n * (t + 1) / threads);
    } catch (...) {
      errors[size_t(t)] = std::current_exception();
    }
  };
  bool ran;
  {
    SerialBlas serial(serial_blas);
    ran = KernelPool::get().run(threads, range);
  }
  if (!ran) {
    fn(0, n);
    return;
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace tunekit
