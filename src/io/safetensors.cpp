#include "src/io/safetensors.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "src/io/checkpoint.h"
#include "util/error.h"
#include "util/file.h"

namespace tunekit::io {

namespace {
using json = nlohmann::json;

constexpr uint64_t kMaxHeader = 100ull << 20;  // the reference implementation's limit

struct DType {
  const char* name;
  torch::ScalarType type;
  int64_t size;
};
constexpr DType kDTypes[] = {
    {"F64", torch::kDouble, 8}, {"F32", torch::kFloat, 4},  {"F16", torch::kHalf, 2},  {"BF16", torch::kBFloat16, 2},
    {"I64", torch::kLong, 8},   {"I32", torch::kInt, 4},    {"I16", torch::kShort, 2}, {"I8", torch::kChar, 1},
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
}  // namespace

const torch::Tensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  if (!little_endian()) throw Error("safetensors: big-endian hosts are not supported");
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw Error(fmt::format("{}: '__metadata__' is not a valid tensor name", path));
    if (header.contains(name)) throw Error(fmt::format("{}: tensor '{}' given twice", path, name));
    const DType* d = dtype_by_type(t.scalar_type());
    if (!d) throw Error(fmt::format("{}: tensor '{}' has dtype {} which safetensors cannot hold", path, name,
                                    c10::toString(t.scalar_type())));
    auto c = t.detach().to(torch::kCPU).contiguous();
    uint64_t bytes = static_cast<uint64_t>(c.numel()) * d->size;
    header[name] = {{"dtype", d->name}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(c);
  }
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');  // pad so the data starts 8-byte aligned
  std::string out;
  out.reserve(8 + head.size() + offset);
  uint64_t n = head.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += head;
  for (const auto& c : data) out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  write_file_atomic(path, out);
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& source) {
  if (!little_endian()) throw Error("safetensors: big-endian hosts are not supported");
  auto fail = [&](const std::string& what) { return Error(fmt::format("{}: not a valid safetensors file: {}", source, what)); };
  const uint64_t size = bytes.size();
  if (size < 8) throw fail(fmt::format("{} bytes, shorter than the 8-byte header length", size));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  if (n > size - 8)
    throw fail(fmt::format("header length {} is larger than the {} bytes after it (truncated file?)", n, size - 8));
  if (n > kMaxHeader) throw fail(fmt::format("header length {} exceeds the 100 MiB limit", n));
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const json::exception& e) {
    throw fail(fmt::format("header is not valid JSON ({})", e.what()));
  }
  if (!header.is_object()) throw fail("header is not a JSON object");
  const uint64_t data_len = size - 8 - n;
  const char* data = bytes.data() + 8 + n;

  SafetensorsFile out;
  struct Entry {
    std::string name;
    const DType* dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw fail("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw fail(fmt::format("__metadata__.{} is not a string", m.key()));
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { return fail(fmt::format("tensor '{}': {}", name, what)); };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw bad("needs dtype, shape and data_offsets");
    if (!v["dtype"].is_string()) throw bad("dtype is not a string");
    Entry e{name, dtype_by_name(v["dtype"].get<std::string>()), {}, 0, 0};
    if (!e.dtype) throw bad(fmt::format("unsupported dtype '{}'", v["dtype"].get<std::string>()));
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
    if (numel > std::numeric_limits<uint64_t>::max() / e.dtype->size || numel * e.dtype->size != e.end - e.begin)
      throw bad(fmt::format("shape {} of {} needs {} bytes but data_offsets span {}", c10::str(e.shape), e.dtype->name,
                            numel * e.dtype->size, e.end - e.begin));
    entries.push_back(std::move(e));
  }
  // The format stores tensors back to back: no gaps, no overlaps, nothing after the last one.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  for (const auto& e : entries) {
    if (e.begin != expect)
      throw fail(fmt::format("tensor '{}' starts at byte {} but the previous tensor ends at {} (overlap or gap)", e.name,
                             e.begin, expect));
    expect = e.end;
  }
  if (expect != data_len)
    throw fail(fmt::format("tensors cover {} data bytes but the file has {}", expect, data_len));

  for (const auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data + e.begin, e.end - e.begin);
    out.tensors.emplace_back(e.name, t);
  }
  return out;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_safetensors(ss.str(), path);
}

}  // namespace tunekit::io
