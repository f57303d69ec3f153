// Reading an already opened file descriptor whole (util/file.cpp): shared by read_file and the
// checkpoint reader, which opens its files relative to one directory descriptor.
#pragma once
#include <cstdint>
#include <string>

namespace tunekit {

// Reads the open descriptor `fd` of `path` whole and closes it. Refuses (tunekit::Error) what is
// not a regular file; a file over `max_bytes` is refused as "PATH: N bytes, TOO_BIG" when `too_big`
// is given, else read up to `max_bytes`.
std::string read_descriptor(int fd, const std::string& path, int64_t max_bytes, const std::string& too_big = "");

}  // namespace tunekit
