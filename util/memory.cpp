#include "util/memory.h"

#include <malloc.h>
#include <sys/resource.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "util/error.h"

namespace tunekit {

namespace {
std::string chosen = "memory: glibc's malloc defaults (apply_allocator_policy not called)";
}  // namespace

std::string apply_allocator_policy() {
  const char* env = std::getenv("TUNEKIT_MALLOC");
  const std::string want = env ? env : "keep";
  if (want != "keep" && want != "system")
    throw Error("TUNEKIT_MALLOC: '" + want + "' is not one of keep, system");
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  const bool users_own = (tunables && std::string(tunables).find("glibc.malloc.") != std::string::npos) ||
                         std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TRIM_THRESHOLD_");
  if (want == "system") {
    chosen = "memory: glibc's malloc defaults (TUNEKIT_MALLOC=system)";
  } else if (users_own) {
    chosen = "memory: glibc's malloc as the environment sets it (GLIBC_TUNABLES / MALLOC_*_)";
  } else {
#ifdef __GLIBC__
    constexpr int kGiB = 1 << 30;
    // A trim threshold of -1 never trims (mallopt(3)). Any finite one is passed by some model: a
    // tied head's [vocab, d] gradients freed together at the heap's top (2 x 544 MiB at
    // Qwen2.5-0.5B's shape) went back to the kernel every step at 1 GiB.
    const bool ok = mallopt(M_MMAP_THRESHOLD, kGiB) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1;
    chosen = ok ? "memory: freed blocks kept for reuse (malloc's mmap threshold 1 GiB, the heap never trimmed; "
                  "TUNEKIT_MALLOC=system: glibc's defaults)"
                : "memory: glibc's malloc defaults (this glibc refused the thresholds)";
#else
    chosen = "memory: the C library's malloc defaults (not glibc)";
#endif
  }
  return chosen;
}

std::string allocator_policy() { return chosen; }

double peak_rss_mib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // "VmHWM:  123456 kB"
  return 0;
}

int64_t minor_page_faults() {
  rusage u{};
  return getrusage(RUSAGE_SELF, &u) == 0 ? static_cast<int64_t>(u.ru_minflt) : 0;
}

void release_free_memory() {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace tunekit
