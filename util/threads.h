// Thread policy. LibTorch's intra-op pool and OpenBLAS's own pool compete for the same
// cores; tunekit's default gives the cores to OpenBLAS (where the GEMMs run) and keeps
// LibTorch's pool at one thread. A recipe's `threads:` section or the CLI overrides it.
#pragma once
#include <string>

namespace tunekit {

struct ThreadPolicy {
  int torch = 1;  // LibTorch intra-op threads
  int blas = 0;   // OpenBLAS threads; 0 = all cores
};

// Applies the policy and returns a one-line description ("torch 1, blas 2 (OpenBLAS)").
std::string apply_thread_policy(const ThreadPolicy& policy);

int hardware_cores();

}  // namespace tunekit
