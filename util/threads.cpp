#include "util/threads.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <thread>

namespace tunekit {

int hardware_cores() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

namespace {

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
  using SetFn = void (*)(int);
  auto set_blas = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  std::string blas = "reference BLAS (install libopenblas0-pthread: it is ~30x faster)";
  if (set_blas) {
    set_blas(blas_threads);
    blas = fmt::format("{} (OpenBLAS, core {})", blas_threads, blas_core_description());
  }
  return fmt::format("torch {}, blas {}", torch_threads, blas);
}

}  // namespace tunekit
