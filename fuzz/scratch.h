// What every fuzz target shares (fuzz/entry_points.h): a per-process scratch directory, in /dev/shm
// when there is one, where an input is written for the parsers that read files, and libFuzzer's
// entry, which accepts tunekit::Error and lets anything else escape as a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "util/error.h"

namespace tunekit::fuzz {

namespace fs = std::filesystem;

// This process's scratch directory for `name` (in /dev/shm when there is one), created on first
// use and removed at exit.
inline std::string scratch(const std::string& name) {
  static const fs::path root = [] {
    fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    fs::path r = base / ("tunekit-fuzz-" + std::to_string(getpid()));
    fs::create_directories(r);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(fs::path("/dev/shm") / ("tunekit-fuzz-" + std::to_string(getpid())), ec);
      fs::remove_all(fs::temp_directory_path() / ("tunekit-fuzz-" + std::to_string(getpid())), ec);
    });
    return r;
  }();
  fs::path d = root / name;
  fs::create_directories(d);
  return d.string();
}

inline void put(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

using Target = void (*)(const std::string&);

// libFuzzer's entry: the input as a string; tunekit::Error is the accepted outcome.
inline int run(Target target, const uint8_t* data, size_t size) {
  try {
    target(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace tunekit::fuzz
