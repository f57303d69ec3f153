// Reader for the IDX format (MNIST / Fashion-MNIST), gzip-compressed or raw.
// Only regular files are opened; the header (magic, element type, rank, every dimension > 0, the
// item count computed without overflow) is checked against the file's size before the data is read.
#pragma once
#include <torch/torch.h>

#include <string>

namespace tunekit::data {

// Returns a uint8 tensor with the file's shape (e.g. [60000, 28, 28] or [60000]). Any mismatch is
// one Error naming the file, e.g. "<file>: IDX header says 10x28x28 items, the file has 2373 bytes
// (7856 expected: truncated)".
torch::Tensor read_idx(const std::string& path);

// The same for an uncompressed IDX file already in memory (`bytes`, read from `path`).
torch::Tensor parse_idx(const std::string& path, const std::string& bytes);

// The uncompressed IDX encoding of a uint8 tensor (header + data).
std::string idx_bytes(const torch::Tensor& t);

// Writes `idx_bytes(t)` atomically (used by data preparation and tests).
void write_idx(const std::string& path, const torch::Tensor& t);

}  // namespace tunekit::data
