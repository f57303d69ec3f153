#include "src/recipe/yaml_reader.h"

#include <cmath>
#include <functional>
#include <sstream>

namespace tunekit::yaml {
namespace {

constexpr int kMaxDepth = 64;  // nesting a recipe never needs; deeper is refused, not recursed into

using WhereFn = std::function<std::string(const YAML::Node&, const std::string&)>;

// A quoted scalar whose quote never closes: yaml-cpp reads it to the end of the text (folding the
// last line break into a space), so `name: "abc` becomes "abc ". The node's mark is its opening quote.
bool unterminated_quote(const YAML::Node& n, const std::string& text) {
  const YAML::Mark m = n.Mark();
  if (m.pos < 0 || static_cast<size_t>(m.pos) >= text.size()) return false;
  const char q = text[m.pos];
  if (q != '"' && q != '\'') return false;
  for (size_t i = m.pos + 1; i < text.size(); ++i) {
    if (q == '"' && text[i] == '\\') {
      ++i;  // an escape
    } else if (text[i] == q) {
      if (q == '\'' && i + 1 < text.size() && text[i + 1] == '\'') ++i;  // '' inside single quotes
      else return false;
    }
  }
  return true;
}

// Walks every mapping and list under n: a key given twice (both places named), a key that is not
// a plain scalar or holds a control character, an unterminated quote, nesting past kMaxDepth.
void check_tree(const YAML::Node& n, const std::string& path, const std::string& text, const WhereFn& where,
                int depth) {
  const std::string label = path.empty() ? "recipe" : path;
  if (depth > kMaxDepth)
    throw Error(fmt::format("{}: {}: nested deeper than {} levels", where(n, path), label.substr(0, label.find('[')),
                            kMaxDepth));
  if (n.IsScalar()) {
    if (unterminated_quote(n, text))
      throw Error(fmt::format("{}: {}: the quoted string has no closing quote", where(n, path), label));
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) check_tree(n[i], fmt::format("{}[{}]", path, i), text, where, depth + 1);
  } else if (n.IsMap()) {
    std::map<std::string, YAML::Node> seen;
    for (auto it = n.begin(); it != n.end(); ++it) {
      if (!it->first.IsScalar())
        throw Error(fmt::format("{}: {}: a key must be a plain name, not a {}", where(it->first, path), label,
                                it->first.IsSequence() ? "list" : it->first.IsMap() ? "mapping" : "null"));
      const std::string& key = it->first.Scalar();
      const std::string at = path.empty() ? key : path + "." + key;
      if (unterminated_quote(it->first, text))
        throw Error(fmt::format("{}: {}: the quoted key has no closing quote", where(it->first, path), label));
      const std::string problem = string_problem(key);
      if (key.empty() || !problem.empty())
        throw Error(fmt::format("{}: {}: key '{}' {}", where(it->first, path), label, printable(key),
                                key.empty() ? "is empty" : problem));
      auto [first, fresh] = seen.emplace(key, it->first);
      if (!fresh)
        throw Error(
            fmt::format("{}: {}: duplicate key (first at {})", where(it->first, at), at, where(first->second, at)));
      check_tree(it->second, at, text, where, depth + 1);
    }
  }
}

}  // namespace

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s)
    out += (c < 0x20 || c == 0x7f) ? fmt::format("\\x{:02x}", c) : std::string(1, static_cast<char>(c));
  return out;
}

std::string string_problem(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f)
      return fmt::format("contains a control character (byte 0x{:02x} at offset {}) in '{}'", c, i, printable(s));
  }
  if (!s.empty() && (s.front() == ' ' || s.back() == ' '))
    return fmt::format("'{}' has leading or trailing spaces (an unterminated quote?)", s);
  return "";
}

std::string Origin::where(const YAML::Node& node, const std::string& path) const {
  // Values set on the command line are reported by their override (their own marks point
  // into the override's text, not the file).
  for (std::string p = path;;) {
    auto it = overrides.find(p);
    if (it != overrides.end()) return fmt::format("override '{}'", printable(it->second));
    auto dot = p.rfind('.');
    if (dot == std::string::npos) break;
    p = p.substr(0, dot);
  }
  if (node.IsDefined()) {
    YAML::Mark m = node.Mark();
    if (m.line >= 0) return fmt::format("{}:{}:{}", file, m.line + 1, m.column + 1);
  }
  return file;
}

YAML::Node load(const std::string& yaml_text, Origin& origin, const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) throw Error(fmt::format("{}: invalid YAML: {}", origin.file, e.msg));
    throw Error(fmt::format("{}:{}:{}: invalid YAML: {}", origin.file, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw Error(fmt::format("{}: the recipe must be a YAML mapping", origin.file));
  const WhereFn in_file = [&](const YAML::Node& n, const std::string& path) { return origin.where(n, path); };
  check_tree(root, "", yaml_text, in_file, 0);
  for (const auto& o : overrides) apply_override(root, o, origin);
  return root;
}

void apply_override(YAML::Node& root, const std::string& text, Origin& origin) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) throw Error(fmt::format("override '{}': expected key.path=value", text));
  std::string path = text.substr(0, eq), value_text = text.substr(eq + 1);
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("override '{}': {}: cannot parse value: {}", printable(text), printable(path), e.msg));
  }
  const std::string problem = string_problem(path);
  if (!problem.empty()) throw Error(fmt::format("override '{}': key path {}", printable(text), problem));
  const WhereFn at_override = [&](const YAML::Node&, const std::string&) {
    return fmt::format("override '{}'", printable(text));
  };
  check_tree(value, path, value_text, at_override, 0);
  std::vector<std::string> keys;
  std::stringstream ss(path);
  for (std::string k; std::getline(ss, k, '.');) {
    if (k.empty()) throw Error(fmt::format("override '{}': empty key in '{}'", text, path));
    keys.push_back(k);
  }
  YAML::Node cur;
  cur.reset(root);
  std::string at;
  for (size_t i = 0; i + 1 < keys.size(); ++i) {
    at += (i ? "." : "") + keys[i];
    YAML::Node next = cur[keys[i]];
    if (next.IsDefined() && !next.IsNull() && !next.IsMap())
      throw Error(fmt::format("override '{}': {} is a value, not a section", text, at));
    if (!next.IsDefined() || next.IsNull()) cur[keys[i]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node child = cur[keys[i]];
    cur.reset(child);
  }
  cur[keys.back()] = value;
  origin.overrides[path] = text;
}

Section::Section(YAML::Node node, std::string path, const Origin& origin)
    : node_(std::move(node)), path_(std::move(path)), origin_(origin) {
  if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap())
    throw Error(fmt::format("{}: {}: expected a mapping", origin_.where(node_, path_), label()));
}

bool Section::has(const std::string& key) const {
  return node_.IsMap() && node_[key].IsDefined() && !node_[key].IsNull();
}

YAML::Node Section::take(const std::string& key) {
  known_.insert(key);
  return has(key) ? node_[key] : YAML::Node();
}

Section Section::section(const std::string& key) {
  known_.insert(key);
  return Section(node_.IsMap() ? node_[key] : YAML::Node(), child(key), origin_);
}

std::vector<std::pair<std::string, std::vector<std::string>>> Section::string_lists(const std::string& key) {
  known_.insert(key);
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  if (!has(key)) return out;
  YAML::Node n = node_[key];
  if (!n.IsMap()) type_error(n, child(key), "a mapping of key paths to lists");
  for (auto it = n.begin(); it != n.end(); ++it) {
    std::string k = it->first.Scalar();  // load() checked that keys are plain scalars
    YAML::Node values = it->second;
    std::vector<std::string> list;
    if (values.IsScalar()) {
      list.push_back(convert<std::string>(values, child(key) + "." + k));
    } else if (values.IsSequence()) {
      for (size_t i = 0; i < values.size(); ++i) {
        const std::string at = fmt::format("{}.{}[{}]", child(key), k, i);
        if (!values[i].IsScalar()) type_error(values[i], at, "a value");
        list.push_back(convert<std::string>(values[i], at));
      }
    } else {
      type_error(values, child(key) + "." + k, "a list of values");
    }
    if (list.empty())
      throw Error(fmt::format("{}: {}.{}: empty list", origin_.where(values, child(key)), child(key), k));
    out.emplace_back(k, list);
  }
  return out;
}

void Section::fail(const std::string& key, const std::string& message) const {
  YAML::Node n = node_.IsMap() ? node_[key] : YAML::Node();
  throw Error(fmt::format("{}: {}: {}", origin_.where(n, child(key)), child(key), message));
}

void Section::fail_at(const YAML::Node& n, const std::string& path, const std::string& message) const {
  throw Error(fmt::format("{}: {}: {}", origin_.where(n, path), path, message));
}

void Section::check_range(const std::string& key, int64_t v, int64_t lo, int64_t hi, const std::string& note) const {
  if (v < lo || v > hi) fail(key, fmt::format("must be in {}..{}{}, got {}", lo, hi, note, v));
}

void Section::check_real(const std::string& key, double v, double lo, bool lo_open, double hi, bool hi_open) const {
  const bool ok = (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  if (ok) return;
  if (std::isinf(hi))
    fail(key, fmt::format("must be {} {}, got {}", lo_open ? ">" : ">=", lo, v));
  fail(key, fmt::format("must be in {}{}, {}{}, got {}", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]", v));
}

void Section::type_error(const YAML::Node& n, const std::string& path, const char* what) const {
  std::string got = n.IsScalar()     ? fmt::format("'{}'", printable(n.Scalar()))
                    : n.IsSequence() ? std::string("a list")
                    : n.IsMap()      ? std::string("a mapping")
                                     : std::string("nothing");
  throw Error(fmt::format("{}: {}: expected {}, got {}", origin_.where(n, path), path, what, got));
}

void Section::finish() const {
  if (!node_.IsMap()) return;
  std::vector<std::string> known(known_.begin(), known_.end());
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    std::string key = it->first.IsScalar() ? it->first.Scalar() : std::string("?");
    if (known_.count(key)) continue;
    throw Error(fmt::format("{}: {}: unknown key{}", origin_.where(it->first, child(key)), child(key),
                            did_you_mean(key, known)));
  }
}

}  // namespace tunekit::yaml
