#include "src/io/safetensors.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/file.h"

namespace tunekit::io {

namespace {
using json = nlohmann::json;

constexpr uint64_t kMaxHeader = 100ull << 20;      // the reference implementation's limit
constexpr uint64_t kMaxSyscallBytes = 1ull << 30;  // one pread/write asks for at most this

struct DType {
  const char* name;
  torch::ScalarType type;
  int64_t size;
};
constexpr DType kDTypes[] = {
    {"F64", torch::kDouble, 8}, {"F32", torch::kFloat, 4}, {"F16", torch::kHalf, 2},  {"BF16", torch::kBFloat16, 2},
    {"I64", torch::kLong, 8},   {"I32", torch::kInt, 4},   {"I16", torch::kShort, 2}, {"I8", torch::kChar, 1},
    {"U8", torch::kByte, 1},    {"BOOL", torch::kBool, 1},
};

const DType* dtype_by_name(const std::string& n) {
  for (const auto& d : kDTypes)
    if (n == d.name) return &d;
  return nullptr;
}
const DType* dtype_by_type(torch::ScalarType t) {
  for (const auto& d : kDTypes)
    if (t == d.type) return &d;
  return nullptr;
}

bool little_endian() {
  const uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

void check_host() {
  if (!little_endian()) throw Error("safetensors: big-endian hosts are not supported");
}

Error invalid(const std::string& source, const std::string& what) {
  return Error(fmt::format("{}: not a valid safetensors file: {}", source, what));
}

// The 8-byte little-endian header length, checked against the file's size.
uint64_t header_length(const unsigned char* first8, uint64_t size, const std::string& source) {
  if (size < 8) throw invalid(source, fmt::format("{} bytes, shorter than the 8-byte header length", size));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | first8[i];
  if (n > size - 8)
    throw invalid(source,
                  fmt::format("header length {} is larger than the {} bytes after it (truncated file?)", n, size - 8));
  if (n > kMaxHeader) throw invalid(source, fmt::format("header length {} exceeds the 100 MiB limit", n));
  return n;
}

struct Header {
  std::vector<SafetensorsEntry> entries;  // sorted by offset
  std::map<std::string, std::string> metadata;
};

SafetensorsEntry parse_entry(const std::string& name, const json& v, uint64_t data_len, const std::string& source) {
  auto bad = [&](const std::string& what) { return invalid(source, fmt::format("tensor '{}': {}", name, what)); };
  if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
    throw bad("needs dtype, shape and data_offsets");
  if (!v["dtype"].is_string()) throw bad("dtype is not a string");
  const DType* dtype = dtype_by_name(v["dtype"].get<std::string>());
  if (!dtype) throw bad(fmt::format("unsupported dtype '{}'", v["dtype"].get<std::string>()));
  SafetensorsEntry e{name, dtype->name, dtype->type, {}, 0, 0};
  if (!v["shape"].is_array()) throw bad("shape is not an array");
  uint64_t numel = 1;
  for (const auto& d : v["shape"]) {
    if (!d.is_number_unsigned()) throw bad("shape has a negative or non-integer entry");
    uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim))
      throw bad("shape is too large");
    numel *= dim;
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  const auto& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    throw bad("data_offsets must be two non-negative integers");
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  if (e.begin > e.end) throw bad(fmt::format("data_offsets [{}, {}] run backwards", e.begin, e.end));
  if (e.end > data_len)
    throw bad(fmt::format("data_offsets [{}, {}] reach past the {} data bytes in the file (truncated file?)", e.begin,
                          e.end, data_len));
  if (numel > std::numeric_limits<uint64_t>::max() / dtype->size || numel * dtype->size != e.end - e.begin)
    throw bad(fmt::format("shape {} of {} needs {} bytes but data_offsets span {}", c10::str(c10::IntArrayRef(e.shape)),
                          dtype->name, numel * dtype->size, e.end - e.begin));
  return e;
}

// Parses the JSON header and checks every entry against the `data_len` bytes that follow it.
Header parse_header(const char* text, uint64_t n, uint64_t data_len, const std::string& source) {
  json header;
  try {
    header = json::parse(text, text + n);
  } catch (const json::exception& e) {
    throw invalid(source, fmt::format("header is not valid JSON ({})", e.what()));
  }
  if (!header.is_object()) throw invalid(source, "header is not a JSON object");
  Header out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw invalid(source, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw invalid(source, fmt::format("__metadata__.{} is not a string", m.key()));
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    out.entries.push_back(parse_entry(name, v, data_len, source));
  }
  // The format stores tensors back to back: no gaps, no overlaps, nothing after the last one.
  std::sort(out.entries.begin(), out.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  for (const auto& e : out.entries) {
    if (e.begin != expect)
      throw invalid(source,
                    fmt::format("tensor '{}' starts at byte {} but the previous tensor ends at {} (overlap or gap)",
                                e.name, e.begin, expect));
    expect = e.end;
  }
  if (expect != data_len)
    throw invalid(source, fmt::format("tensors cover {} data bytes but the file has {}", expect, data_len));
  return out;
}

// The header bytes for `specs` (offsets back to back in their order), padded so the data starts
// 8-byte aligned, with the 8-byte length in front.
std::string header_bytes(const std::vector<SafetensorsWriter::Spec>& specs,
                         const std::map<std::string, std::string>& metadata, const std::string& path) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& s : specs) {
    if (s.name == "__metadata__") throw Error(fmt::format("{}: '__metadata__' is not a valid tensor name", path));
    if (header.contains(s.name)) throw Error(fmt::format("{}: tensor '{}' given twice", path, s.name));
    const DType* d = dtype_by_type(s.dtype);
    if (!d)
      throw Error(fmt::format("{}: tensor '{}' has dtype {} which safetensors cannot hold", path, s.name,
                              c10::toString(s.dtype)));
    uint64_t numel = 1;
    for (int64_t dim : s.shape) numel *= static_cast<uint64_t>(dim);
    const uint64_t bytes = numel * d->size;
    header[s.name] = {{"dtype", d->name}, {"shape", s.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');
  std::string out;
  const uint64_t n = head.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + head;
}

// `t` seen as rows of its leading dimension: a contiguous tensor as one flat row of elements (so
// blocks can split anywhere), a strided one (a transposed view) along its own first dimension.
torch::Tensor as_rows(const torch::Tensor& t) { return t.is_contiguous() ? t.reshape({-1}) : t; }
}  // namespace

std::string safetensors_dtype_name(torch::ScalarType type) {
  const DType* d = dtype_by_type(type);
  return d ? d->name : "";
}

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const torch::Tensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  check_host();
  std::vector<SafetensorsWriter::Spec> specs;
  for (const auto& [name, t] : tensors) specs.push_back({name, t.scalar_type(), t.sizes().vec()});
  SafetensorsWriter writer(path, specs, metadata);
  for (const auto& [name, t] : tensors) writer.write(t);
  writer.finish();
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& source) {
  check_host();
  const uint64_t size = bytes.size();
  const uint64_t n = header_length(reinterpret_cast<const unsigned char*>(bytes.data()), size, source);
  const uint64_t data_len = size - 8 - n;
  Header header = parse_header(bytes.data() + 8, n, data_len, source);
  const char* data = bytes.data() + 8 + n;
  SafetensorsFile out;
  out.metadata = std::move(header.metadata);
  for (const auto& e : header.entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data + e.begin, e.bytes());
    out.tensors.emplace_back(e.name, t);
  }
  return out;
}

SafetensorsFile read_safetensors(const std::string& path) {
  SafetensorsReader reader(path);
  SafetensorsFile out;
  out.metadata = reader.metadata();
  for (const auto& e : reader.entries()) out.tensors.emplace_back(e.name, reader.read(e));
  return out;
}

// ---- SafetensorsReader ----

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  check_host();
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw Error(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  try {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw Error(fmt::format("{}: cannot stat ({})", path, std::strerror(errno)));
    if (!S_ISREG(st.st_mode)) throw Error(fmt::format("{}: not a regular file", path));
    file_size_ = static_cast<uint64_t>(st.st_size);
    unsigned char first8[8] = {};
    if (file_size_ >= 8) read_bytes(first8, 8, 0);
    const uint64_t n = header_length(first8, file_size_, path);
    std::string text(n, '\0');
    read_bytes(text.data(), n, 8);
    data_start_ = 8 + n;
    Header header = parse_header(text.data(), n, file_size_ - data_start_, path);
    entries_ = std::move(header.entries);
    metadata_ = std::move(header.metadata);
    for (size_t i = 0; i < entries_.size(); ++i) by_name_[entries_[i].name] = i;
    ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

const SafetensorsEntry* SafetensorsReader::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

// `offset` counts from the file's start (the header length and header are read this way too,
// before data_start_ is known).
void SafetensorsReader::read_bytes(void* dst, uint64_t n, uint64_t offset) const {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    ssize_t got = ::pread(fd_, p, std::min(n, kMaxSyscallBytes), static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw Error(fmt::format("{}: read failed at byte {} ({})", path_, offset, std::strerror(errno)));
    }
    if (got == 0)
      throw Error(fmt::format(
          "{}: the file ends at byte {} although its header promised more (truncated while reading?)", path_, offset));
    p += got;
    n -= static_cast<uint64_t>(got);
    offset += static_cast<uint64_t>(got);
  }
}

void SafetensorsReader::for_each_block(const SafetensorsEntry& e, uint64_t chunk_bytes,
                                       const std::function<void(int64_t, const torch::Tensor&)>& f) const {
  std::vector<int64_t> row_shape =
      e.shape.empty() ? std::vector<int64_t>{} : std::vector<int64_t>(e.shape.begin() + 1, e.shape.end());
  const int64_t rows = e.shape.empty() ? 1 : e.shape[0];
  if (rows == 0 || e.bytes() == 0) return;
  const uint64_t row_bytes = e.bytes() / static_cast<uint64_t>(rows);
  const int64_t per_block = static_cast<int64_t>(std::max<uint64_t>(1, chunk_bytes / std::max<uint64_t>(row_bytes, 1)));
  std::vector<int64_t> block_shape{std::min(per_block, rows)};
  block_shape.insert(block_shape.end(), row_shape.begin(), row_shape.end());
  auto buffer = torch::empty(block_shape, torch::TensorOptions().dtype(e.dtype));
  for (int64_t first = 0; first < rows; first += per_block) {
    const int64_t k = std::min(per_block, rows - first);
    auto block = buffer.narrow(0, 0, k);
    read_bytes(block.data_ptr(), row_bytes * static_cast<uint64_t>(k),
               data_start_ + e.begin + row_bytes * static_cast<uint64_t>(first));
    f(first, block);
  }
}

void SafetensorsReader::read_into(const SafetensorsEntry& e, const torch::Tensor& dst, uint64_t chunk_bytes) const {
  if (dst.sizes().vec() != e.shape)
    throw Error(fmt::format("{}: tensor '{}' has shape {} but is read into a tensor of shape {}", path_, e.name,
                            c10::str(c10::IntArrayRef(e.shape)), c10::str(dst.sizes())));
  if (!dst.device().is_cpu()) throw Error(fmt::format("{}: tensor '{}' must be read into CPU memory", path_, e.name));
  if (dst.is_contiguous() && dst.scalar_type() == e.dtype) {  // straight into the destination
    if (e.bytes() > 0) read_bytes(dst.data_ptr(), e.bytes(), data_start_ + e.begin);
    return;
  }
  torch::NoGradGuard no_grad;
  auto rows = as_rows(dst);
  // The file's rows in the same grouping as `rows`: the flat elements, or the file's own rows.
  SafetensorsEntry flat = e;
  if (dst.is_contiguous()) flat.shape = {e.numel()};
  for_each_block(flat, chunk_bytes,
                 [&](int64_t first, const torch::Tensor& block) { rows.narrow(0, first, block.size(0)).copy_(block); });
}

torch::Tensor SafetensorsReader::read(const SafetensorsEntry& e) const {
  auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
  if (e.bytes() > 0) read_bytes(t.data_ptr(), e.bytes(), data_start_ + e.begin);
  return t;
}

// ---- SafetensorsWriter ----

SafetensorsWriter::SafetensorsWriter(const std::string& path, const std::vector<Spec>& specs,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), specs_(specs) {
  check_host();
  const std::string head = header_bytes(specs_, metadata, path_);
  file_ = std::make_unique<AtomicFile>(path_);
  write_bytes(head.data(), head.size());
}

SafetensorsWriter::~SafetensorsWriter() = default;  // an unfinished AtomicFile removes its temporary

void SafetensorsWriter::write_bytes(const void* data, uint64_t n) {
  if (!file_) throw Error(fmt::format("{}: written after finish()", path_));
  file_->write(data, n);
}

void SafetensorsWriter::write(const torch::Tensor& t, uint64_t chunk_bytes) {
  if (next_ >= specs_.size()) throw Error(fmt::format("{}: more tensors written than declared", path_));
  const Spec& s = specs_[next_];
  if (t.sizes().vec() != s.shape)
    throw Error(fmt::format("{}: tensor '{}' declared with shape {} but written with {}", path_, s.name,
                            c10::str(c10::IntArrayRef(s.shape)), c10::str(t.sizes())));
  ++next_;
  auto c = t.detach();
  if (!c.device().is_cpu()) c = c.to(torch::kCPU);
  if (c.numel() == 0) return;
  if (c.is_contiguous() && c.scalar_type() == s.dtype) {  // straight from the tensor's storage
    write_bytes(c.data_ptr(), static_cast<uint64_t>(c.numel()) * c.element_size());
    return;
  }
  // Converted (and made contiguous) one block of rows at a time.
  torch::NoGradGuard no_grad;
  auto rows = as_rows(c);
  const int64_t n_rows = rows.dim() == 0 ? 1 : rows.size(0);
  if (rows.dim() == 0) rows = rows.reshape({1});
  const uint64_t row_bytes = static_cast<uint64_t>(rows.numel() / n_rows) * c10::elementSize(s.dtype);
  const int64_t per_block = static_cast<int64_t>(std::max<uint64_t>(1, chunk_bytes / std::max<uint64_t>(row_bytes, 1)));
  for (int64_t first = 0; first < n_rows; first += per_block) {
    auto block = rows.narrow(0, first, std::min(per_block, n_rows - first)).to(s.dtype).contiguous();
    write_bytes(block.data_ptr(), static_cast<uint64_t>(block.numel()) * block.element_size());
  }
}

void SafetensorsWriter::finish() {
  if (next_ != specs_.size())
    throw Error(fmt::format("{}: {} of {} declared tensors written", path_, next_, specs_.size()));
  if (!file_) throw Error(fmt::format("{}: finished twice", path_));
  file_->commit();
  file_.reset();
}

}  // namespace tunekit::io
