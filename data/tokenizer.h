// Sentencepiece tokeniser (Debian's libsentencepiece): train a unigram or BPE model on texts, or
// load an existing .model; encode to ids and decode back. tunekit's own models reserve
// unk 0, bos 1, eos 2, pad 3. Sentencepiece itself is reached through a dlopen'ed shim
// (libtunekit_spm.so, data/spm/spm_shim.cpp) because its bundled protobuf clashes with LibTorch's.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tunekit::data {

struct TokenizerTrainOptions {
  std::string type = "unigram";  // unigram | bpe
  int64_t vocab_size = 4000;
  double character_coverage = 0.9995;
  int64_t max_sentence_bytes = 8192;  // longer texts are cut (at a UTF-8 boundary) for training
  int threads = 2;
};

// The largest sentencepiece .model tunekit reads (Hugging Face ones are a few MB).
inline constexpr int64_t kMaxTokenizerBytes = int64_t(256) << 20;

class Tokenizer {
 public:
  // Loads a sentencepiece .model file (a regular file of at most kMaxTokenizerBytes).
  static Tokenizer load(const std::string& path);
  // Trains on `texts` (one document each) and writes the model to `out_path` atomically.
  static Tokenizer train(const std::vector<std::string>& texts, const TokenizerTrainOptions& options,
                         const std::string& out_path);

  std::vector<int64_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  std::string piece(int64_t id) const;
  int64_t vocab_size() const;
  int64_t unk_id() const, bos_id() const, eos_id() const, pad_id() const;  // -1 = the model has none
  const std::string& path() const { return path_; }

 private:
  std::shared_ptr<void> sp_;  // the shim's SentencePieceProcessor
  std::string path_;
  int64_t info_[5] = {0, -1, -1, -1, -1};  // vocab size, unk, bos, eos, pad
};

}  // namespace tunekit::data
