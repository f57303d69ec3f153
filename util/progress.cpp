#include "util/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace tunekit {

bool Progress::stderr_is_tty() { return isatty(fileno(stderr)) != 0; }

std::string format_duration(double s) {
  if (s < 0) s = 0;
  int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{:.1f}s", s);
}

Progress::Progress(std::string label, int64_t total, int64_t plain_every, bool quiet)
    : label_(std::move(label)), total_(total), plain_every_(plain_every > 0 ? plain_every : 1),
      tty_(stderr_is_tty()), quiet_(quiet), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

void Progress::update(int64_t done, const std::string& info) {
  if (quiet_) return;
  auto now = std::chrono::steady_clock::now();
  if (start_done_ < 0) {
    start_done_ = done;
    start_ = now;
  }
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = elapsed > 0 ? (done - start_done_) / elapsed : 0;
  std::string eta = rate > 0 ? format_duration((total_ - done) / rate) : "?";
  if (tty_) {
    if (std::chrono::duration<double>(now - last_draw_).count() < 0.1 && done < total_) return;
    last_draw_ = now;
    const int width = 24;
    int filled = total_ > 0 ? static_cast<int>(width * done / total_) : 0;
    std::string bar(filled, '#');
    bar += std::string(width - filled, '.');
    std::fprintf(stderr, "\r\033[K%s [%s] %lld/%lld  %s  eta %s", label_.c_str(), bar.c_str(), (long long)done,
                 (long long)total_, info.c_str(), eta.c_str());
    std::fflush(stderr);
    drawn_ = true;
  } else if (done / plain_every_ != last_plain_ / plain_every_ || done == total_) {
    if (done == last_plain_) return;
    last_plain_ = done;
    std::fprintf(stderr, "%s %lld/%lld  %s  eta %s\n", label_.c_str(), (long long)done, (long long)total_,
                 info.c_str(), eta.c_str());
  }
}

void Progress::clear() {
  if (tty_ && drawn_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    drawn_ = false;
  }
}

void Progress::finish(const std::string& info) {
  if (quiet_) return;
  clear();
  std::fprintf(stderr, "%s done: %s\n", label_.c_str(), info.c_str());
}

}  // namespace tunekit
