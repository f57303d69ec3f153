// `tunekit launch -n N -- train RECIPE ...`: N local ranks of this executable, each with the
// torchrun environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT), each line
// of their output prefixed with "[rank i] "; the first rank to fail stops the others.
#pragma once
#include <string>
#include <vector>

namespace tunekit::dist {

struct LaunchOptions {
  int nproc = 2;
  int port = 0;                   // 0: a free port (bound to port 0, then released)
  std::vector<std::string> args;  // the subcommand and its arguments ("train", "r.yaml", ...)
  std::string executable;         // default: this process's own (/proc/self/exe)
  int grace_seconds = 5;          // SIGTERM, then SIGKILL after this long
};

// A free TCP port on 127.0.0.1 (the kernel's choice for port 0).
int free_port();

// Runs the ranks to the end. Returns 0 when all exit 0, else the exit status of the first rank
// that failed (128 + signal when it was killed), after stopping the others and saying which rank
// failed, on stderr. Throws Error for bad options (N < 1, a subcommand other than train).
int launch(const LaunchOptions& options);

}  // namespace tunekit::dist
