#include "util/file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/fd_read.h"

namespace fs = std::filesystem;

namespace tunekit {

namespace {

// Bytes left before the injected ENOSPC (-1: no fault). Initialised from the environment once.
std::atomic<int64_t>& fault_budget() {
  static std::atomic<int64_t> budget([] {
    const char* v = std::getenv("TUNEKIT_FAULT_ENOSPC_AFTER");
    if (!v || !*v) return int64_t(-1);
    char* end = nullptr;
    long long n = std::strtoll(v, &end, 10);
    return (*end == '\0' && n >= 0) ? int64_t(n) : int64_t(-1);
  }());
  return budget;
}

// write(2) of all `n` bytes, retrying short writes and EINTR; 0 or the errno of the failure.
int write_all(int fd, const char* p, size_t n) {
  auto& budget = fault_budget();
  while (n > 0) {
    size_t chunk = n;
    int64_t left = budget.load();
    if (left >= 0) {
      if (left == 0) return ENOSPC;
      chunk = std::min<size_t>(chunk, static_cast<size_t>(left));
    }
    ssize_t w = ::write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (left >= 0) budget.fetch_sub(w);
    p += w;
    n -= static_cast<size_t>(w);
  }
  return 0;
}

std::string parent_of(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a plain file";
}

}  // namespace

void set_write_fault(int64_t bytes) { fault_budget().store(bytes < 0 ? -1 : bytes); }

// --- AtomicFile ---

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    throw Error(fmt::format("{}: cannot write ({})", path_, std::strerror(err)));
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) ::unlink(tmp_.c_str());  // uncommitted: the target keeps its old content
}

void AtomicFile::fail(const std::string& what, int err) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  tmp_.clear();
  throw Error(fmt::format("{}: cannot {} ({}); the previous version, if any, is unchanged", path_, what,
                          std::strerror(err)));
}

void AtomicFile::write(const void* data, size_t n) {
  if (fd_ < 0) throw Error(fmt::format("{}: write after commit", path_));
  if (int err = write_all(fd_, static_cast<const char*>(data), n)) fail("write", err);
  written_ += static_cast<int64_t>(n);
}

void AtomicFile::commit() {
  if (fd_ < 0) throw Error(fmt::format("{}: committed twice", path_));
  if (::fsync(fd_) != 0) fail("write (fsync)", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("write (close)", errno);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("rename into place", errno);
  tmp_.clear();
  sync_directory(parent_of(path_));
}

void write_file_atomic(const std::string& path, const std::string& text) {
  AtomicFile file(path);
  file.write(text);
  file.commit();
}

// --- AppendFile ---

AppendFile::AppendFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    throw Error(fmt::format("{}: cannot open for writing ({})", path_, std::strerror(err)));
  }
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::append(const std::string& text) {
  struct stat st {};
  const off_t before = ::fstat(fd_, &st) == 0 ? st.st_size : -1;
  int err = write_all(fd_, text.data(), text.size());
  if (!err && ::fdatasync(fd_) != 0) err = errno;
  if (err) {
    if (before >= 0 && ::ftruncate(fd_, before) != 0) {
      // nothing more to do: the error below is what matters
    }
    throw Error(fmt::format("{}: cannot write ({})", path_, std::strerror(err)));
  }
}

// --- directories ---

void sync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    throw Error(fmt::format("{}: cannot open directory ({})", dir, std::strerror(err)));
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) throw Error(fmt::format("{}: cannot sync directory ({})", dir, std::strerror(err)));
}

void rename_synced(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    const int err = errno;
    throw Error(fmt::format("cannot rename {} to {} ({})", from, to, std::strerror(err)));
  }
  sync_directory(parent_of(to));
}

// --- reading ---

int64_t regular_file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) throw Error(fmt::format("{}: not found", path));
    throw Error(fmt::format("{}: cannot open ({})", path, std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) throw Error(fmt::format("{}: not a regular file ({})", path, kind_of(st.st_mode)));
  return static_cast<int64_t>(st.st_size);
}

std::string read_file(const std::string& path, int64_t max_bytes) {
  const int64_t size = regular_file_size(path);
  if (size > max_bytes)
    throw Error(fmt::format("{}: {} bytes, more than the {} this file may have", path, size, max_bytes));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    throw Error(fmt::format("{}: cannot open ({})", path, std::strerror(err)));
  }
  return read_descriptor(fd, path, max_bytes);  // (replaced between the stat and the open: refused)
}

std::string read_descriptor(int fd, const std::string& path, int64_t max_bytes, const std::string& too_big) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(fmt::format("{}: not a regular file", path));
  }
  if (!too_big.empty() && st.st_size > max_bytes) {
    ::close(fd);
    throw Error(fmt::format("{}: {} bytes, {}", path, static_cast<int64_t>(st.st_size), too_big));
  }
  std::string out;
  out.resize(static_cast<size_t>(std::min<int64_t>(st.st_size, max_bytes)));
  size_t got = 0;
  while (got < out.size()) {
    ssize_t r = ::read(fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

nlohmann::json read_json_file(const std::string& path) {
  std::string text;
  try {
    text = read_file(path, int64_t(64) << 20);
  } catch (const Error& e) {
    if (std::string(e.what()).find(": not found") != std::string::npos)
      throw Error(fmt::format("{}: cannot open", path));
    throw;
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON ({})", path, e.what()));
  }
}

// --- DirLock ---

namespace {
std::string lock_path(const std::string& dir) { return (fs::path(dir) / ".lock").string(); }
std::string read_holder(int fd) {
  char buf[256];
  ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  std::string s(buf, n > 0 ? static_cast<size_t>(n) : 0);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? std::string("pid unknown") : s;
}
}  // namespace

DirLock::DirLock(const std::string& dir, const std::string& what) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create directory ({})", dir, ec.message()));
  const std::string path = lock_path(dir);
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    throw Error(fmt::format("{}: cannot open lock file ({})", path, std::strerror(err)));
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder = read_holder(fd_);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw Error(fmt::format("{} is in use by another tunekit process ({}); wait for it to finish or stop it",
                              dir, holder));
    throw Error(fmt::format("{}: cannot lock ({})", path, std::strerror(err)));
  }
  const std::string me = fmt::format("pid {}: {}\n", static_cast<long>(::getpid()), what);
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    // the lock holds without the note; a second process then reports "pid unknown"
  }
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

bool dir_locked(const std::string& dir, std::string* holder) {
  int fd = ::open(lock_path(dir).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool locked = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  if (locked && holder) *holder = read_holder(fd);
  ::close(fd);
  return locked;
}

}  // namespace tunekit
