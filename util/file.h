// Files that survive a full disk, a kill and a second process: writes go to a temporary beside
// the target and are renamed over it only once every byte is on disk (each write, fsync and close
// checked); reads refuse what is not a regular file; a run directory is locked by one process.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tunekit {

// A file written in pieces to `<path>.tmp`, renamed over `path` by commit() only when every write,
// the fsync and the close succeeded; the directory is fsynced after the rename. Any failure throws
// Error("<path>: cannot write (<strerror>)") and removes the temporary, so `path` keeps its
// previous content. The destructor of an uncommitted file removes the temporary and never throws.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(const std::string& text) { write(text.data(), text.size()); }
  void commit();

  const std::string& path() const { return path_; }
  int64_t bytes_written() const { return written_; }

 private:
  [[noreturn]] void fail(const std::string& what, int err);
  std::string path_, tmp_;
  int fd_ = -1;
  int64_t written_ = 0;
};

// Writes `text` to `path` through an AtomicFile.
void write_file_atomic(const std::string& path, const std::string& text);

// A log that grows line by line (metrics.jsonl): each append is written whole and fdatasynced,
// or throws Error naming the file; a failed append truncates the file back to its last whole line.
class AppendFile {
 public:
  explicit AppendFile(std::string path);
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  void append(const std::string& text);

 private:
  std::string path_;
  int fd_ = -1;
};

// fsync of a directory, so that renames and creations in it survive a crash; errors name it.
void sync_directory(const std::string& dir);
// rename(2) of `from` to `to` (files or directories), then fsync of `to`'s directory.
void rename_synced(const std::string& from, const std::string& to);

// Test hook (fault injection in the write layer): after `bytes` more bytes have gone through
// AtomicFile/AppendFile, their writes fail with ENOSPC as on a full disk; -1 turns it off. The
// environment variable TUNEKIT_FAULT_ENOSPC_AFTER=<bytes> sets it for a whole process (CLI tests).
void set_write_fault(int64_t bytes);

// The size of `path` when it is a regular file (symlinks followed); otherwise one error naming
// it: "<path>: not found", "<path>: not a regular file (a FIFO)" — so a FIFO never hangs a reader
// and /dev/zero is never read until memory runs out.
int64_t regular_file_size(const std::string& path);
// A whole regular file of at most `max_bytes` bytes ("<path>: N bytes, more than the M this
// file may have" otherwise).
std::string read_file(const std::string& path, int64_t max_bytes);

// A whole JSON file (at most 64 MiB, regular); "<path>: cannot open" or "<path>: not valid JSON (...)".
nlohmann::json read_json_file(const std::string& path);

// An exclusive lock (flock) on `<dir>/.lock` for as long as the object lives; the file holds the
// holder's PID and what it does. A directory locked by another process is refused at once:
// "<dir> is in use by another tunekit process (pid 1234: train)". Released on destruction, and by
// the kernel when the process dies, so a killed run never leaves a stale lock.
class DirLock {
 public:
  DirLock(const std::string& dir, const std::string& what);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

// Whether another process holds `dir`'s DirLock now (its "pid N: what" in *holder when given).
bool dir_locked(const std::string& dir, std::string* holder = nullptr);

}  // namespace tunekit
