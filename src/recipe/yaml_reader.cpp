#include "src/recipe/yaml_reader.h"

#include <sstream>

namespace tunekit::yaml {

std::string Origin::where(const YAML::Node& node, const std::string& path) const {
  // Values set on the command line are reported by their override (their own marks point
  // into the override's text, not the file).
  for (std::string p = path;;) {
    auto it = overrides.find(p);
    if (it != overrides.end()) return fmt::format("override '{}'", it->second);
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
  } catch (const YAML::ParserException& e) {
    throw Error(fmt::format("{}:{}:{}: invalid YAML: {}", origin.file, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw Error(fmt::format("{}: the recipe must be a YAML mapping", origin.file));
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
    throw Error(fmt::format("override '{}': {}: cannot parse value: {}", text, path, e.msg));
  }
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
    std::string k = it->first.as<std::string>();
    YAML::Node values = it->second;
    std::vector<std::string> list;
    if (values.IsScalar()) {
      list.push_back(values.Scalar());
    } else if (values.IsSequence()) {
      for (size_t i = 0; i < values.size(); ++i) {
        if (!values[i].IsScalar()) type_error(values[i], fmt::format("{}.{}[{}]", child(key), k, i), "a value");
        list.push_back(values[i].Scalar());
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

void Section::type_error(const YAML::Node& n, const std::string& path, const char* what) const {
  std::string got = n.IsScalar()     ? fmt::format("'{}'", n.Scalar())
                    : n.IsSequence() ? std::string("a list")
                    : n.IsMap()      ? std::string("a mapping")
                                     : std::string("nothing");
  throw Error(fmt::format("{}: {}: expected {}, got {}", origin_.where(n, path), path, what, got));
}

void Section::finish() const {
  if (!node_.IsMap()) return;
  std::vector<std::string> known(known_.begin(), known_.end());
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    std::string key = it->first.as<std::string>();
    if (known_.count(key)) continue;
    throw Error(fmt::format("{}: {}: unknown key{}", origin_.where(it->first, child(key)), child(key),
                            did_you_mean(key, known)));
  }
}

}  // namespace tunekit::yaml
