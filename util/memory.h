// Peak resident memory of this process, for benchmarks and sweep tables. Linux only: the
// peak (VmHWM) can be reset between phases through /proc/self/clear_refs. And the allocator
// policy: how freed memory goes back to the system.
#pragma once

#include <cstdint>
#include <string>

namespace tunekit {

// glibc's malloc serves a block above its mmap threshold (128 KiB, adapting up to 32 MiB) with
// its own mmap and unmaps it on free, and trims the heap's top once 128 KiB are free there. A
// training step frees and re-allocates the same hundreds of MiB every step (gradients,
// activations, logit chunks), so each step pays again for the kernel's zero-filled page faults:
// measured, a third of a GPT-2-small full fine-tuning step (README "Speed"). The policy keeps
// freed memory in the process for the next step (mmap threshold 1 GiB, the heap never trimmed:
// release_free_memory() gives it back where a caller knows the next phase is smaller; one block
// above 1 GiB, e.g. a float32 [vocab, d] gradient of a 3B-parameter model, is still mapped on its
// own and returned when freed);
// peak RSS grows by the heap's fragmentation (2-6 % measured). TUNEKIT_MALLOC=system keeps glibc's
// defaults, as does a malloc setting of the user's own (GLIBC_TUNABLES glibc.malloc.*,
// MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_). Called first thing in main() by start_up
// (util/startup.h); returns what was
// chosen ("memory: freed blocks kept for reuse (...)"), also available later from
// allocator_policy(). A TUNEKIT_MALLOC other than keep or system throws tunekit::Error.
std::string apply_allocator_policy();
std::string allocator_policy();

// Gives the heap's free memory back to the kernel (malloc_trim), e.g. between a sweep's cells.
void release_free_memory();

// Peak resident set size in MiB (0 when unavailable).
double peak_rss_mib();
// Minor page faults of this process so far (getrusage; 0 when unavailable). Each is a page the
// kernel handed over zero-filled: a step that faults often is paying for memory given back.
int64_t minor_page_faults();
// Starts a new peak measurement from the current RSS; false when the kernel does not allow it.
bool reset_peak_rss();

}  // namespace tunekit
