// The byte-pair-encoding engine behind data/hf_tokenizer.cpp: a vocabulary, merge ranks keyed by
// the pair of ids, the lowest-rank-first merge loop, a bounded cache of pre-token results, GPT-2's
// byte <-> character mapping, byte fallback (<0xXX>), and the UTF-8 helpers the tokenizer needs.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tunekit::data::bpe {

// Replaces every ill-formed sequence of `text` with U+FFFD by the "maximal subpart" rule (Unicode
// §3.9, the WHATWG Encoding Standard: what Node's TextDecoder and Python's errors="replace" do):
// each maximal prefix of a well-formed sequence that cannot be completed becomes one U+FFFD, and
// a byte that starts no well-formed sequence is one U+FFFD. Valid text is returned unchanged.
std::string sanitize_utf8(std::string_view text);
// The length in bytes of the (valid) UTF-8 character starting at `s[i]`.
size_t utf8_length(unsigned char lead);
// The code point at s[i] of a valid UTF-8 string (advances i).
uint32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, uint32_t cp);

// GPT-2's bytes_to_unicode: byte b -> the character (as UTF-8) that stands for it in byte-level vocabularies.
const std::string& byte_to_unicode(unsigned char b);
// The inverse, on a whole token: each character that stands for a byte becomes that byte; any other
// character is kept as its own UTF-8 bytes.
std::string unicode_to_bytes(std::string_view token);

struct BpeOptions {
  bool byte_level = false;      // pieces are raw bytes, each one the vocabulary character byte_to_unicode(b)
  bool byte_fallback = false;   // a character not in the vocabulary becomes its <0xXX> byte tokens
  bool ignore_merges = false;   // a whole pre-token found in the vocabulary is one token (Llama 3)
  bool fuse_unk = false;        // consecutive unknown characters become one unk
  int64_t unk = -1;             // the unk id; -1: unknown characters are dropped (as Hugging Face does)
};

// A BPE model. Built once (add_token, add_merge, finish), then encode_piece is thread-safe.
class BpeModel {
 public:
  // Throws (the message names `where`) when the piece or id is already present.
  void add_token(const std::string& piece, int64_t id, const std::string& where);
  // The merge of `left` and `right` (pieces of the vocabulary) into left+right, with the next rank.
  // Returns an empty string on success, otherwise what is wrong (a piece not in the vocabulary).
  std::string add_merge(const std::string& left, const std::string& right);
  void set_options(const BpeOptions& options);

  // Appends the ids of one pre-token (raw bytes when byte_level, else UTF-8 text).
  void encode_piece(std::string_view piece, std::vector<int64_t>& out) const;
  int64_t token_id(const std::string& piece) const;  // -1 when absent
  const std::string* piece(int64_t id) const;        // nullptr when no token has this id
  int64_t max_id() const { return static_cast<int64_t>(pieces_.size()) - 1; }
  int64_t merges() const { return static_cast<int64_t>(merge_rank_.size()); }
  const BpeOptions& options() const { return options_; }

 private:
  struct Merge {
    int32_t rank, merged;
  };
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  void initial_symbols(std::string_view piece, std::vector<int32_t>& symbols) const;
  void merge(std::vector<int32_t>& symbols) const;

  BpeOptions options_;
  std::unordered_map<std::string, int32_t> ids_;
  std::vector<std::string> pieces_;  // by id ("" where none)
  std::vector<bool> present_;
  std::unordered_map<uint64_t, Merge> merge_rank_;
  int32_t byte_ids_[256] = {};  // byte-level: the id of each byte's character; fallback: of <0xXX>; -1 none
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace tunekit::data::bpe
