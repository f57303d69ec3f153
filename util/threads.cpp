#include "util/threads.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <thread>

namespace tunekit {

int hardware_cores() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
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
    blas = fmt::format("{} (OpenBLAS)", blas_threads);
  }
  return fmt::format("torch {}, blas {}", torch_threads, blas);
}

}  // namespace tunekit
