#include "data/bpe.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "util/error.h"

namespace tunekit::data::bpe {
namespace {

constexpr size_t kCacheEntries = 1 << 16;  // cleared when full: a bounded memory, still warm on real text
constexpr size_t kCachedPieceBytes = 256;  // longer pre-tokens (whole sentencepiece-style texts) are not cached

// The well-formed UTF-8 sequences (Unicode Table 3-7): the range of the second byte by lead byte.
bool second_byte_range(unsigned char lead, int& length, unsigned char& lo, unsigned char& hi) {
  lo = 0x80, hi = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) length = 2;
  else if (lead == 0xe0) length = 3, lo = 0xa0;
  else if (lead == 0xed) length = 3, hi = 0x9f;
  else if (lead >= 0xe1 && lead <= 0xef) length = 3;
  else if (lead == 0xf0) length = 4, lo = 0x90;
  else if (lead == 0xf4) length = 4, hi = 0x8f;
  else if (lead >= 0xf1 && lead <= 0xf3) length = 4;
  else return false;
  return true;
}

std::array<std::string, 256> make_byte_table() {
  std::array<std::string, 256> t;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    append_utf8(t[b], printable ? uint32_t(b) : uint32_t(256 + extra++));
  }
  return t;
}

const std::array<std::string, 256>& byte_table() {
  static const std::array<std::string, 256> table = make_byte_table();
  return table;
}

const std::unordered_map<uint32_t, unsigned char>& unicode_byte_table() {
  static const std::unordered_map<uint32_t, unsigned char> table = [] {
    std::unordered_map<uint32_t, unsigned char> t;
    for (int b = 0; b < 256; ++b) {
      size_t i = 0;
      t.emplace(next_code_point(byte_table()[b], i), static_cast<unsigned char>(b));
    }
    return t;
  }();
  return table;
}

}  // namespace

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  size_t i = 0, copied = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto lead = static_cast<unsigned char>(s[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    int length = 0;
    unsigned char lo, hi;
    size_t k = 0;  // continuation bytes that fit a well-formed sequence
    if (second_byte_range(lead, length, lo, hi)) {
      while (i + 1 + k < n && k + 1 < static_cast<size_t>(length)) {
        const auto c = static_cast<unsigned char>(s[i + 1 + k]);
        if (k == 0 ? (c < lo || c > hi) : (c < 0x80 || c > 0xbf)) break;
        ++k;
      }
      if (k + 1 == static_cast<size_t>(length)) {
        i += length;
        continue;
      }
    }
    out.append(s.substr(copied, i - copied));
    out += "\xef\xbf\xbd";  // U+FFFD for the maximal subpart (or the lone byte)
    i += 1 + k;
    copied = i;
  }
  if (copied == 0) return std::string(s);
  out.append(s.substr(copied));
  return out;
}

size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xe0) return 2;
  if (lead < 0xf0) return 3;
  return 4;
}

uint32_t next_code_point(std::string_view s, size_t& i) {
  const auto lead = static_cast<unsigned char>(s[i]);
  const size_t len = std::min(utf8_length(lead), s.size() - i);
  uint32_t cp = len == 1 ? lead : lead & (0x7f >> len);
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
  i += len;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

const std::string& byte_to_unicode(unsigned char b) { return byte_table()[b]; }

std::string unicode_to_bytes(std::string_view token) {
  std::string out;
  const auto& table = unicode_byte_table();
  for (size_t i = 0; i < token.size();) {
    const size_t start = i;
    auto it = table.find(next_code_point(token, i));
    if (it != table.end()) out += static_cast<char>(it->second);
    else out.append(token.substr(start, i - start));
  }
  return out;
}

void BpeModel::add_token(const std::string& piece, int64_t id, const std::string& where) {
  if (id < 0 || id > INT32_MAX) throw Error(fmt::format("{}: id {} is out of range", where, id));
  if (static_cast<size_t>(id) >= pieces_.size()) {
    pieces_.resize(id + 1);
    present_.resize(id + 1, false);
  }
  if (present_[id])
    throw Error(fmt::format("{}: id {} is given to both '{}' and '{}'", where, id, pieces_[id], piece));
  if (!ids_.emplace(piece, static_cast<int32_t>(id)).second)
    throw Error(fmt::format("{}: '{}' appears twice (ids {} and {})", where, piece, ids_.at(piece), id));
  pieces_[id] = piece;
  present_[id] = true;
}

std::string BpeModel::add_merge(const std::string& left, const std::string& right) {
  auto a = ids_.find(left), b = ids_.find(right), m = ids_.find(left + right);
  if (a == ids_.end()) return fmt::format("'{}' is not in the vocabulary", left);
  if (b == ids_.end()) return fmt::format("'{}' is not in the vocabulary", right);
  if (m == ids_.end()) return fmt::format("'{}' (the merged token) is not in the vocabulary", left + right);
  // A pair listed twice keeps its first (lowest) rank, as the ranks are read in order.
  merge_rank_.emplace(key(a->second, b->second), Merge{static_cast<int32_t>(merge_rank_.size()), m->second});
  return {};
}

void BpeModel::set_options(const BpeOptions& options) {
  options_ = options;
  for (int b = 0; b < 256; ++b) {
    const std::string name = options.byte_level ? byte_to_unicode(static_cast<unsigned char>(b)) : fmt::format("<0x{:02X}>", b);
    auto it = ids_.find(name);
    byte_ids_[b] = it == ids_.end() ? -1 : it->second;
  }
  std::lock_guard<std::mutex> lock(cache_mutex_);
  cache_.clear();
}

int64_t BpeModel::token_id(const std::string& piece) const {
  auto it = ids_.find(piece);
  return it == ids_.end() ? -1 : it->second;
}

const std::string* BpeModel::piece(int64_t id) const {
  if (id < 0 || id >= static_cast<int64_t>(pieces_.size()) || !present_[id]) return nullptr;
  return &pieces_[id];
}

// The symbols before any merge: one per byte (byte-level) or per character (else), characters not
// in the vocabulary as byte fallback tokens, unk (fused when asked) or nothing.
void BpeModel::initial_symbols(std::string_view piece, std::vector<int32_t>& symbols) const {
  auto unknown = [&] {
    if (options_.unk < 0) return;
    if (options_.fuse_unk && !symbols.empty() && symbols.back() == options_.unk) return;
    symbols.push_back(static_cast<int32_t>(options_.unk));
  };
  if (options_.byte_level) {
    for (unsigned char b : piece) {
      if (byte_ids_[b] >= 0) symbols.push_back(byte_ids_[b]);
      else unknown();
    }
    return;
  }
  std::string ch;
  for (size_t i = 0; i < piece.size();) {
    const size_t len = std::min(utf8_length(static_cast<unsigned char>(piece[i])), piece.size() - i);
    ch.assign(piece.substr(i, len));
    i += len;
    auto it = ids_.find(ch);
    if (it != ids_.end()) {
      symbols.push_back(it->second);
      continue;
    }
    bool bytes = options_.byte_fallback;
    for (unsigned char b : ch) bytes = bytes && byte_ids_[b] >= 0;
    if (!bytes) {
      unknown();
      continue;
    }
    for (unsigned char b : ch) symbols.push_back(byte_ids_[b]);
  }
}

// The standard loop: repeatedly merge the adjacent pair of lowest rank (the leftmost among equals),
// with a heap of candidate pairs whose stale entries are skipped when popped.
void BpeModel::merge(std::vector<int32_t>& symbols) const {
  const int n = static_cast<int>(symbols.size());
  if (n < 2) return;
  struct Candidate {
    int32_t rank, pos, merged;
    bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }  // min-heap
  };
  std::vector<int32_t> prev(n), next(n);
  std::vector<char> alive(n, 1);
  std::vector<Candidate> heap;
  heap.reserve(n);
  auto push = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    auto it = merge_rank_.find(key(symbols[pos], symbols[next[pos]]));
    if (it == merge_rank_.end()) return;
    heap.push_back({it->second.rank, pos, it->second.merged});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate c = heap.back();
    heap.pop_back();
    if (!alive[c.pos] || next[c.pos] < 0) continue;
    const int right = next[c.pos];
    auto it = merge_rank_.find(key(symbols[c.pos], symbols[right]));
    if (it == merge_rank_.end() || it->second.rank != c.rank || it->second.merged != c.merged) continue;
    symbols[c.pos] = c.merged;
    alive[right] = 0;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  int out = 0;
  for (int i = 0; i >= 0; i = next[i]) symbols[out++] = symbols[i];
  symbols.resize(out);
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int64_t>& out) const {
  if (piece.empty()) return;
  const bool cached = piece.size() <= kCachedPieceBytes;
  if (cached) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(std::string(piece));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  if (options_.ignore_merges) {
    std::string whole;
    if (options_.byte_level)
      for (unsigned char b : piece) whole += byte_to_unicode(b);
    auto it = ids_.find(options_.byte_level ? whole : std::string(piece));
    if (it != ids_.end()) symbols.push_back(it->second);
  }
  if (symbols.empty()) {
    initial_symbols(piece, symbols);
    merge(symbols);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (cached) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheEntries) cache_.clear();
    cache_.emplace(std::string(piece), std::move(symbols));
  }
}

}  // namespace tunekit::data::bpe
