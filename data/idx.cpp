#include "data/idx.h"

#include <fmt/format.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <limits>
#include <vector>

#include "util/error.h"

namespace tunekit::data {

namespace {
// Reads the whole file, inflating it if it is gzip (zlib's gz* functions pass raw data through).
std::vector<uint8_t> read_all(const std::string& path) {
  if (!std::filesystem::exists(path)) throw Error(fmt::format("{}: file not found", path));
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw Error(fmt::format("{}: cannot open", path));
  std::vector<uint8_t> buf;
  uint8_t chunk[1 << 16];
  while (true) {
    int n = gzread(f, chunk, sizeof(chunk));
    if (n < 0) {
      int errnum = 0;
      std::string msg = gzerror(f, &errnum);
      gzclose(f);
      throw Error(fmt::format("{}: corrupt or truncated gzip data ({})", path, msg));
    }
    if (n == 0) break;
    buf.insert(buf.end(), chunk, chunk + n);
  }
  int errnum = 0;
  const char* msg = gzerror(f, &errnum);
  if (errnum != Z_OK && errnum != Z_STREAM_END) {
    std::string m = msg;
    gzclose(f);
    throw Error(fmt::format("{}: corrupt or truncated gzip data ({})", path, m));
  }
  gzclose(f);
  return buf;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
}  // namespace

torch::Tensor read_idx(const std::string& path) {
  std::vector<uint8_t> buf = read_all(path);
  if (buf.size() < 4) throw Error(fmt::format("{}: truncated IDX file ({} bytes, no header)", path, buf.size()));
  if (buf[0] != 0 || buf[1] != 0)
    throw Error(fmt::format("{}: not an IDX file (bad magic {:02x}{:02x})", path, buf[0], buf[1]));
  if (buf[2] != 0x08) throw Error(fmt::format("{}: unsupported IDX element type 0x{:02x} (only uint8)", path, buf[2]));
  const size_t ndim = buf[3];
  if (ndim == 0 || ndim > 4) throw Error(fmt::format("{}: unsupported IDX rank {}", path, ndim));
  const size_t header = 4 + 4 * ndim;
  if (buf.size() < header) throw Error(fmt::format("{}: truncated IDX header", path));
  std::vector<int64_t> shape;
  size_t count = 1;
  for (size_t i = 0; i < ndim; ++i) {
    uint32_t d = be32(&buf[4 + 4 * i]);
    shape.push_back(d);
    if (d != 0 && count > std::numeric_limits<size_t>::max() / d)  // the count would wrap around
      throw Error(fmt::format("{}: truncated IDX file: header says more than 2^64 values, file holds {}", path,
                              buf.size() - header));
    count *= d;
  }
  if (buf.size() - header < count)
    throw Error(fmt::format("{}: truncated IDX file: header says {} values, file holds {}", path, count,
                            buf.size() - header));
  if (buf.size() - header > count)
    throw Error(fmt::format("{}: IDX file has {} trailing bytes", path, buf.size() - header - count));
  auto t = torch::empty(shape, torch::kUInt8);
  if (count > 0) std::memcpy(t.data_ptr<uint8_t>(), buf.data() + header, count);  // an empty tensor has no data
  return t;
}

void write_idx(const std::string& path, const torch::Tensor& t) {
  auto c = t.to(torch::kUInt8).contiguous();
  std::vector<uint8_t> header{0, 0, 0x08, static_cast<uint8_t>(c.dim())};
  for (auto d : c.sizes())
    for (int s = 24; s >= 0; s -= 8) header.push_back(static_cast<uint8_t>((uint64_t(d) >> s) & 0xff));
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(fmt::format("{}: cannot write", tmp));
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            std::fwrite(c.data_ptr<uint8_t>(), 1, c.numel(), f) == size_t(c.numel());
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) throw Error(fmt::format("{}: write failed", tmp));
  std::filesystem::rename(tmp, path);
}

}  // namespace tunekit::data
