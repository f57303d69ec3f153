#include "data/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/bytestream.h>
#include <unicode/stringpiece.h>
#include <unicode/uchar.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "data/bpe.h"
#include "util/error.h"
#include "util/file.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace tunekit::data {
namespace {

// GPT-2's pre-tokenizer pattern (ByteLevel with use_regex: true).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr const char* kSpmSpace = "\xe2\x96\x81";  // ▁

// Where a JSON value is: "<file>: <key path>" in every message.
struct At {
  std::string file, key;
  At operator[](const std::string& k) const { return {file, key.empty() ? k : key + "." + k}; }
  At operator[](size_t i) const { return {file, fmt::format("{}[{}]", key, i)}; }
  [[noreturn]] void fail(const std::string& what) const { throw Error(fmt::format("{}: {}: {}", file, key, what)); }
};

const char* type_name(const json& v) { return v.type_name(); }

const json& member(const json& obj, const char* k, const At& at) {
  if (!obj.is_object()) at.fail(fmt::format("must be an object, not {}", type_name(obj)));
  auto it = obj.find(k);
  if (it == obj.end()) at[k].fail("is missing");
  return *it;
}
std::string get_string(const json& v, const At& at) {
  if (!v.is_string()) at.fail(fmt::format("must be a string, not {}", type_name(v)));
  return v.get<std::string>();
}
std::string opt_string(const json& obj, const char* k, const std::string& dflt, const At& at) {
  auto it = obj.find(k);
  return it == obj.end() || it->is_null() ? dflt : get_string(*it, at[k]);
}
bool opt_bool(const json& obj, const char* k, bool dflt, const At& at) {
  auto it = obj.find(k);
  if (it == obj.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) at[k].fail(fmt::format("must be true or false, not {}", type_name(*it)));
  return it->get<bool>();
}
int64_t get_id(const json& v, const At& at) {
  if (!v.is_number_integer()) at.fail(fmt::format("must be an integer id, not {}", type_name(v)));
  const int64_t id = v.get<int64_t>();
  if (id < 0 || id > INT32_MAX) at.fail(fmt::format("id {} is out of range", id));
  return id;
}
const json& array_of(const json& v, const At& at) {
  if (!v.is_array()) at.fail(fmt::format("must be a list, not {}", type_name(v)));
  return v;
}

// A compiled PCRE2 pattern (UTF + Unicode properties, JIT when available).
class Regex {
 public:
  Regex(const std::string& pattern, bool literal, const At& at) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    const uint32_t flags = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), flags, &err, &offset, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      at.fail(fmt::format("invalid regular expression at offset {}: {}", offset, reinterpret_cast<const char*>(msg)));
    }
    code_.reset(code, pcre2_code_free);
    jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  }
  // The [start, end) spans of the non-empty matches in valid UTF-8 `s`, left to right.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const {
    std::vector<std::pair<size_t, size_t>> out;
    std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr), pcre2_match_data_free);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t pos = 0;
    while (pos <= s.size()) {
      const int rc = jit_ ? pcre2_jit_match(code_.get(), subject, s.size(), pos, 0, md.get(), nullptr)
                          : pcre2_match(code_.get(), subject, s.size(), pos, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) throw Error(fmt::format("tokenizer: regular expression failed (PCRE2 error {})", rc));
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      if (ov[1] > ov[0]) {
        out.emplace_back(ov[0], ov[1]);
        pos = ov[1];
      } else {  // an empty match: step over one character
        pos = ov[0] < s.size() ? ov[0] + bpe::utf8_length(static_cast<unsigned char>(s[ov[0]])) : s.size() + 1;
      }
    }
    return out;
  }

 private:
  std::shared_ptr<pcre2_code> code_;
  bool jit_ = false;
};

// A pattern field: {"String": "..."} or {"Regex": "..."}.
Regex read_pattern(const json& v, const At& at) {
  if (!v.is_object() || v.size() != 1) at.fail("must be {\"String\": ...} or {\"Regex\": ...}");
  if (v.contains("String")) return Regex(get_string(v["String"], at["String"]), true, at["String"]);
  if (v.contains("Regex")) return Regex(get_string(v["Regex"], at["Regex"]), false, at["Regex"]);
  at.fail(fmt::format("unknown pattern kind '{}' (String or Regex)", v.begin().key()));
}

std::string replace_all(std::string_view s, const Regex& re, const std::string& content) {
  std::string out;
  size_t last = 0;
  for (auto [a, b] : re.find_all(s)) {
    out.append(s.substr(last, a - last));
    out += content;
    last = b;
  }
  out.append(s.substr(last));
  return out;
}

// ---- normalizers ----------------------------------------------------------------------------

struct Normalizer {
  enum Kind { Prepend, Replace, Unicode, Lowercase, Strip } kind;
  explicit Normalizer(Kind k, std::string t = {}) : kind(k), text(std::move(t)) {}
  std::string text;                          // Prepend: what; Replace: the content
  std::shared_ptr<Regex> pattern;            // Replace
  const icu::Normalizer2* form = nullptr;    // Unicode: NFC, NFD, NFKC, NFKD
  bool left = true, right = true;            // Strip
};

const icu::Normalizer2* unicode_form(const std::string& type) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = type == "NFC"    ? icu::Normalizer2::getNFCInstance(status)
                              : type == "NFD"  ? icu::Normalizer2::getNFDInstance(status)
                              : type == "NFKC" ? icu::Normalizer2::getNFKCInstance(status)
                                               : icu::Normalizer2::getNFKDInstance(status);
  if (U_FAILURE(status)) throw Error(fmt::format("tokenizer: ICU has no {} normalizer ({})", type, u_errorName(status)));
  return n;
}

void read_normalizer(const json& v, const At& at, std::vector<Normalizer>& out) {
  if (v.is_null()) return;
  const std::string type = get_string(member(v, "type", at), at["type"]);
  if (type == "Sequence") {
    const json& list = array_of(member(v, "normalizers", at), at["normalizers"]);
    for (size_t i = 0; i < list.size(); ++i) read_normalizer(list[i], at["normalizers"][i], out);
  } else if (type == "Prepend") {
    out.push_back(Normalizer(Normalizer::Prepend, get_string(member(v, "prepend", at), at["prepend"])));
  } else if (type == "Replace") {
    Normalizer n(Normalizer::Replace, get_string(member(v, "content", at), at["content"]));
    n.pattern = std::make_shared<Regex>(read_pattern(member(v, "pattern", at), at["pattern"]));
    out.push_back(n);
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    Normalizer n(Normalizer::Unicode);
    n.form = unicode_form(type);
    out.push_back(n);
  } else if (type == "Lowercase") {
    out.push_back(Normalizer(Normalizer::Lowercase));
  } else if (type == "Strip") {
    Normalizer n(Normalizer::Strip);
    n.left = opt_bool(v, "strip_left", true, at), n.right = opt_bool(v, "strip_right", true, at);
    out.push_back(n);
  } else {
    at["type"].fail(fmt::format("{} is not supported (Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip)", type));
  }
}

std::string unicode_normalize(const icu::Normalizer2& form, const std::string& s) {
  UErrorCode status = U_ZERO_ERROR;
  if (form.isNormalizedUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())), status) && U_SUCCESS(status)) return s;
  std::string out;
  icu::StringByteSink<std::string> sink(&out);
  status = U_ZERO_ERROR;
  form.normalizeUTF8(0, icu::StringPiece(s.data(), static_cast<int32_t>(s.size())), sink, nullptr, status);
  if (U_FAILURE(status)) throw Error(fmt::format("tokenizer: Unicode normalization failed ({})", u_errorName(status)));
  return out;
}

std::string lowercase(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) bpe::append_utf8(out, static_cast<uint32_t>(u_tolower(static_cast<UChar32>(bpe::next_code_point(s, i)))));
  return out;
}

bool is_white(uint32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

std::string strip(const std::string& s, bool left, bool right) {
  size_t a = 0, b = s.size();
  while (left && a < b) {
    size_t i = a;
    if (!is_white(bpe::next_code_point(s, i))) break;
    a = i;
  }
  while (right && b > a) {
    size_t start = b - 1;
    while (start > a && (static_cast<unsigned char>(s[start]) & 0xc0) == 0x80) --start;
    size_t i = start;
    if (!is_white(bpe::next_code_point(s, i))) break;
    b = start;
  }
  return s.substr(a, b - a);
}

std::string normalize(const std::vector<Normalizer>& steps, std::string s) {
  for (const auto& n : steps) {
    switch (n.kind) {
      case Normalizer::Prepend: if (!s.empty()) s = n.text + s; break;
      case Normalizer::Replace: s = replace_all(s, *n.pattern, n.text); break;
      case Normalizer::Unicode: s = unicode_normalize(*n.form, s); break;
      case Normalizer::Lowercase: s = lowercase(s); break;
      case Normalizer::Strip: s = strip(s, n.left, n.right); break;
    }
  }
  return s;
}

// ---- pre-tokenizers -------------------------------------------------------------------------

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizer {
  enum Kind { Split, ByteLevel, Metaspace } kind;
  explicit PreTokenizer(Kind k) : kind(k) {}
  std::shared_ptr<Regex> pattern;             // Split (Digits is a Split on \p{N})
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;              // ByteLevel
  std::string replacement = kSpmSpace;        // Metaspace
  std::string prepend_scheme = "always";      // Metaspace: always | first | never
  bool split = true;                          // Metaspace
};

SplitBehavior read_behavior(const json& v, const At& at) {
  const std::string b = get_string(v, at);
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  at.fail(fmt::format("unknown behavior '{}' (Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)", b));
}

void read_pre_tokenizer(const json& v, const At& at, std::vector<PreTokenizer>& out) {
  if (v.is_null()) return;
  const std::string type = get_string(member(v, "type", at), at["type"]);
  if (type == "Sequence") {
    const json& list = array_of(member(v, "pretokenizers", at), at["pretokenizers"]);
    for (size_t i = 0; i < list.size(); ++i) read_pre_tokenizer(list[i], at["pretokenizers"][i], out);
  } else if (type == "Split") {
    PreTokenizer p(PreTokenizer::Split);
    p.pattern = std::make_shared<Regex>(read_pattern(member(v, "pattern", at), at["pattern"]));
    p.behavior = read_behavior(member(v, "behavior", at), at["behavior"]);
    p.invert = opt_bool(v, "invert", false, at);
    out.push_back(p);
  } else if (type == "Digits") {
    PreTokenizer p(PreTokenizer::Split);
    p.pattern = std::make_shared<Regex>(opt_bool(v, "individual_digits", false, at) ? R"(\p{N})" : R"(\p{N}+)", false, at);
    out.push_back(p);
  } else if (type == "ByteLevel") {
    PreTokenizer p(PreTokenizer::ByteLevel);
    p.add_prefix_space = opt_bool(v, "add_prefix_space", false, at);
    if (opt_bool(v, "use_regex", true, at)) {  // GPT-2's own pattern, then the byte mapping
      PreTokenizer re(PreTokenizer::Split);
      re.pattern = std::make_shared<Regex>(kGpt2Pattern, false, at);
      if (p.add_prefix_space) out.push_back(p), p.add_prefix_space = false;
      out.push_back(re);
    }
    out.push_back(p);
  } else if (type == "Metaspace") {
    PreTokenizer p(PreTokenizer::Metaspace);
    p.replacement = opt_string(v, "replacement", kSpmSpace, at);
    if (p.replacement.empty()) at["replacement"].fail("is empty");
    if (v.contains("prepend_scheme")) p.prepend_scheme = get_string(v["prepend_scheme"], at["prepend_scheme"]);
    else p.prepend_scheme = opt_bool(v, "add_prefix_space", true, at) ? "always" : "never";
    if (p.prepend_scheme != "always" && p.prepend_scheme != "first" && p.prepend_scheme != "never")
      at["prepend_scheme"].fail(fmt::format("unknown scheme '{}' (always, first, never)", p.prepend_scheme));
    p.split = opt_bool(v, "split", true, at);
    out.push_back(p);
  } else {
    at["type"].fail(fmt::format("{} is not supported (Sequence, Split, Digits, ByteLevel, Metaspace)", type));
  }
}

struct Piece {
  std::string text;
  bool first;  // starts the input text (Metaspace's prepend_scheme: first)
};

// Splits one piece at the matches of `p.pattern` (Hugging Face's Split behaviours).
void split_piece(const PreTokenizer& p, Piece&& piece, std::vector<Piece>& out) {
  const std::string& s = piece.text;
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> parts;  // spans covering s, match or not
  size_t last = 0;
  for (auto span : p.pattern->find_all(s)) {
    if (span.first > last) parts.push_back({{last, span.first}, p.invert});
    parts.push_back({span, !p.invert});
    last = span.second;
  }
  if (last < s.size()) parts.push_back({{last, s.size()}, p.invert});
  std::vector<std::pair<size_t, size_t>> spans;
  bool previous_match = false;
  for (auto [span, is_match] : parts) {
    switch (p.behavior) {
      case SplitBehavior::Removed: if (!is_match) spans.push_back(span); break;
      case SplitBehavior::Isolated: spans.push_back(span); break;
      case SplitBehavior::MergedWithPrevious:
        if (is_match && !previous_match && !spans.empty()) spans.back().second = span.second;
        else spans.push_back(span);
        break;
      case SplitBehavior::MergedWithNext:
        if (!is_match && previous_match && !spans.empty()) spans.back().second = span.second;
        else spans.push_back(span);
        break;
      case SplitBehavior::Contiguous:
        if (is_match && previous_match && !spans.empty()) spans.back().second = span.second;
        else spans.push_back(span);
        break;
    }
    previous_match = is_match;
  }
  for (size_t i = 0; i < spans.size(); ++i)
    out.push_back({s.substr(spans[i].first, spans[i].second - spans[i].first), piece.first && spans[i].first == 0});
}

void metaspace(const PreTokenizer& p, Piece&& piece, std::vector<Piece>& out) {
  std::string s;
  for (char c : piece.text) c == ' ' ? s += p.replacement : s += c;
  const bool prepend = p.prepend_scheme == "always" || (p.prepend_scheme == "first" && piece.first);
  if (prepend && s.compare(0, p.replacement.size(), p.replacement) != 0) s = p.replacement + s;
  if (!p.split) {
    out.push_back({s, piece.first});
    return;
  }
  size_t start = 0;  // each piece begins at a replacement character (MergedWithNext)
  for (size_t i = p.replacement.size(); i + p.replacement.size() <= s.size(); ++i)
    if (s.compare(i, p.replacement.size(), p.replacement) == 0) {
      out.push_back({s.substr(start, i - start), piece.first && start == 0});
      start = i;
      i += p.replacement.size() - 1;
    }
  if (start < s.size()) out.push_back({s.substr(start), piece.first && start == 0});
}

std::vector<Piece> pre_tokenize(const std::vector<PreTokenizer>& steps, std::string text, bool first) {
  std::vector<Piece> pieces{{std::move(text), first}}, next;
  for (const auto& p : steps) {
    next.clear();
    for (auto& piece : pieces) {
      if (p.kind == PreTokenizer::Split) split_piece(p, std::move(piece), next);
      else if (p.kind == PreTokenizer::Metaspace) metaspace(p, std::move(piece), next);
      else {  // ByteLevel: the bytes are mapped by the BPE model; here only the prefix space
        if (p.add_prefix_space && piece.text.compare(0, 1, " ") != 0) piece.text = " " + piece.text;
        next.push_back(std::move(piece));
      }
    }
    pieces.swap(next);
  }
  return pieces;
}

// ---- decoders -------------------------------------------------------------------------------

struct Decoder {
  enum Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace } kind;
  explicit Decoder(Kind k) : kind(k) {}
  std::shared_ptr<Regex> pattern;  // Replace
  std::string content;             // Replace: the new text; Strip: the character; Metaspace: the replacement
  int64_t start = 0, stop = 0;     // Strip
  bool prefix = true;              // Metaspace: a leading space of the first token is removed
};

void read_decoder(const json& v, const At& at, std::vector<Decoder>& out) {
  if (v.is_null()) return;
  const std::string type = get_string(member(v, "type", at), at["type"]);
  if (type == "Sequence") {
    const json& list = array_of(member(v, "decoders", at), at["decoders"]);
    for (size_t i = 0; i < list.size(); ++i) read_decoder(list[i], at["decoders"][i], out);
  } else if (type == "ByteLevel" || type == "ByteFallback" || type == "Fuse") {
    out.push_back(Decoder(type == "ByteLevel" ? Decoder::ByteLevel : type == "Fuse" ? Decoder::Fuse : Decoder::ByteFallback));
  } else if (type == "Replace") {
    Decoder d(Decoder::Replace);
    d.pattern = std::make_shared<Regex>(read_pattern(member(v, "pattern", at), at["pattern"]));
    d.content = get_string(member(v, "content", at), at["content"]);
    out.push_back(d);
  } else if (type == "Strip") {
    Decoder d(Decoder::Strip);
    d.content = get_string(member(v, "content", at), at["content"]);
    d.start = get_id(member(v, "start", at), at["start"]);
    d.stop = get_id(member(v, "stop", at), at["stop"]);
    out.push_back(d);
  } else if (type == "Metaspace") {
    Decoder d(Decoder::Metaspace);
    d.content = opt_string(v, "replacement", kSpmSpace, at);
    if (v.contains("prepend_scheme")) d.prefix = get_string(v["prepend_scheme"], at["prepend_scheme"]) != "never";
    else d.prefix = opt_bool(v, "add_prefix_space", true, at);
    out.push_back(d);
  } else {
    at["type"].fail(fmt::format("{} is not supported (Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)", type));
  }
}

// "<0x41>" -> 0x41; -1 when `t` is not a byte token.
int byte_token(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = t[i];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

void byte_fallback(std::vector<std::string>& tokens) {
  std::vector<std::string> out;
  std::string bytes;
  size_t count = 0;
  auto flush = [&] {
    if (bytes.empty()) return;
    const std::string clean = bpe::sanitize_utf8(bytes);
    if (clean == bytes) out.push_back(bytes);
    else
      for (size_t i = 0; i < count; ++i) out.push_back("\xef\xbf\xbd");  // one U+FFFD per byte, as Hugging Face does
    bytes.clear(), count = 0;
  };
  for (auto& t : tokens) {
    const int b = byte_token(t);
    if (b >= 0) {
      bytes += static_cast<char>(b), ++count;
    } else {
      flush();
      out.push_back(std::move(t));
    }
  }
  flush();
  tokens.swap(out);
}

void strip_token(std::string& t, const std::string& c, int64_t start, int64_t stop) {
  if (c.empty()) return;
  for (int64_t i = 0; i < start && t.compare(0, c.size(), c) == 0; ++i) t.erase(0, c.size());
  for (int64_t i = 0; i < stop && t.size() >= c.size() && t.compare(t.size() - c.size(), c.size(), c) == 0; ++i)
    t.erase(t.size() - c.size());
}

std::string decode_tokens(const std::vector<Decoder>& steps, std::vector<std::string> tokens) {
  if (steps.empty()) {  // Hugging Face joins the tokens with spaces when there is no decoder
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const auto& d : steps) {
    switch (d.kind) {
      case Decoder::ByteLevel: {
        std::string bytes;
        for (const auto& t : tokens) bytes += bpe::unicode_to_bytes(t);
        tokens = {bpe::sanitize_utf8(bytes)};
        break;
      }
      case Decoder::Replace: for (auto& t : tokens) t = replace_all(t, *d.pattern, d.content); break;
      case Decoder::ByteFallback: byte_fallback(tokens); break;
      case Decoder::Fuse: {
        std::string all;
        for (const auto& t : tokens) all += t;
        tokens = {all};
        break;
      }
      case Decoder::Strip: for (auto& t : tokens) strip_token(t, d.content, d.start, d.stop); break;
      case Decoder::Metaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string s;
          for (size_t k = 0; k < tokens[i].size();)
            if (tokens[i].compare(k, d.content.size(), d.content) == 0 && !d.content.empty()) s += ' ', k += d.content.size();
            else s += tokens[i][k++];
          if (i == 0 && d.prefix && !s.empty() && s[0] == ' ') s.erase(0, 1);
          tokens[i] = s;
        }
        break;
    }
  }
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

// ---- added tokens and the backend -----------------------------------------------------------

struct AddedToken {
  int64_t id;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, single_word = false;
};

bool is_word_char(uint32_t cp) { return cp == '_' || u_isalnum(static_cast<UChar32>(cp)); }
// The code point before / at byte i of valid UTF-8 `s` (0 at either end).
uint32_t char_before(const std::string& s, size_t i) {
  if (i == 0) return 0;
  size_t k = i - 1;
  while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xc0) == 0x80) --k;
  return bpe::next_code_point(s, k);
}
uint32_t char_at(const std::string& s, size_t i) { return i < s.size() ? bpe::next_code_point(s, i) : 0; }

class HfBackend : public TokenizerBackend {
 public:
  bpe::BpeModel model;
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  std::vector<Decoder> decoders;
  std::vector<AddedToken> added;  // longest first
  std::unordered_map<int64_t, size_t> added_by_id;
  std::unordered_map<std::string, int64_t> added_by_content;
  std::vector<size_t> by_first_byte[256];  // indices into `added`, longest first
  int64_t size = 0;

  void add_token(AddedToken t, const At& at) {
    if (t.content.empty()) at["content"].fail("is empty");
    const std::string* in_vocab = model.piece(t.id);
    if (in_vocab && *in_vocab != t.content)
      at["id"].fail(fmt::format("id {} is '{}' in the vocabulary but '{}' here", t.id, *in_vocab, t.content));
    const int64_t vocab_id = model.token_id(t.content);
    if (vocab_id >= 0 && vocab_id != t.id) at["content"].fail(fmt::format("'{}' has id {} in the vocabulary, not {}", t.content, vocab_id, t.id));
    if (added_by_id.count(t.id)) at["id"].fail(fmt::format("id {} is given twice", t.id));
    if (added_by_content.count(t.content)) at["content"].fail(fmt::format("'{}' is given twice", t.content));
    added_by_id[t.id] = added.size();
    added_by_content[t.content] = t.id;
    added.push_back(std::move(t));
  }
  void finish_added() {
    std::stable_sort(added.begin(), added.end(), [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    added_by_id.clear();
    for (size_t i = 0; i < added.size(); ++i) {
      added_by_id[added[i].id] = i;
      by_first_byte[static_cast<unsigned char>(added[i].content[0])].push_back(i);
    }
    size = model.max_id() + 1;
    for (const auto& t : added) size = std::max(size, t.id + 1);
  }

  std::vector<int64_t> encode(const std::string& raw) const override {
    const std::string text = bpe::sanitize_utf8(raw);
    std::vector<int64_t> ids;
    size_t pos = 0;  // text[pos, ...) is not yet encoded
    for (size_t i = 0; i < text.size();) {
      size_t start = i, end = i;
      const AddedToken* t = match_added(text, i, pos, start, end);
      if (!t) {
        i += bpe::utf8_length(static_cast<unsigned char>(text[i]));
        continue;
      }
      encode_segment(text.substr(pos, start - pos), pos == 0, ids);
      ids.push_back(t->id);
      pos = i = end;
    }
    encode_segment(text.substr(pos), pos == 0, ids);
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
    std::vector<std::string> tokens;
    for (int64_t id : ids) {
      if (skip_special && is_special(id)) continue;
      auto it = added_by_id.find(id);
      if (it != added_by_id.end()) tokens.push_back(added[it->second].content);
      else if (const std::string* p = model.piece(id)) tokens.push_back(*p);
    }
    return decode_tokens(decoders, std::move(tokens));
  }
  std::string piece(int64_t id) const override {
    auto it = added_by_id.find(id);
    if (it != added_by_id.end()) return added[it->second].content;
    const std::string* p = model.piece(id);
    return p ? *p : std::string();
  }
  int64_t token_id(const std::string& piece) const override {
    auto it = added_by_content.find(piece);
    return it != added_by_content.end() ? it->second : model.token_id(piece);
  }
  int64_t vocab_size() const override { return size; }
  bool is_special(int64_t id) const override {
    auto it = added_by_id.find(id);
    return it != added_by_id.end() && added[it->second].special;
  }

 private:
  // The longest added token at text[i] (its span widened by lstrip/rstrip, never before `floor`),
  // or nullptr; single_word tokens only between non-word characters.
  const AddedToken* match_added(const std::string& text, size_t i, size_t floor, size_t& start, size_t& end) const {
    for (size_t k : by_first_byte[static_cast<unsigned char>(text[i])]) {
      const AddedToken& t = added[k];
      if (text.compare(i, t.content.size(), t.content) != 0) continue;
      start = i, end = i + t.content.size();
      if (t.single_word && (is_word_char(char_before(text, i)) || is_word_char(char_at(text, end)))) continue;
      if (t.lstrip)
        while (start > floor && std::isspace(static_cast<unsigned char>(text[start - 1]))) --start;
      if (t.rstrip)
        while (end < text.size() && std::isspace(static_cast<unsigned char>(text[end]))) ++end;
      return &t;
    }
    return nullptr;
  }

  void encode_segment(std::string text, bool first, std::vector<int64_t>& ids) const {
    if (text.empty()) return;
    if (!normalizers.empty()) text = normalize(normalizers, std::move(text));
    if (pre_tokenizers.empty()) {
      model.encode_piece(text, ids);
      return;
    }
    for (const auto& p : pre_tokenize(pre_tokenizers, std::move(text), first)) model.encode_piece(p.text, ids);
  }
};

// ---- reading the files ----------------------------------------------------------------------

struct Loaded {
  std::shared_ptr<HfBackend> backend = std::make_shared<HfBackend>();
  SpecialTokens special;
  std::string kind;
};

json parse_json_file(const std::string& path) {
  const std::string text = read_file(path, kMaxTokenizerBytes);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON ({})", path, e.what()));
  }
}

void read_vocab(const json& vocab, const At& at, int64_t limit, bpe::BpeModel& model) {
  if (!vocab.is_object()) at.fail(fmt::format("must be an object of token: id, not {}", type_name(vocab)));
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const At here = at[it.key()];
    const int64_t id = get_id(it.value(), here);
    if (id >= limit) here.fail(fmt::format("id {} is out of range (the file has {} tokens)", id, limit));
    model.add_token(it.key(), id, here.file + ": " + at.key);
  }
}

void read_merges(const json& merges, const At& at, bpe::BpeModel& model) {
  array_of(merges, at);
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    std::string left, right;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        at[i].fail(fmt::format("'{}' is not two tokens separated by one space", s));
      left = s.substr(0, sp), right = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>(), right = m[1].get<std::string>();
    } else {
      at[i].fail("must be \"a b\" or [\"a\", \"b\"]");
    }
    const std::string err = model.add_merge(left, right);
    if (!err.empty()) at[i].fail(err);
  }
}

// tokenizer.json's model: BPE only.
void read_model(const json& m, const At& at, int64_t limit, bool byte_level, Loaded& out) {
  const std::string type = m.is_object() && m.contains("type") ? get_string(m["type"], at["type"]) : "BPE";
  if (type != "BPE") at["type"].fail(fmt::format("{} is not supported (BPE only)", type));
  if (m.contains("dropout") && !m["dropout"].is_null() && !(m["dropout"].is_number() && m["dropout"].get<double>() == 0))
    at["dropout"].fail("BPE dropout is not supported (a training-time option; set it to null)");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!opt_string(m, k, "", at).empty()) at[k].fail("is not supported (null or \"\" only)");
  bpe::BpeModel& model = out.backend->model;
  read_vocab(member(m, "vocab", at), at["vocab"], limit, model);
  read_merges(member(m, "merges", at), at["merges"], model);
  bpe::BpeOptions o;
  o.byte_level = byte_level;
  o.byte_fallback = opt_bool(m, "byte_fallback", false, at);
  o.ignore_merges = opt_bool(m, "ignore_merges", false, at);
  o.fuse_unk = opt_bool(m, "fuse_unk", false, at);
  const std::string unk = opt_string(m, "unk_token", "", at);
  if (!unk.empty()) {
    o.unk = model.token_id(unk);
    if (o.unk < 0) at["unk_token"].fail(fmt::format("'{}' is not in the vocabulary", unk));
    out.special.unk = o.unk;
  }
  model.set_options(o);
}

void read_added(const json& list, const At& at, HfBackend& b, int64_t limit) {
  if (list.is_null()) return;
  array_of(list, at);
  for (size_t i = 0; i < list.size(); ++i) {
    const json& v = list[i];
    const At here = at[i];
    AddedToken t;
    t.id = get_id(member(v, "id", here), here["id"]);
    if (t.id >= limit) here["id"].fail(fmt::format("id {} is out of range (the file has {} tokens)", t.id, limit));
    t.content = get_string(member(v, "content", here), here["content"]);
    t.special = opt_bool(v, "special", false, here);
    t.lstrip = opt_bool(v, "lstrip", false, here);
    t.rstrip = opt_bool(v, "rstrip", false, here);
    t.single_word = opt_bool(v, "single_word", false, here);
    opt_bool(v, "normalized", false, here);  // checked; every added token is matched in the raw text
    b.add_token(std::move(t), here);
  }
}

// The token a TemplateProcessing post-processor puts first ("<s>", "<|begin_of_text|>"), or "".
std::string template_bos(const json& p) {
  if (!p.is_object()) return {};
  if (p.value("type", "") == "Sequence" && p.contains("processors") && p["processors"].is_array()) {
    for (const auto& q : p["processors"])
      if (auto s = template_bos(q); !s.empty()) return s;
    return {};
  }
  if (p.value("type", "") != "TemplateProcessing" || !p.contains("single") || !p["single"].is_array() || p["single"].empty())
    return {};
  const json& first = p["single"][0];
  if (first.is_object() && first.contains("SpecialToken") && first["SpecialToken"].is_object() &&
      first["SpecialToken"].contains("id") && first["SpecialToken"]["id"].is_string())
    return first["SpecialToken"]["id"].get<std::string>();
  return {};
}

bool has_byte_level(const std::vector<PreTokenizer>& steps) {
  return std::any_of(steps.begin(), steps.end(), [](const PreTokenizer& p) { return p.kind == PreTokenizer::ByteLevel; });
}

Loaded read_tokenizer_json(const std::string& path) {
  const json j = parse_json_file(path);
  const At at{path, ""};
  if (!j.is_object()) throw Error(fmt::format("{}: must be a JSON object (a tokenizer.json), not {}", path, type_name(j)));
  Loaded out;
  HfBackend& b = *out.backend;
  const json& model = member(j, "model", at);
  const json none;
  const json& added = j.contains("added_tokens") ? j["added_tokens"] : none;
  int64_t limit = (added.is_array() ? added.size() : 0);
  if (model.is_object() && model.contains("vocab") && model["vocab"].is_object()) limit += model["vocab"].size();
  read_normalizer(j.value("normalizer", none), at["normalizer"], b.normalizers);
  read_pre_tokenizer(j.value("pre_tokenizer", none), at["pre_tokenizer"], b.pre_tokenizers);
  read_model(model, at["model"], limit, has_byte_level(b.pre_tokenizers), out);
  read_added(added, at["added_tokens"], b, limit);
  read_decoder(j.value("decoder", none), at["decoder"], b.decoders);
  b.finish_added();
  const std::string bos = template_bos(j.value("post_processor", none));
  if (!bos.empty() && b.token_id(bos) >= 0) out.special.bos = b.token_id(bos), out.special.add_bos = true;
  out.kind = b.model.options().byte_level ? "bpe-byte-level" : "bpe-sentencepiece";
  return out;
}

// GPT-2's pair: vocab.json (token: id) and merges.txt ("#version" line, then "a b" per line).
Loaded read_vocab_merges(const std::string& vocab_path, const std::string& merges_path) {
  const json vocab = parse_json_file(vocab_path);
  Loaded out;
  HfBackend& b = *out.backend;
  read_vocab(vocab, At{vocab_path, ""}, vocab.is_object() ? vocab.size() : 0, b.model);
  const std::string text = read_file(merges_path, kMaxTokenizerBytes);
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1, ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
      throw Error(fmt::format("{}:{}: '{}' is not two tokens separated by one space", merges_path, line_no, line));
    const std::string err = b.model.add_merge(line.substr(0, sp), line.substr(sp + 1));
    if (!err.empty()) throw Error(fmt::format("{}:{}: {}", merges_path, line_no, err));
  }
  bpe::BpeOptions o;
  o.byte_level = true;
  b.model.set_options(o);
  PreTokenizer split(PreTokenizer::Split);
  split.pattern = std::make_shared<Regex>(kGpt2Pattern, false, At{vocab_path, "pattern"});
  b.pre_tokenizers = {split, PreTokenizer(PreTokenizer::ByteLevel)};
  b.decoders = {Decoder(Decoder::ByteLevel)};
  const int64_t eot = b.model.token_id("<|endoftext|>");
  if (eot >= 0) {  // GPT-2's one special token, matched in text as Hugging Face's GPT2Tokenizer does
    AddedToken t{eot, "<|endoftext|>", true};
    b.add_token(t, At{vocab_path, "<|endoftext|>"});
  }
  b.finish_added();
  out.kind = "bpe-byte-level";
  return out;
}

// When no configuration names them: the usual names of special tokens.
void guess_special(const TokenizerBackend& tok, SpecialTokens& s) {
  auto find = [&](std::initializer_list<const char*> names) -> int64_t {
    for (const char* n : names)
      if (int64_t id = tok.token_id(n); id >= 0 && tok.is_special(id)) return id;
    return -1;
  };
  if (s.eos < 0) s.eos = find({"</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"});
  if (s.bos < 0) s.bos = find({"<s>", "<|begin_of_text|>", "<bos>"});
  if (s.bos < 0 && s.eos >= 0 && tok.piece(s.eos) == "<|endoftext|>" && tok.token_id("<|im_start|>") < 0) s.bos = s.eos;  // GPT-2
  if (s.unk < 0) s.unk = find({"<unk>"});
  if (s.pad < 0) s.pad = find({"<pad>", "<|pad|>"});
  if (s.stop.empty() && s.eos >= 0) s.stop = {s.eos};
}

// A token named in a config file: "text" or {"content": "text", ...}; its id (-1 for null).
int64_t config_token(const json& v, const At& at, const TokenizerBackend& tok) {
  if (v.is_null()) return -1;
  const std::string s = v.is_object() ? get_string(member(v, "content", at), at["content"]) : get_string(v, at);
  const int64_t id = tok.token_id(s);
  if (id < 0) at.fail(fmt::format("'{}' is not in the tokenizer's vocabulary", s));
  return id;
}

int64_t config_id(const json& v, const At& at, const TokenizerBackend& tok) {
  const int64_t id = get_id(v, at);
  if (id >= tok.vocab_size()) at.fail(fmt::format("id {} is out of range (the tokenizer has {} tokens)", id, tok.vocab_size()));
  return id;
}

void read_token_names(const std::string& path, const TokenizerBackend& tok, SpecialTokens& s) {
  const json j = parse_json_file(path);
  const At at{path, ""};
  if (!j.is_object()) throw Error(fmt::format("{}: must be a JSON object, not {}", path, type_name(j)));
  std::pair<const char*, int64_t*> keys[] = {{"bos_token", &s.bos}, {"eos_token", &s.eos}, {"pad_token", &s.pad}, {"unk_token", &s.unk}};
  for (auto [k, dst] : keys)
    if (j.contains(k)) *dst = config_token(j[k], at[k], tok);
  s.add_bos = opt_bool(j, "add_bos_token", s.add_bos, at);
  if (j.contains("chat_template") && !j["chat_template"].is_null()) {
    const json& c = j["chat_template"];
    if (c.is_string()) {
      s.chat_template = c.get<std::string>();
    } else {  // [{"name": "default", "template": "..."}, ...]
      array_of(c, at["chat_template"]);
      for (size_t i = 0; i < c.size(); ++i)
        if (opt_string(c[i], "name", "", at["chat_template"][i]) == "default")
          s.chat_template = get_string(member(c[i], "template", at["chat_template"][i]), at["chat_template"][i]["template"]);
    }
  }
}

void read_generation_config(const std::string& path, const TokenizerBackend& tok, SpecialTokens& s) {
  const json j = parse_json_file(path);
  const At at{path, ""};
  if (!j.is_object()) throw Error(fmt::format("{}: must be a JSON object, not {}", path, type_name(j)));
  if (j.contains("bos_token_id") && !j["bos_token_id"].is_null() && s.bos < 0) s.bos = config_id(j["bos_token_id"], at["bos_token_id"], tok);
  if (j.contains("pad_token_id") && !j["pad_token_id"].is_null() && s.pad < 0) s.pad = config_id(j["pad_token_id"], at["pad_token_id"], tok);
  if (!j.contains("eos_token_id") || j["eos_token_id"].is_null()) return;
  const json& e = j["eos_token_id"];
  std::vector<int64_t> ids;
  if (e.is_array())
    for (size_t i = 0; i < e.size(); ++i) ids.push_back(config_id(e[i], at["eos_token_id"][i], tok));
  else
    ids.push_back(config_id(e, at["eos_token_id"], tok));
  if (s.eos < 0 && !ids.empty()) s.eos = ids[0];
  for (int64_t id : ids)
    if (std::find(s.stop.begin(), s.stop.end(), id) == s.stop.end()) s.stop.push_back(id);
}

const char* const kConfigFiles[] = {"tokenizer_config.json", "special_tokens_map.json", "generation_config.json"};

}  // namespace

bool is_hf_tokenizer(const std::string& path) {
  const fs::path p(path);
  if (fs::is_directory(p)) return fs::exists(p / "tokenizer.json") || (fs::exists(p / "vocab.json") && fs::exists(p / "merges.txt"));
  const std::string name = p.filename().string();
  return name.size() >= 5 && name.substr(name.size() - 5) == ".json";
}

Tokenizer load_hf_tokenizer(const std::string& path) {
  const fs::path p(path);
  std::vector<std::string> files;
  Loaded t;
  if (fs::is_directory(p)) {
    if (fs::exists(p / "tokenizer.json")) {
      files = {(p / "tokenizer.json").string()};
      t = read_tokenizer_json(files[0]);
    } else if (fs::exists(p / "vocab.json") && fs::exists(p / "merges.txt")) {
      files = {(p / "vocab.json").string(), (p / "merges.txt").string()};
      t = read_vocab_merges(files[0], files[1]);
    } else {
      throw Error(fmt::format("{}: no tokenizer.json or vocab.json + merges.txt in this directory", path));
    }
    read_special_tokens(path, *t.backend, t.special);
    for (const char* f : kConfigFiles)
      if (fs::exists(p / f)) files.push_back((p / f).string());
  } else if (p.filename() == "vocab.json") {
    const fs::path merges = p.parent_path() / "merges.txt";
    if (!fs::exists(merges)) throw Error(fmt::format("{}: no merges.txt beside it (GPT-2's vocab.json needs one)", path));
    files = {path, merges.string()};
    t = read_vocab_merges(path, merges.string());
  } else {
    files = {path};
    t = read_tokenizer_json(path);
  }
  guess_special(*t.backend, t.special);
  return Tokenizer(t.backend, t.special, t.kind, path, files);
}

void read_special_tokens(const std::string& dir, const TokenizerBackend& tok, SpecialTokens& special) {
  const fs::path d(dir);
  const int64_t eos = special.eos;
  if (fs::exists(d / "special_tokens_map.json")) read_token_names((d / "special_tokens_map.json").string(), tok, special);
  if (fs::exists(d / "tokenizer_config.json")) read_token_names((d / "tokenizer_config.json").string(), tok, special);
  if (special.eos != eos || special.stop.empty()) special.stop.clear();
  if (special.eos >= 0 && special.stop.empty()) special.stop = {special.eos};
  if (fs::exists(d / "generation_config.json")) read_generation_config((d / "generation_config.json").string(), tok, special);
}

}  // namespace tunekit::data
