// Thread policy. LibTorch's intra-op pool and OpenBLAS's own pool compete for the same
// cores; tunekit's default gives the cores to OpenBLAS (where the GEMMs run) and keeps
// LibTorch's pool at one thread. A recipe's `threads:` section or the CLI overrides it.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace tunekit {

struct ThreadPolicy {
  int torch = 1;  // LibTorch intra-op threads
  int blas = 0;   // OpenBLAS threads; 0 = all cores
};

// Applies the policy and returns a one-line description ("torch 1, blas 2 (OpenBLAS)").
std::string apply_thread_policy(const ThreadPolicy& policy);

int hardware_cores();

// OpenBLAS picks its kernels for the CPU when it loads; a build that does not know the CPU (Debian's
// OpenBLAS 0.3.21 on Sapphire Rapids, for one) falls back to its generic SSE3 "Prescott" kernels,
// 4-6x slower than the CPU allows. Called first thing in main() by start_up (util/startup.h): when that happened and
// OPENBLAS_CORETYPE is unset, re-executes the program with OPENBLAS_CORETYPE set to the core the
// CPU supports (SkylakeX with AVX-512, Haswell with AVX2 + FMA), OpenBLAS's documented override.
// TUNEKIT_BLAS_CORE=keep leaves OpenBLAS's own choice. Returns only when no re-exec happens.
void select_blas_core(char** argv);
// The kernel set OpenBLAS runs ("SkylakeX", "Haswell", "Prescott" for its generic fallback);
// "" for another BLAS.
std::string openblas_core();
// OpenBLAS's core in use ("SkylakeX"), with a note when select_blas_core chose it; "" for
// another BLAS.
std::string blas_core_description();

// The threads tunekit's own kernels (the causal attention core, the fused LM loss's rows, the
// activation loops) split their work over: the cores the policy handed out, the larger of
// LibTorch's intra-op threads and OpenBLAS's. Between GEMMs OpenBLAS's threads only wait, so
// under the default policy (torch 1, blas all) these kernels would otherwise run on one core.
int kernel_threads();
// Sets kernel_threads() to n (1 keeps every kernel on its calling thread; 0 goes back to the
// policy's count). The environment variable TUNEKIT_KERNEL_THREADS=N sets it at start.
void set_kernel_threads(int n);

// Runs fn(begin, end) over consecutive ranges of [0, n), at least `grain` items each, on up to
// kernel_threads() threads (the caller's included; the others are started for the call). Returns
// when all are done; an exception thrown by fn in any of them is rethrown here. Which thread takes
// a range never changes a result as long as fn writes only its own items. With `serial_blas`, when
// more than one thread runs, OpenBLAS runs each GEMM on its calling thread for the duration (for
// kernels that issue small GEMMs from every thread, each on its own core).
void parallel_ranges(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn,
                     bool serial_blas = false);

}  // namespace tunekit
