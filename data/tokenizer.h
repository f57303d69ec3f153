// Tokenizers behind one class: sentencepiece .model files (Debian's libsentencepiece, reached
// through a dlopen'ed shim, libtunekit_spm.so, data/spm/spm_shim.cpp, because its bundled protobuf
// clashes with LibTorch's) and Hugging Face tokenizers (data/hf_tokenizer.h: tokenizer.json with a
// BPE model, byte-level as GPT-2 / Llama 3 / Qwen2 or sentencepiece-style as Llama 2 / Mistral;
// GPT-2's vocab.json + merges.txt). tunekit's own sentencepiece models reserve unk 0, bos 1,
// eos 2, pad 3.
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
  // sentencepiece's normalization_rule_name: "nmt_nfkc" (NFKC, runs of spaces collapsed) or
  // "identity" (the text as it is, every space kept: what a Llama 2 tokenizer.json reproduces).
  std::string normalization = "nmt_nfkc";
  int threads = 2;
};

// The largest tokenizer file tunekit reads (Hugging Face ones are a few MB; Qwen2's tokenizer.json ~7 MB).
inline constexpr int64_t kMaxTokenizerBytes = int64_t(256) << 20;

// One tokenizer implementation (sentencepiece, a Hugging Face BPE). Ids are 0..vocab_size()-1.
class TokenizerBackend {
 public:
  virtual ~TokenizerBackend() = default;
  // Added / special tokens written in the text ("<|im_start|>") are matched first and become
  // their ids; the rest is tokenised by the model (no bos/eos are added).
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // Ids out of range are skipped; special tokens are dropped when skip_special.
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special) const = 0;
  virtual std::string piece(int64_t id) const = 0;               // "" when out of range
  virtual int64_t token_id(const std::string& piece) const = 0;  // -1 when the vocabulary has none
  virtual int64_t vocab_size() const = 0;                        // added tokens included
  virtual bool is_special(int64_t id) const = 0;
};

// The ids a model's special tokens have (-1: none), from the tokenizer file itself or, for a
// Hugging Face directory, its tokenizer_config.json / special_tokens_map.json /
// generation_config.json.
struct SpecialTokens {
  int64_t unk = -1, bos = -1, eos = -1, pad = -1;
  std::vector<int64_t> stop;   // generation stops at any of these (eos first; generation_config's eos_token_id list)
  bool add_bos = false;        // the model's own tokenizer puts bos before a text (Llama 2, Llama 3; not GPT-2, Qwen2)
  std::string chat_template;   // tokenizer_config.json's Jinja chat_template, as text (never executed)
};

class Tokenizer {
 public:
  // Loads a tokenizer from `path`: a sentencepiece .model; a tokenizer.json; a vocab.json (with
  // merges.txt beside it); or a directory holding one of them (tokenizer.json first, then
  // vocab.json + merges.txt, then tokenizer.model), with the directory's tokenizer_config.json,
  // special_tokens_map.json and generation_config.json. Every file a regular file of at most
  // kMaxTokenizerBytes; anything malformed is a one-line error naming the file.
  static Tokenizer load(const std::string& path);
  // Trains a sentencepiece model on `texts` (one document each) and writes it to `out_path` atomically.
  static Tokenizer train(const std::vector<std::string>& texts, const TokenizerTrainOptions& options,
                         const std::string& out_path);
  // Wraps a backend (tests; data/hf_tokenizer.cpp).
  Tokenizer(std::shared_ptr<const TokenizerBackend> backend, SpecialTokens special, std::string kind,
            std::string path, std::vector<std::string> files);

  std::vector<int64_t> encode(const std::string& text) const { return impl_->encode(text); }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special = false) const {
    return impl_->decode(ids, skip_special);
  }
  std::string piece(int64_t id) const { return impl_->piece(id); }
  int64_t token_id(const std::string& piece) const { return impl_->token_id(piece); }
  bool is_special(int64_t id) const { return impl_->is_special(id); }
  int64_t vocab_size() const { return impl_->vocab_size(); }
  int64_t unk_id() const { return special_.unk; }
  int64_t bos_id() const { return special_.bos; }
  int64_t eos_id() const { return special_.eos; }
  int64_t pad_id() const { return special_.pad; }
  const SpecialTokens& special() const { return special_; }
  // "sentencepiece", "bpe-byte-level" (GPT-2, Llama 3, Qwen2), "bpe-sentencepiece" (tokenizer.json of Llama 2, Mistral)
  const std::string& kind() const { return kind_; }
  const std::string& path() const { return path_; }
  // The files it was read from (to copy beside an exported or saved model).
  const std::vector<std::string>& files() const { return files_; }

 private:
  std::shared_ptr<const TokenizerBackend> impl_;
  SpecialTokens special_;
  std::string kind_, path_;
  std::vector<std::string> files_;
};

}  // namespace tunekit::data
