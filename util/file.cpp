#include "util/file.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "util/error.h"

namespace tunekit {

void write_file_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    if (!out) throw Error(fmt::format("{}: write failed", tmp));
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace tunekit
