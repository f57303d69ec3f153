// Peak resident memory of this process, for benchmarks and sweep tables. Linux only: the
// peak (VmHWM) can be reset between phases through /proc/self/clear_refs.
#pragma once

namespace tunekit {

// Peak resident set size in MiB (0 when unavailable).
double peak_rss_mib();
// Starts a new peak measurement from the current RSS; false when the kernel does not allow it.
bool reset_peak_rss();

}  // namespace tunekit
