// The generic YAML reader under the recipe parser: where each value came from (file:line:col or
// the override that set it), `key.path=value` overrides, and Section, a mapping that remembers
// which keys were read so the others are reported as unknown with a did-you-mean.
#pragma once
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "util/enum_table.h"
#include "util/error.h"
#include "util/text.h"

namespace tunekit::yaml {

// Where a value came from: a file position, or the command-line override that set it.
struct Origin {
  std::string file;
  std::map<std::string, std::string> overrides;  // key path -> "key.path=value"

  // "file:line:col", or "override 'key.path=value'" for values (and sections) set by one.
  std::string where(const YAML::Node& node, const std::string& path) const;
};

// Parses the YAML text (an empty text is an empty mapping) and applies the overrides, recording
// them in `origin`. Errors name the file position or the override. Also refuses what yaml-cpp lets
// through: a key given twice in one mapping (yaml-cpp keeps the first), a key that is not a plain
// scalar, and a quoted scalar with no closing quote (yaml-cpp reads it to the end of the text).
YAML::Node load(const std::string& yaml_text, Origin& origin, const std::vector<std::string>& overrides);

// Sets key.path to value in root, creating sections on the way.
void apply_override(YAML::Node& root, const std::string& text, Origin& origin);

// s with control characters (and bytes of invalid text such as NUL) written as \xNN, for messages.
std::string printable(const std::string& s);
// Why s cannot be a recipe string ("" when it can): a control character (NUL, newline, tab, ...)
// or leading/trailing spaces (what an unterminated quote leaves behind).
std::string string_problem(const std::string& s);

// A mapping section of the recipe that remembers which keys were read, so keys nobody read are
// reported as unknown (with a suggestion) by finish().
class Section {
 public:
  Section(YAML::Node node, std::string path, const Origin& origin);

  bool has(const std::string& key) const;
  // The key's node (a null node when absent), marking the key as known.
  YAML::Node take(const std::string& key);
  // A child section; an absent key gives an empty one.
  Section section(const std::string& key);

  template <typename T>
  void read(const std::string& key, T& out) {
    known_.insert(key);
    if (!has(key)) return;
    out = convert<T>(node_[key], child(key));
  }

  // Reads a name from E's table (util/enum_table.h); a name outside it lists the table's names.
  template <typename E>
  E choice(const std::string& key, E fallback) {
    std::string v = enum_name(fallback);
    read(key, v);
    if (auto e = enum_from_name<E>(v)) return *e;
    const auto names = enum_names<E>();
    fail(key, fmt::format("'{}' is not one of: {}{}", v, join(names, ", "), did_you_mean(v, names)));
  }

  // A mapping of arbitrary keys to lists of scalars (e.g. sweep.grid), in file order.
  std::vector<std::pair<std::string, std::vector<std::string>>> string_lists(const std::string& key);

  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  // "where: path: message" at node n, which sits at `path`.
  [[noreturn]] void fail_at(const YAML::Node& n, const std::string& path, const std::string& message) const;
  // "expected <what>, got <what n is>" at n, which sits at `path`.
  [[noreturn]] void type_error(const YAML::Node& n, const std::string& path, const char* what) const;
  // Reports the first key nobody read.
  void finish() const;

  // Range checks on a value read from `key`, failing with the key, the range and the value.
  // Integers: lo <= v <= hi ("must be in lo..hi, got v"; `note` follows the range).
  void check_range(const std::string& key, int64_t v, int64_t lo, int64_t hi, const std::string& note = "") const;
  // Reals: v in the interval from lo to hi, each end open or closed ("must be in [0, 1), got 1.5").
  void check_real(const std::string& key, double v, double lo, bool lo_open, double hi, bool hi_open) const;

  const Origin& origin() const { return origin_; }
  std::string child(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

 private:
  std::string label() const { return path_.empty() ? "recipe" : path_; }

  template <typename T>
  T convert(const YAML::Node& n, const std::string& path) const;

  YAML::Node node_;
  std::string path_;
  const Origin& origin_;
  std::set<std::string> known_;
};

// One YAML scalar (or list) as T, with Section's error messages.
template <typename T>
T Section::convert(const YAML::Node& n, const std::string& path) const {
  if constexpr (std::is_same_v<T, bool>) {
    static const std::set<std::string> yes{"true", "True", "yes", "on"}, no{"false", "False", "no", "off"};
    if (n.IsScalar() && yes.count(n.Scalar())) return true;
    if (n.IsScalar() && no.count(n.Scalar())) return false;
    type_error(n, path, "true or false");
  } else if constexpr (std::is_integral_v<T>) {
    if (n.IsScalar()) {
      const std::string& s = n.Scalar();
      char* end = nullptr;
      errno = 0;
      long long v = std::strtoll(s.c_str(), &end, 10);
      if (!s.empty() && *end == '\0') {
        using L = std::numeric_limits<T>;  // 4294967297 into an int is an error, not 1
        static_assert(std::is_signed_v<T>, "recipe integers are signed");
        if (errno == ERANGE || v < static_cast<long long>(L::min()) || v > static_cast<long long>(L::max()))
          type_error(n, path, fmt::format("an integer in {}..{}", L::min(), L::max()).c_str());
        return static_cast<T>(v);
      }
    }
    type_error(n, path, "an integer");
  } else if constexpr (std::is_floating_point_v<T>) {
    if (n.IsScalar()) {
      const std::string& s = n.Scalar();
      char* end = nullptr;
      double v = std::strtod(s.c_str(), &end);
      if (!s.empty() && *end == '\0') {
        if (!std::isfinite(v)) type_error(n, path, "a finite number");  // nan, inf, 1e400
        return v;
      }
      static const std::set<std::string> yaml_special{".nan", ".NaN", ".NAN", ".inf",  ".Inf",  ".INF",
                                                      "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF"};
      if (yaml_special.count(s)) type_error(n, path, "a finite number");
    }
    type_error(n, path, "a number");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!n.IsScalar()) type_error(n, path, "a string");
    std::string problem = string_problem(n.Scalar());
    if (!problem.empty()) fail_at(n, path, problem);
    return n.Scalar();
  } else {  // std::vector<U> or std::array<U, N>
    using U = typename T::value_type;
    if (!n.IsSequence()) type_error(n, path, "a list");
    std::vector<U> items;
    for (size_t i = 0; i < n.size(); ++i) items.push_back(convert<U>(n[i], fmt::format("{}[{}]", path, i)));
    if constexpr (std::is_same_v<T, std::vector<U>>) {
      return items;
    } else {
      T arr{};
      if (items.size() != arr.size())
        throw Error(fmt::format("{}: {}: expected a list of {} numbers, got {}", origin_.where(n, path), path,
                                arr.size(), items.size()));
      std::copy(items.begin(), items.end(), arr.begin());
      return arr;
    }
  }
}

}  // namespace tunekit::yaml
