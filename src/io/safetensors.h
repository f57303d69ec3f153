// safetensors (Hugging Face's tensor file format): an 8-byte little-endian header length, a
// JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}} and the raw
// little-endian tensor bytes. The reader checks every size and offset against the file before
// it touches tensor data, so a truncated or malformed file is an error, never a bad read.
// Two ways in and out: whole files in memory (small adapter files), and streaming
// (SafetensorsReader / SafetensorsWriter: one tensor at a time through a bounded buffer, for
// model checkpoints that must not be held twice in memory).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tunekit {
class AtomicFile;
}

namespace tunekit::io {

struct SafetensorsFile {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;  // in file-offset order
  std::map<std::string, std::string> metadata;
  const torch::Tensor* find(const std::string& name) const;
};

// Writes `tensors` (CPU, any supported dtype) atomically (temp file + rename).
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

SafetensorsFile read_safetensors(const std::string& path);
// Same, from bytes already in memory (`source` names them in errors).
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& source);

// The safetensors name of a dtype ("F32", "BF16", ...), or "" when the format cannot hold it.
std::string safetensors_dtype_name(torch::ScalarType type);

// One tensor of a safetensors header.
struct SafetensorsEntry {
  std::string name;
  std::string dtype_name;  // as the file writes it: "F32", "F16", "BF16", "I64", ...
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section (after the header)
  uint64_t bytes() const { return end - begin; }
  int64_t numel() const;
};

// The buffer a conversion or a strided destination goes through: at most this many bytes.
inline constexpr uint64_t kSafetensorsChunkBytes = 16ull << 20;

// A safetensors file opened for reading tensor by tensor. The constructor reads and checks only
// the header (the same checks as read_safetensors, against the file's size on disk); tensor data
// is read with pread when asked for, so nothing is held but what the caller reads into.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // in file-offset order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsEntry* find(const std::string& name) const;
  uint64_t file_size() const { return file_size_; }

  // Reads `entry`'s data into `dst`: a CPU tensor of the entry's shape, of any dtype and strides
  // (a transposed view of a parameter works). A contiguous `dst` of the entry's dtype is read
  // straight into its storage; otherwise through a buffer of at most `chunk_bytes`, converted by
  // copy_ (e.g. bfloat16 -> float32). No autograd: call it under torch::NoGradGuard for parameters.
  void read_into(const SafetensorsEntry& entry, const torch::Tensor& dst,
                 uint64_t chunk_bytes = kSafetensorsChunkBytes) const;
  // Calls `f(first, block)` for consecutive blocks of the tensor's leading dimension (a 0-d
  // tensor is one block of shape [1]): `block` holds rows first..first+block.size(0)-1 in the
  // file's dtype, at most `chunk_bytes` (one row at least) and valid only during the call.
  void for_each_block(const SafetensorsEntry& entry, uint64_t chunk_bytes,
                      const std::function<void(int64_t first, const torch::Tensor& block)>& f) const;
  // The whole tensor, freshly allocated in the file's dtype.
  torch::Tensor read(const SafetensorsEntry& entry) const;

 private:
  void read_bytes(void* dst, uint64_t n, uint64_t data_offset) const;

  std::string path_;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;  // 8 + header length
  std::vector<SafetensorsEntry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

// A safetensors file written tensor by tensor: the header comes from the names, dtypes and
// shapes given up front, then each tensor's bytes are written in turn, converted to the declared
// dtype a bounded block at a time, so a model is never copied whole. The file goes through an
// AtomicFile (util/file.h: every write, the fsync and the close checked) and is renamed over `path`
// by finish(); destroyed unfinished, it removes the temporary file and `path` keeps what it held.
class SafetensorsWriter {
 public:
  struct Spec {
    std::string name;
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
  };
  SafetensorsWriter(const std::string& path, const std::vector<Spec>& specs,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Writes the next tensor in the specs' order: any dtype, any strides, the spec's shape.
  void write(const torch::Tensor& t, uint64_t chunk_bytes = kSafetensorsChunkBytes);
  // After the last tensor: closes the file and renames it into place.
  void finish();

 private:
  void write_bytes(const void* data, uint64_t n);

  std::string path_;
  std::vector<Spec> specs_;
  size_t next_ = 0;
  std::unique_ptr<AtomicFile> file_;
};

}  // namespace tunekit::io
