#include "src/dist/launch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "util/error.h"

namespace tunekit::dist {

namespace {

volatile sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int sig) { g_stop_signal = sig; }

// One rank's process and the two pipes its stdout and stderr come through.
struct Child {
  pid_t pid = -1;
  int out = -1, err = -1;         // read ends (-1 once closed)
  std::string out_buf, err_buf;   // the current unfinished line of each
  bool exited = false;
  int status = 0;
  int64_t order = -1;  // when it was reaped, among the ranks (0: first)
};

void write_all(int fd, const std::string& s) {
  size_t at = 0;
  while (at < s.size()) {
    ssize_t n = ::write(fd, s.data() + at, s.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    at += size_t(n);
  }
}

// Writes the whole lines of `buf` to `fd`, each prefixed with "[rank i] "; with `flush`, the
// unfinished rest too.
void emit_lines(std::string& buf, int fd, int rank, bool flush) {
  std::string out;
  size_t start = 0, nl;
  while ((nl = buf.find('\n', start)) != std::string::npos) {
    out += fmt::format("[rank {}] ", rank) + buf.substr(start, nl - start + 1);
    start = nl + 1;
  }
  buf.erase(0, start);
  if (flush && !buf.empty()) {
    out += fmt::format("[rank {}] {}\n", rank, buf);
    buf.clear();
  }
  if (!out.empty()) write_all(fd, out);
}

// Reads what is there from one pipe; closes it at end of file.
void drain(int& fd, std::string& buf, int out_fd, int rank) {
  char chunk[4096];
  ssize_t n = ::read(fd, chunk, sizeof chunk);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    ::close(fd);
    fd = -1;
    emit_lines(buf, out_fd, rank, /*flush=*/true);
    return;
  }
  buf.append(chunk, size_t(n));
  emit_lines(buf, out_fd, rank, /*flush=*/false);
}

// Starts rank `rank` of `world`: this executable with `args` and the torchrun environment.
Child spawn(const LaunchOptions& o, int rank, int port) {
  int out[2], err[2];
  if (::pipe(out) != 0 || ::pipe(err) != 0) throw Error(fmt::format("launch: pipe failed ({})", std::strerror(errno)));
  const pid_t pid = ::fork();
  if (pid < 0) throw Error(fmt::format("launch: fork failed ({})", std::strerror(errno)));
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    ::close(out[0]), ::close(out[1]), ::close(err[0]), ::close(err[1]);
    ::setenv("RANK", std::to_string(rank).c_str(), 1);
    ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
    ::setenv("WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
    ::setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
    ::setenv("MASTER_ADDR", "127.0.0.1", 1);
    ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(o.executable.c_str()));
    for (const auto& a : o.args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(o.executable.c_str(), argv.data());
    std::string msg = fmt::format("launch: cannot run {} ({})\n", o.executable, std::strerror(errno));
    write_all(STDERR_FILENO, msg);
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  Child c;
  c.pid = pid;
  c.out = out[0];
  c.err = err[0];
  return c;
}

// The exit status a launch returns for a rank's wait status (128 + signal when killed).
int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

std::string describe(int status) {
  return WIFEXITED(status) ? fmt::format("exited with status {}", WEXITSTATUS(status))
                           : fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
}

// Polls the pipes for up to `ms` and reaps the ranks that ended.
void pump(std::vector<Child>& children, int ms) {
  std::vector<pollfd> fds;
  std::vector<std::pair<size_t, bool>> who;  // child, is stderr
  for (size_t i = 0; i < children.size(); ++i) {
    if (children[i].out >= 0) fds.push_back({children[i].out, POLLIN, 0}), who.emplace_back(i, false);
    if (children[i].err >= 0) fds.push_back({children[i].err, POLLIN, 0}), who.emplace_back(i, true);
  }
  if (!fds.empty() && ::poll(fds.data(), fds.size(), ms) > 0) {
    for (size_t k = 0; k < fds.size(); ++k) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Child& c = children[who[k].first];
      if (who[k].second)
        drain(c.err, c.err_buf, STDERR_FILENO, int(who[k].first));
      else
        drain(c.out, c.out_buf, STDOUT_FILENO, int(who[k].first));
    }
  } else if (fds.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  }
  int64_t reaped = 0;
  for (const auto& c : children) reaped += c.exited ? 1 : 0;
  for (auto& c : children) {
    if (c.exited) continue;
    int status = 0;
    if (::waitpid(c.pid, &status, WNOHANG) == c.pid) c.exited = true, c.status = status, c.order = reaped++;
  }
}

// The rank that failed first (-1: none has): the first reaped with a non-zero status.
int first_failure(const std::vector<Child>& children) {
  int first = -1;
  for (size_t i = 0; i < children.size(); ++i)
    if (children[i].exited && children[i].status != 0 && (first < 0 || children[i].order < children[first].order))
      first = int(i);
  return first;
}

// SIGTERM to the ranks still running, SIGKILL to those left after `grace` seconds; then their
// output is drained and they are reaped.
void stop_all(std::vector<Child>& children, int grace) {
  for (auto& c : children)
    if (!c.exited) ::kill(c.pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(grace);
  auto running = [&] {
    for (auto& c : children)
      if (!c.exited) return true;
    return false;
  };
  while (running() && std::chrono::steady_clock::now() < deadline) pump(children, 50);
  for (auto& c : children)
    if (!c.exited) ::kill(c.pid, SIGKILL);
  while (running()) pump(children, 50);
}

bool pipes_open(const std::vector<Child>& children) {
  for (const auto& c : children)
    if (c.out >= 0 || c.err >= 0) return true;
  return false;
}

}  // namespace

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(fmt::format("launch: socket failed ({})", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    throw Error(fmt::format("launch: cannot find a free port on 127.0.0.1 ({})", why));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

int launch(const LaunchOptions& options) {
  LaunchOptions o = options;
  if (o.nproc < 1 || o.nproc > 1024) throw Error(fmt::format("launch: -n {} is not a number of ranks in 1..1024", o.nproc));
  if (o.args.empty() || o.args[0] != "train")
    throw Error(fmt::format("launch: the command after -- must be `train RECIPE [overrides...]` (got \"{}\")",
                            o.args.empty() ? std::string() : o.args[0]));
  if (o.port < 0 || o.port > 65535) throw Error(fmt::format("launch: --port {} is not in 0..65535", o.port));
  if (o.executable.empty()) o.executable = "/proc/self/exe";
  const int port = o.port > 0 ? o.port : free_port();
  ::signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  std::vector<Child> children;
  for (int r = 0; r < o.nproc; ++r) children.push_back(spawn(o, r, port));
  int failed = -1;  // the first rank that failed
  for (;;) {
    pump(children, 100);
    bool all_done = true;
    for (const auto& c : children) all_done = all_done && c.exited;
    failed = first_failure(children);
    if (failed >= 0 || g_stop_signal != 0 || all_done) break;
  }
  if (failed >= 0 || g_stop_signal != 0) {
    const std::string why = failed >= 0 ? fmt::format("rank {} {}", failed, describe(children[failed].status))
                                        : fmt::format("launch got signal {}", int(g_stop_signal));
    write_all(STDERR_FILENO, fmt::format("launch: {}; stopping the other ranks\n", why));
    stop_all(children, o.grace_seconds);
  }
  while (pipes_open(children)) pump(children, 50);
  if (failed >= 0) {
    std::string others;
    for (size_t i = 0; i < children.size(); ++i)
      if (int(i) != failed) others += fmt::format("; rank {} {}", i, describe(children[i].status));
    write_all(STDERR_FILENO,
              fmt::format("launch: failed: rank {} {} first{}\n", failed, describe(children[failed].status), others));
    return exit_code(children[failed].status);
  }
  return g_stop_signal != 0 ? 128 + int(g_stop_signal) : 0;
}

}  // namespace tunekit::dist
