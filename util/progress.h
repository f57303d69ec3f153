// Progress output: a redrawn bar (rate, loss, ETA) when stderr is a terminal, plain
// periodic lines otherwise (logs, CI).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace tunekit {

class Progress {
 public:
  // `total` units (e.g. optimizer steps); `plain_every`: units between plain lines.
  Progress(std::string label, int64_t total, int64_t plain_every, bool quiet = false);
  // Reports `done` units; `info` is appended (e.g. "loss 0.41  312 samples/s").
  void update(int64_t done, const std::string& info);
  // Clears the bar (on a TTY) so other lines can be printed.
  void clear();
  void finish(const std::string& info);
  static bool stderr_is_tty();

 private:
  std::string label_;
  int64_t total_, plain_every_, last_plain_ = -1;
  bool tty_, quiet_, drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
  int64_t start_done_ = -1;
};

std::string format_duration(double seconds);

}  // namespace tunekit
