#include "data/idx.h"

#include <fmt/format.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "util/error.h"
#include "util/file.h"

namespace tunekit::data {

namespace {

// The largest IDX payload tunekit reads (Fashion-MNIST's training images are 47 MB).
constexpr uint64_t kMaxIdxItems = uint64_t(8) << 30;

struct IdxHeader {
  std::vector<int64_t> shape;
  size_t bytes = 0;    // 4 + 4 * rank
  uint64_t items = 0;  // product of the dimensions; valid only when !overflow
  bool overflow = false;
  std::string dims() const {
    std::string s;
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
    return s;
  }
};

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// The header at the start of `p` (n bytes available); magic, type, rank and dimensions checked.
IdxHeader parse_header(const std::string& path, const uint8_t* p, size_t n) {
  if (n < 4) throw Error(fmt::format("{}: truncated IDX file ({} bytes, no header)", path, n));
  if (p[0] != 0 || p[1] != 0) throw Error(fmt::format("{}: not an IDX file (bad magic {:02x}{:02x})", path, p[0], p[1]));
  if (p[2] != 0x08) throw Error(fmt::format("{}: unsupported IDX element type 0x{:02x} (only uint8)", path, p[2]));
  IdxHeader h;
  const size_t ndim = p[3];
  if (ndim == 0 || ndim > 4) throw Error(fmt::format("{}: unsupported IDX rank {} (1 to 4)", path, ndim));
  h.bytes = 4 + 4 * ndim;
  if (n < h.bytes) throw Error(fmt::format("{}: truncated IDX header ({} of its {} bytes)", path, n, h.bytes));
  h.items = 1;
  for (size_t i = 0; i < ndim; ++i) {
    const uint32_t d = be32(p + 4 + 4 * i);
    if (d == 0) throw Error(fmt::format("{}: IDX dimension {} is 0 (an empty file)", path, i));
    h.shape.push_back(d);
    h.overflow = h.overflow || __builtin_mul_overflow(h.items, uint64_t(d), &h.items);
  }
  h.overflow = h.overflow || h.items > kMaxIdxItems;
  return h;
}

// Throws unless a file of `have` bytes holds exactly the header and its items.
void check_size(const std::string& path, const IdxHeader& h, uint64_t have, const char* what) {
  const std::string says = fmt::format("{}: IDX header says {} items, the file has {} bytes{}", path, h.dims(), have, what);
  if (h.overflow) throw Error(fmt::format("{} (more than the {} an IDX file may hold)", says, kMaxIdxItems));
  const uint64_t expected = h.bytes + h.items;
  if (have < expected) throw Error(fmt::format("{} ({} expected: truncated)", says, expected));
  if (have > expected) throw Error(fmt::format("{} ({} expected: {} trailing bytes)", says, expected, have - expected));
}

torch::Tensor to_tensor(const IdxHeader& h, const uint8_t* data) {
  auto t = torch::empty(h.shape, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), data, h.items);
  return t;
}

// The first `n` bytes (fewer when the file is shorter) of the regular file `path`.
std::string read_prefix(const std::string& path, size_t n) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    throw Error(fmt::format("{}: cannot open ({})", path, std::strerror(err)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {  // replaced since regular_file_size
    ::close(fd);
    throw Error(fmt::format("{}: not a regular file", path));
  }
  std::string out(n, '\0');
  ssize_t r;
  do r = ::pread(fd, out.data(), n, 0);
  while (r < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (r < 0) throw Error(fmt::format("{}: cannot read ({})", path, std::strerror(err)));
  out.resize(static_cast<size_t>(r));
  return out;
}

// gzread of up to n bytes; throws naming the file on corrupt data.
size_t gz_read(gzFile f, const std::string& path, uint8_t* out, size_t n) {
  size_t got = 0;
  while (got < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, 1 << 20));
    int r = gzread(f, out + got, chunk);
    if (r < 0) {
      int errnum = 0;
      throw Error(fmt::format("{}: corrupt or truncated gzip data ({})", path, gzerror(f, &errnum)));
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  int errnum = 0;
  const char* msg = gzerror(f, &errnum);
  if (errnum != Z_OK && errnum != Z_STREAM_END)
    throw Error(fmt::format("{}: corrupt or truncated gzip data ({})", path, msg));
  return got;
}

// A gzip-compressed IDX file: the header is read first; the data buffer grows only as data
// arrives, so a header claiming billions of items in a small file allocates nothing.
torch::Tensor read_gzip_idx(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw Error(fmt::format("{}: cannot open", path));
  std::unique_ptr<gzFile_s, int (*)(gzFile)> closer(f, gzclose);
  uint8_t head[20];
  size_t n = gz_read(f, path, head, 4);
  if (n == 4 && head[3] <= 4) n += gz_read(f, path, head + 4, 4 * size_t(head[3]));
  IdxHeader h = parse_header(path, head, n);
  if (h.overflow) check_size(path, h, regular_file_size(path), " compressed");
  std::vector<uint8_t> data;
  const uint64_t want = h.items + 1;  // one byte more than the items, to see trailing data
  while (data.size() < want) {
    const size_t old = data.size();
    const size_t ask = std::min<uint64_t>(want, std::max<uint64_t>(uint64_t(old) * 2, 1 << 20)) - old;
    data.resize(old + ask);
    const size_t got = gz_read(f, path, data.data() + old, ask);
    data.resize(old + got);
    if (got < ask) break;
  }
  check_size(path, h, h.bytes + data.size(), " decompressed");
  return to_tensor(h, data.data());
}

}  // namespace

torch::Tensor parse_idx(const std::string& path, const std::string& bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  IdxHeader h = parse_header(path, p, bytes.size());
  check_size(path, h, bytes.size(), "");
  return to_tensor(h, p + h.bytes);
}

torch::Tensor read_idx(const std::string& path) {
  const int64_t size = regular_file_size(path);  // a FIFO, a directory or /dev/zero: an error, never a read
  const std::string head = read_prefix(path, 20);
  if (head.size() >= 2 && uint8_t(head[0]) == 0x1f && uint8_t(head[1]) == 0x8b) return read_gzip_idx(path);
  IdxHeader h = parse_header(path, reinterpret_cast<const uint8_t*>(head.data()), head.size());
  check_size(path, h, static_cast<uint64_t>(size), "");  // before a byte of data is read
  return parse_idx(path, read_file(path, size));
}

std::string idx_bytes(const torch::Tensor& t) {
  auto c = t.to(torch::kUInt8).contiguous();
  std::string out{0, 0, 0x08, static_cast<char>(c.dim())};
  for (auto d : c.sizes())
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((uint64_t(d) >> s) & 0xff));
  out.append(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), static_cast<size_t>(c.numel()));
  return out;
}

void write_idx(const std::string& path, const torch::Tensor& t) { write_file_atomic(path, idx_bytes(t)); }

}  // namespace tunekit::data
