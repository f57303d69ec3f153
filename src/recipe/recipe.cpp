#include "src/recipe/recipe.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "util/error.h"
#include "util/text.h"

namespace tunekit {
namespace {

// Where a value came from: a file position, or the command-line override that set it.
struct Origin {
  std::string file;
  std::map<std::string, std::string> overrides;  // key path -> "key.path=value"

  std::string where(const YAML::Node& node, const std::string& path) const {
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
};

// A mapping section of the recipe that remembers which keys were read, so keys nobody
// read are reported as unknown (with a suggestion) by finish().
class Section {
 public:
  Section(YAML::Node node, std::string path, const Origin& origin)
      : node_(std::move(node)), path_(std::move(path)), origin_(origin) {
    if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap())
      throw Error(fmt::format("{}: {}: expected a mapping", origin_.where(node_, path_), label()));
  }

  bool has(const std::string& key) const {
    return node_.IsMap() && node_[key].IsDefined() && !node_[key].IsNull();
  }

  Section section(const std::string& key) {
    known_.insert(key);
    return Section(node_.IsMap() ? node_[key] : YAML::Node(), child(key), origin_);
  }

  template <typename T>
  void read(const std::string& key, T& out) {
    known_.insert(key);
    if (!has(key)) return;
    out = convert<T>(node_[key], child(key));
  }

  [[noreturn]] void fail(const std::string& key, const std::string& message) const {
    YAML::Node n = node_.IsMap() ? node_[key] : YAML::Node();
    throw Error(fmt::format("{}: {}: {}", origin_.where(n, child(key)), child(key), message));
  }

  // Reads an enum-like string that must be one of `choices`.
  std::string choice(const std::string& key, const std::string& fallback,
                     const std::vector<std::string>& choices) {
    std::string v = fallback;
    read(key, v);
    for (const auto& c : choices)
      if (c == v) return v;
    fail(key, fmt::format("'{}' is not one of: {}{}", v, join(choices, ", "), did_you_mean(v, choices)));
  }

  // A mapping of arbitrary keys to lists of scalars (e.g. sweep.grid), in file order.
  std::vector<std::pair<std::string, std::vector<std::string>>> string_lists(const std::string& key) {
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
      if (list.empty()) throw Error(fmt::format("{}: {}.{}: empty list", origin_.where(values, child(key)), child(key), k));
      out.emplace_back(k, list);
    }
    return out;
  }

  // A list of mappings of key paths to values (sweep.variants): each becomes a set of overrides.
  // `name` and `series` are labels, not overrides. Lists are kept as YAML flow text.
  std::vector<SweepVariant> variant_list(const std::string& key) {
    known_.insert(key);
    std::vector<SweepVariant> out;
    if (!has(key)) return out;
    YAML::Node n = node_[key];
    if (!n.IsSequence()) type_error(n, child(key), "a list of mappings");
    std::set<std::string> names;
    for (size_t i = 0; i < n.size(); ++i) {
      const std::string at = fmt::format("{}[{}]", child(key), i);
      if (!n[i].IsMap()) type_error(n[i], at, "a mapping of key paths to values");
      SweepVariant v;
      std::vector<std::string> parts;
      for (auto it = n[i].begin(); it != n[i].end(); ++it) {
        std::string k = it->first.as<std::string>();
        YAML::Node val = it->second;
        std::string text;
        if (val.IsScalar()) {
          text = val.Scalar();
        } else if (val.IsNull()) {
          text = "null";  // removes the key (e.g. a section the variant's kind does not take)
        } else if (val.IsSequence()) {
          YAML::Emitter e;
          e.SetStringFormat(YAML::DoubleQuoted);  // keeps globs like "*.q" from reading as aliases
          e << YAML::Flow << val;
          text = e.c_str();
        } else {
          type_error(val, at + "." + k, "a value or a list");
        }
        if (k == "name") v.name = text;
        else if (k == "series") v.series = text;
        else {
          v.overrides.emplace_back(k, text);
          parts.push_back(k.substr(k.rfind('.') + 1) + "=" + text);
        }
      }
      if (v.name.empty()) v.name = join(parts, " ");
      if (v.series.empty()) v.series = v.name;
      if (!names.insert(v.name).second)
        throw Error(fmt::format("{}: {}: variant name '{}' is used twice", origin_.where(n[i], at), at, v.name));
      out.push_back(std::move(v));
    }
    return out;
  }

  void finish() const {
    if (!node_.IsMap()) return;
    std::vector<std::string> known(known_.begin(), known_.end());
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::string key = it->first.as<std::string>();
      if (known_.count(key)) continue;
      throw Error(fmt::format("{}: {}: unknown key{}", origin_.where(it->first, child(key)),
                              child(key), did_you_mean(key, known)));
    }
  }

 private:
  std::string label() const { return path_.empty() ? "recipe" : path_; }
  std::string child(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  [[noreturn]] void type_error(const YAML::Node& n, const std::string& path, const char* what) const {
    std::string got = n.IsScalar() ? fmt::format("'{}'", n.Scalar())
                      : n.IsSequence() ? std::string("a list")
                      : n.IsMap() ? std::string("a mapping")
                                  : std::string("nothing");
    throw Error(fmt::format("{}: {}: expected {}, got {}", origin_.where(n, path), path, what, got));
  }

  template <typename T>
  T convert(const YAML::Node& n, const std::string& path) const {
    if constexpr (std::is_same_v<T, std::string>) {
      if (!n.IsScalar()) type_error(n, path, "a string");
      return n.Scalar();
    } else if constexpr (std::is_same_v<T, bool>) {
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
        if (!s.empty() && *end == '\0' && errno == 0) return static_cast<T>(v);
      }
      type_error(n, path, "an integer");
    } else if constexpr (std::is_floating_point_v<T>) {
      if (n.IsScalar()) {
        const std::string& s = n.Scalar();
        char* end = nullptr;
        double v = std::strtod(s.c_str(), &end);
        if (!s.empty() && *end == '\0') return v;
      }
      type_error(n, path, "a number");
    } else {  // std::vector<U> or std::array<U, N>
      using U = typename T::value_type;
      if (!n.IsSequence()) type_error(n, path, "a list");
      std::vector<U> items;
      for (size_t i = 0; i < n.size(); ++i)
        items.push_back(convert<U>(n[i], fmt::format("{}[{}]", path, i)));
      if constexpr (std::is_same_v<T, std::vector<U>>) {
        return items;
      } else {
        T arr{};
        if (items.size() != arr.size())
          throw Error(fmt::format("{}: {}: expected a list of {} numbers, got {}", origin_.where(n, path),
                                  path, arr.size(), items.size()));
        std::copy(items.begin(), items.end(), arr.begin());
        return arr;
      }
    }
  }

  YAML::Node node_;
  std::string path_;
  const Origin& origin_;
  std::set<std::string> known_;
};

void apply_override(YAML::Node& root, const std::string& text, Origin& origin) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    throw Error(fmt::format("override '{}': expected key.path=value", text));
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


}  // namespace

std::string to_string(AdapterKind k) {
  switch (k) {
    case AdapterKind::None: return "none";
    case AdapterKind::LinearProbe: return "linear_probe";
    case AdapterKind::Lora: return "lora";
    case AdapterKind::Dora: return "dora";
    case AdapterKind::Hora: return "hora";
    case AdapterKind::Doran: return "doran";
    case AdapterKind::PromptExpert: return "prompt_expert";
    case AdapterKind::Prefix: return "prefix";
  }
  return "?";
}
std::string to_string(HypernetShare s) {
  return s == HypernetShare::Target ? "target" : s == HypernetShare::Model ? "model" : "parent";
}
std::string to_string(HypernetActivation a) {
  return a == HypernetActivation::Relu ? "relu" : a == HypernetActivation::Gelu ? "gelu" : "tanh";
}
std::string to_string(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::Constant: return "constant";
    case ScheduleKind::Cosine: return "cosine";
    case ScheduleKind::Linear: return "linear";
  }
  return "?";
}
std::string to_string(OptimizerKind k) { return k == OptimizerKind::AdamW ? "adamw" : "sgd"; }

Recipe parse_recipe(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  Origin origin{source, {}};
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw Error(fmt::format("{}:{}:{}: invalid YAML: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw Error(fmt::format("{}: the recipe must be a YAML mapping", source));
  for (const auto& o : overrides) apply_override(root, o, origin);

  Recipe r;
  r.source = source;
  Section top(root, "", origin);
  top.read("seed", r.seed);

  // threads: a number (BLAS threads, LibTorch at 1) or {torch: N, blas: N}
  if (top.has("threads") && root["threads"].IsScalar()) {
    top.read("threads", r.threads.blas);
  } else {
    Section t = top.section("threads");
    t.read("torch", r.threads.torch);
    t.read("blas", r.threads.blas);
    t.finish();
  }
  if (r.threads.torch < 0 || r.threads.blas < 0) top.fail("threads", "thread counts must be >= 0 (0 = all cores)");

  {
    Section m = top.section("model");
    auto& c = r.model;
    c.kind = m.choice("kind", c.kind, {"vit", "text"});
    for (const char* key : {"image_size", "channels", "patch"})
      if (m.has(key) && c.kind != "vit") m.fail(key, fmt::format("only applies to model.kind vit (kind is {})", c.kind));
    for (const char* key : {"vocab_size", "max_seq_len", "task", "pooling", "causal", "pad_id"})
      if (m.has(key) && c.kind != "text") m.fail(key, fmt::format("only applies to model.kind text (kind is {})", c.kind));
    m.read("vocab_size", c.vocab_size);
    m.read("max_seq_len", c.max_seq_len);
    m.read("pad_id", c.pad_id);
    c.task = m.choice("task", c.task, {"classify", "causal_lm"});
    c.pooling = m.choice("pooling", c.pooling, {"mean", "last"});
    m.read("causal", c.causal);
    if (m.has("pooling") && c.task != "classify") m.fail("pooling", "only applies to task: classify");
    if (c.is_lm() && !c.causal) m.fail("causal", "a causal LM needs causal attention");
    m.read("image_size", c.image_size);
    m.read("channels", c.channels);
    m.read("patch", c.patch);
    m.read("dim", c.dim);
    m.read("depth", c.depth);
    m.read("heads", c.heads);
    m.read("mlp_ratio", c.mlp_ratio);
    m.read("num_classes", c.num_classes);
    m.read("dropout", c.dropout);
    m.read("post_attn_norm", c.post_attn_norm);
    {
      Section a = m.section("attention");
      auto& v = c.attention;
      v.score = a.choice("score", "softmax", {"softmax", "sigmoid"}) == "sigmoid" ? models::Score::Sigmoid
                                                                                 : models::Score::Softmax;
      std::string gate = a.choice("gate", "none", {"none", "sdpa_elementwise", "sdpa_headwise", "value"});
      v.gate = gate == "sdpa_elementwise" ? models::Gate::SdpaElementwise
               : gate == "sdpa_headwise"  ? models::Gate::SdpaHeadwise
               : gate == "value"          ? models::Gate::Value
                                          : models::Gate::None;
      a.read("qk_norm", v.qk_norm);
      std::string bias = "auto";
      a.read("sigmoid_bias", bias);
      if (bias == "auto") {
        v.bias_mode = models::SigmoidBias::Auto;
      } else if (bias == "learnable") {
        v.bias_mode = models::SigmoidBias::Learnable;
      } else {
        char* end = nullptr;
        v.bias_value = std::strtod(bias.c_str(), &end);
        if (bias.empty() || *end != '\0')
          a.fail("sigmoid_bias", fmt::format("expected auto, learnable or a number, got '{}'", bias));
        v.bias_mode = models::SigmoidBias::Fixed;
      }
      if (a.has("sigmoid_bias") && v.score != models::Score::Sigmoid)
        a.fail("sigmoid_bias", "only applies to score: sigmoid");
      a.finish();
    }
    for (auto [key, v] : {std::pair<const char*, int64_t>{"image_size", c.image_size}, {"channels", c.channels},
                          {"patch", c.patch}, {"dim", c.dim}, {"depth", c.depth}, {"heads", c.heads},
                          {"num_classes", c.num_classes}, {"vocab_size", c.vocab_size}, {"max_seq_len", c.max_seq_len}})
      if (v <= 0) m.fail(key, fmt::format("must be positive, got {}", v));
    if (c.pad_id < 0 || c.pad_id >= c.vocab_size)
      m.fail("pad_id", fmt::format("{} is outside the vocabulary 0..{}", c.pad_id, c.vocab_size - 1));
    if (c.is_lm() && c.max_seq_len < 2) m.fail("max_seq_len", "a causal LM needs at least 2 tokens");
    if (c.is_lm() && m.has("num_classes")) m.fail("num_classes", "does not apply to task: causal_lm");
    if (c.dim % c.heads != 0) m.fail("heads", fmt::format("dim {} is not divisible by heads {}", c.dim, c.heads));
    if (c.kind == "vit" && c.image_size % c.patch != 0)
      m.fail("patch", fmt::format("image_size {} is not a multiple of patch {}", c.image_size, c.patch));
    if (c.mlp_ratio <= 0) m.fail("mlp_ratio", "must be positive");
    if (c.dropout < 0 || c.dropout >= 1) m.fail("dropout", "must be in [0, 1)");
    m.finish();
  }
  {
    Section s = top.section("init_from");
    auto& c = r.init_from;
    s.read("run", c.run);
    c.checkpoint = s.choice("checkpoint", c.checkpoint, {"best", "last"});
    s.read("exclude", c.exclude);
    s.finish();
  }
  {
    Section a = top.section("adapter");
    auto& c = r.adapter;
    std::string kind =
        a.choice("kind", "none", {"none", "linear_probe", "lora", "dora", "hora", "doran", "prompt_expert", "prefix"});
    c.kind = kind == "prompt_expert"  ? AdapterKind::PromptExpert
             : kind == "prefix"       ? AdapterKind::Prefix
             : kind == "lora"         ? AdapterKind::Lora
             : kind == "dora"         ? AdapterKind::Dora
             : kind == "hora"         ? AdapterKind::Hora
             : kind == "doran"        ? AdapterKind::Doran
             : kind == "linear_probe" ? AdapterKind::LinearProbe
                                      : AdapterKind::None;
    a.read("r", c.r);
    a.read("alpha", c.alpha);
    a.read("dropout", c.dropout);
    a.read("targets", c.targets);
    a.read("modules_to_save", c.modules_to_save);
    a.read("tau_init", c.tau_init);
    a.read("detach_norm", c.detach_norm);
    a.read("init_from", c.init_from);
    {
      Section h = a.section("hypernet");
      auto& g = c.hypernet;
      h.read("embed", g.embed);
      h.read("hidden", g.hidden);
      std::string act = h.choice("act", "tanh", {"tanh", "relu", "gelu"});
      g.act = act == "relu" ? HypernetActivation::Relu : act == "gelu" ? HypernetActivation::Gelu : HypernetActivation::Tanh;
      // Defaults by method: HoRA shares within the attention module (q, v and all heads) with
      // one seed set; DoRAN shares across layers with seeds per projection (METHODS.md §4, §5).
      std::string share = h.choice("share", c.kind == AdapterKind::Doran ? "model" : "parent",
                                   {"target", "parent", "model"});
      g.share = share == "target" ? HypernetShare::Target : share == "model" ? HypernetShare::Model : HypernetShare::Parent;
      g.share_seeds = c.kind != AdapterKind::Doran;
      h.read("share_seeds", g.share_seeds);
      if (g.embed <= 0) h.fail("embed", "must be positive");
      if (g.hidden <= 0) h.fail("hidden", "must be positive");
      if (a.has("hypernet") && c.kind != AdapterKind::Hora && c.kind != AdapterKind::Doran)
        a.fail("hypernet", fmt::format("only applies to kind hora or doran (kind is {})", kind));
      h.finish();
    }
    a.read("prefix_length", c.prefix_length);
    a.read("prefix_reparam", c.prefix_reparam);
    a.read("prefix_hidden", c.prefix_hidden);
    if (c.prefix_length < 1) a.fail("prefix_length", "must be at least 1");
    if (c.prefix_hidden < 1) a.fail("prefix_hidden", "must be at least 1");
    a.read("experts", c.experts);
    a.read("expert_hidden", c.expert_hidden);
    {
      Section g = a.section("gate");
      auto& q = c.gate;
      using adapters::GateKind;
      std::string gk = g.choice("kind", "softmax",
                                {"softmax", "sigmoid", "topk_softmax", "dense_to_sparse", "cosine", "euclidean_sigmoid"});
      q.kind = gk == "sigmoid"             ? GateKind::Sigmoid
               : gk == "topk_softmax"      ? GateKind::TopkSoftmax
               : gk == "dense_to_sparse"   ? GateKind::DenseToSparse
               : gk == "cosine"            ? GateKind::Cosine
               : gk == "euclidean_sigmoid" ? GateKind::EuclideanSigmoid
                                           : GateKind::Softmax;
      g.read("top_k", q.top_k);
      g.read("temperature", q.temperature);
      std::string act = g.choice("act", "identity", {"identity", "tanh", "sigmoid"});
      q.act = act == "tanh" ? adapters::GateActivation::Tanh
              : act == "sigmoid" ? adapters::GateActivation::Sigmoid : adapters::GateActivation::Identity;
      g.read("tau1", q.tau1);
      g.read("tau2", q.tau2);
      g.read("noise", q.noise);
      g.read("bias_init", q.bias_init);
      q.input = g.choice("input", "token", {"token", "mean"}) == "mean" ? adapters::GateInput::Mean
                                                                         : adapters::GateInput::Token;
      if (!(q.temperature > 0)) g.fail("temperature", "must be positive");
      if (q.tau1 < 0 || q.tau2 < 0 || q.noise < 0) g.fail(q.noise < 0 ? "noise" : "tau1", "must be >= 0");
      if (q.top_k < 1 || q.top_k > c.experts + 1)
        g.fail("top_k", fmt::format("must be in 1..experts+1 = {} (the frozen expert counts)", c.experts + 1));
      if (a.has("gate") && c.kind != AdapterKind::PromptExpert)
        a.fail("gate", fmt::format("only applies to kind prompt_expert (kind is {})", kind));
      g.finish();
    }
    if (c.experts < 1) a.fail("experts", "must be at least 1");
    if (c.expert_hidden < 0) a.fail("expert_hidden", "must be >= 0 (0 = linear experts)");
    if (c.r <= 0) a.fail("r", fmt::format("must be positive, got {}", c.r));
    if (c.alpha <= 0) a.fail("alpha", "must be positive");
    if (c.dropout < 0 || c.dropout >= 1) a.fail("dropout", "must be in [0, 1)");
    if (!(c.tau_init > 0)) a.fail("tau_init", "must be positive (τ = softplus(ρ) > 0)");
    if (a.has("tau_init") && c.kind != AdapterKind::Doran) a.fail("tau_init", "only applies to kind doran");
    if (c.kind == AdapterKind::Prefix && c.targets.empty())
      a.fail("targets", "prefix needs the attention modules to extend, e.g. [\"blocks.*.attn\"]");
    if (c.kind == AdapterKind::PromptExpert && c.targets.empty())
      a.fail("targets", "prompt_expert needs target modules: the head, blocks.N.mlp or blocks.N, e.g. [head]");
    if (c.low_rank() && c.targets.empty())
      a.fail("targets", fmt::format("{} needs at least one target pattern, e.g. [\"blocks.*.attn.q\", \"blocks.*.attn.v\"]", kind));
    if (!c.init_from.empty() && !c.saves_adapter_file())
      a.fail("init_from", fmt::format("needs an adapter kind with adapter files (lora, dora, hora, doran, "
                                      "prompt_expert, prefix), not {}", kind));
    if (c.kind == AdapterKind::LinearProbe && c.modules_to_save.empty())
      a.fail("modules_to_save", "linear_probe trains only modules_to_save; name at least one, e.g. [head]");
    a.finish();
  }
  {
    Section d = top.section("data");
    auto& c = r.data;
    c.dataset = d.choice("dataset", r.model.is_text() ? "spam_assassin" : c.dataset,
                         {"fashion_mnist", "spam_assassin", "text"});
    if (c.is_text() != r.model.is_text())
      d.fail("dataset", fmt::format("'{}' does not fit model.kind {} ({})", c.dataset, r.model.kind,
                                    r.model.is_text() ? "use spam_assassin or text" : "use fashion_mnist"));
    d.read("root", c.root);
    if (d.has("classes") && c.is_text()) d.fail("classes", "only applies to dataset fashion_mnist (text uses data.labels)");
    d.read("classes", c.classes);
    for (const char* key : {"train_file", "val_file", "test_file", "format", "text_field", "label_field", "group_field",
                            "labels", "tokenizer"})
      if (d.has(key) && !c.is_text()) d.fail(key, "only applies to text datasets (spam_assassin, text)");
    if (c.dataset == "spam_assassin") {
      for (const char* key : {"train_file", "val_file", "test_file", "format", "text_field", "label_field", "group_field", "labels"})
        if (d.has(key)) d.fail(key, "is fixed for spam_assassin (use dataset: text for your own files)");
      std::string root = c.root.empty() ? ".data/spam-assassin" : c.root;
      c.train_file = root + "/train.jsonl";
      c.val_file = root + "/val.jsonl";
      c.test_file = root + "/test.jsonl";
      c.group_field = "group";
      c.labels = {"ham", "spam"};
    }
    d.read("train_file", c.train_file);
    d.read("val_file", c.val_file);
    d.read("test_file", c.test_file);
    c.format = d.choice("format", c.format, {"auto", "jsonl", "csv", "tsv"});
    d.read("text_field", c.text_field);
    d.read("label_field", c.label_field);
    d.read("group_field", c.group_field);
    d.read("labels", c.labels);
    {
      Section t = d.section("tokenizer");
      auto& k = c.tokenizer;
      t.read("model", k.model);
      k.type = t.choice("type", k.type, {"unigram", "bpe"});
      t.read("vocab_size", k.vocab_size);
      t.read("character_coverage", k.character_coverage);
      if (k.vocab_size == 0) k.vocab_size = r.model.vocab_size;
      if (k.vocab_size != r.model.vocab_size)
        t.fail("vocab_size", fmt::format("is {} but model.vocab_size is {} (they must agree)", k.vocab_size, r.model.vocab_size));
      if (k.character_coverage <= 0 || k.character_coverage > 1) t.fail("character_coverage", "must be in (0, 1]");
      if (!k.model.empty() && (t.has("type") || t.has("vocab_size")))
        t.fail(t.has("type") ? "type" : "vocab_size", "only applies when tunekit trains the tokenizer (model is set)");
      t.finish();
    }
    if (c.dataset == "text" && c.train_file.empty()) d.fail("train_file", "dataset text needs data.train_file (JSONL, CSV or TSV)");
    if (c.is_text() && c.text_field.empty()) d.fail("text_field", "must name the text field");
    if (r.model.is_lm()) c.label_field.clear();  // a language model reads text only
    if (c.is_text() && !r.model.is_lm() && c.label_field.empty()) d.fail("label_field", "a classifier needs labels");
    std::set<std::string> label_seen;
    for (const auto& l : c.labels)
      if (!label_seen.insert(l).second) d.fail("labels", fmt::format("label '{}' is listed twice", l));
    d.read("val_fraction", c.val_fraction);
    d.read("batch_size", c.batch_size);
    d.read("eval_batch_size", c.eval_batch_size);
    d.read("limit_train", c.limit_train);
    std::set<int64_t> seen;
    for (auto cls : c.classes) {
      if (cls < 0 || cls > 9) d.fail("classes", fmt::format("class {} is outside 0..9", cls));
      if (!seen.insert(cls).second) d.fail("classes", fmt::format("class {} is listed twice", cls));
    }
    if (c.val_fraction < 0 || c.val_fraction >= 1) d.fail("val_fraction", "must be in [0, 1)");
    if (c.batch_size <= 0) d.fail("batch_size", "must be positive");
    if (c.eval_batch_size <= 0) d.fail("eval_batch_size", "must be positive");
    if (c.limit_train < 0) d.fail("limit_train", "must be >= 0 (0 = all)");
    d.finish();
    int64_t n_classes = c.is_text() ? static_cast<int64_t>(c.labels.size())
                        : c.classes.empty() ? 10 : static_cast<int64_t>(c.classes.size());
    if (!r.model.is_lm() && n_classes > 0 && r.model.num_classes != n_classes)
      top.section("model").fail("num_classes", fmt::format("is {} but data.{} selects {} classes", r.model.num_classes,
                                                          c.is_text() ? "labels" : "classes", n_classes));
  }
  {
    Section o = top.section("optimizer");
    auto& c = r.optimizer;
    c.name = o.choice("name", "adamw", {"adamw", "sgd"}) == "sgd" ? OptimizerKind::SGD : OptimizerKind::AdamW;
    o.read("lr", c.lr);
    o.read("weight_decay", c.weight_decay);
    o.read("betas", c.betas);
    o.read("eps", c.eps);
    o.read("momentum", c.momentum);
    if (c.lr <= 0) o.fail("lr", "must be positive");
    if (c.weight_decay < 0) o.fail("weight_decay", "must be >= 0");
    o.finish();
  }
  {
    Section s = top.section("schedule");
    auto& c = r.schedule;
    std::string kind = s.choice("kind", "cosine", {"constant", "cosine", "linear"});
    c.kind = kind == "constant" ? ScheduleKind::Constant : kind == "linear" ? ScheduleKind::Linear : ScheduleKind::Cosine;
    s.read("warmup_steps", c.warmup_steps);
    s.read("min_lr_ratio", c.min_lr_ratio);
    if (c.warmup_steps < 0) s.fail("warmup_steps", "must be >= 0");
    if (c.min_lr_ratio < 0 || c.min_lr_ratio > 1) s.fail("min_lr_ratio", "must be in [0, 1]");
    s.finish();
  }
  {
    Section t = top.section("train");
    auto& c = r.train;
    t.read("epochs", c.epochs);
    t.read("max_steps", c.max_steps);
    t.read("grad_accum", c.grad_accum);
    t.read("clip_grad_norm", c.clip_grad_norm);
    t.read("log_every", c.log_every);
    t.read("checkpoint_every", c.checkpoint_every);
    if (c.epochs <= 0) t.fail("epochs", "must be positive");
    if (c.max_steps < 0) t.fail("max_steps", "must be >= 0 (0 = no limit)");
    if (c.grad_accum <= 0) t.fail("grad_accum", "must be positive");
    if (c.clip_grad_norm < 0) t.fail("clip_grad_norm", "must be >= 0 (0 = off)");
    if (c.log_every <= 0) t.fail("log_every", "must be positive");
    if (c.checkpoint_every < 0) t.fail("checkpoint_every", "must be >= 0 (0 = at the end of each epoch)");
    t.finish();
  }
  {
    Section w = top.section("sweep");
    r.sweep.grid = w.string_lists("grid");
    r.sweep.variants = w.variant_list("variants");
    w.read("seeds", r.sweep.seeds);
    r.sweep.plot_x = w.choice("plot_x", "grid", {"grid", "trainable_params"});
    w.finish();
  }
  {
    Section l = top.section("lab");
    auto& c = r.lab;
    c.present = top.has("lab");
    c.experiment = l.choice("experiment", c.experiment, {"rate", "select"});
    c.family = l.choice("family", c.family, {"gaussian", "regression", "contaminated", "multinomial"});
    c.gate = l.choice("gate", c.gate, {"softmax", "sigmoid"});
    c.expert = l.choice("expert", c.expert, {"linear", "relu", "gelu", "tanh"});
    if (c.expert != "linear" && c.family != "gaussian" && c.family != "regression")
      l.fail("expert", "network experts apply to family gaussian or regression");
    l.read("classes", c.classes);
    l.read("n", c.n);
    l.read("replications", c.replications);
    l.read("theory_slope", c.theory_slope);
    l.read("max_experts", c.max_experts);
    {
      Section t = l.section("truth");
      auto& q = c.truth;
      t.read("experts", q.experts);
      t.read("dim", q.dim);
      for (auto [key, v] : {std::pair<const char*, std::vector<double>*>{"beta", &q.beta}, {"bias", &q.bias}, {"a", &q.a},
                            {"c", &q.c}, {"sigma", &q.sigma}, {"frozen_a", &q.frozen_a}})
        t.read(key, *v);
      t.read("frozen_c", q.frozen_c);
      t.read("frozen_sigma", q.frozen_sigma);
      t.read("approach", q.approach);
      t.read("approach_n0", q.approach_n0);
      const bool cont = c.family == "contaminated", multi = c.family == "multinomial";
      if (cont) q.experts = 1;
      if (q.experts < 1) t.fail("experts", "must be at least 1");
      if (q.dim < 1) t.fail("dim", "must be at least 1");
      if (multi && c.classes < 2) l.fail("classes", "multinomial needs at least 2 classes");
      const int64_t k = q.experts, d = q.dim, C = multi ? c.classes : 1;
      auto need = [&](const char* key, const std::vector<double>& v, int64_t size, const std::string& shape) {
        if (static_cast<int64_t>(v.size()) != size)
          t.fail(key, fmt::format("needs {} numbers ({}), got {}", size, shape, v.size()));
      };
      if (c.present) {
        need("beta", q.beta, k * d, fmt::format("experts {} x dim {}", k, d));
        need("bias", q.bias, k, "one per expert");
        need("a", q.a, k * C * d, multi ? fmt::format("experts x classes x dim = {} x {} x {}", k, C, d)
                                        : fmt::format("experts {} x dim {}", k, d));
        need("c", q.c, k * C, multi ? "experts x classes" : "one per expert");
        if (!multi) need("sigma", q.sigma, c.family == "gaussian" ? k : 1, c.family == "gaussian" ? "one per expert" : "one");
        for (double v : q.sigma)
          if (!(v > 0)) t.fail("sigma", "must be positive");
        if (cont) need("frozen_a", q.frozen_a, d, fmt::format("dim {}", d));
        if (cont && !(q.frozen_sigma > 0)) t.fail("frozen_sigma", "must be positive");
      }
      for (const char* key : {"frozen_a", "frozen_c", "frozen_sigma", "approach", "approach_n0"})
        if (t.has(key) && !cont) t.fail(key, "only applies to family contaminated");
      if (q.approach < 0) t.fail("approach", "must be >= 0 (0 = a fixed, distinguishable prompt)");
      if (!(q.approach_n0 > 0)) t.fail("approach_n0", "must be positive");
      t.finish();
    }
    {
      Section f = l.section("fit");
      auto& q = c.fit;
      f.read("experts", q.experts);
      q.method = f.choice("method", q.method, {"gradient", "em"});
      f.read("restarts", q.restarts);
      f.read("iterations", q.iterations);
      f.read("tolerance", q.tolerance);
      f.read("bound", q.bound);
      if (q.bound < 0) f.fail("bound", "must be >= 0 (0 = unbounded)");
      if (c.family == "contaminated") q.experts = 1;
      if (q.experts < 1) f.fail("experts", "must be at least 1");
      if (q.restarts < 1) f.fail("restarts", "must be at least 1");
      if (q.iterations < 1) f.fail("iterations", "must be at least 1");
      if (q.method == "em" && c.expert != "linear")
        f.fail("method", fmt::format("em needs linear experts (lab.expert is {}); use gradient", c.expert));
      if (q.method == "em" && c.family != "gaussian" && c.family != "contaminated")
        f.fail("method", fmt::format("em applies to family gaussian or contaminated (family is {})", c.family));
      f.finish();
    }
    if (c.fit.bound > 0)
      for (const auto* v : {&c.truth.beta, &c.truth.bias, &c.truth.a, &c.truth.c})
        for (double x : *v)
          if (std::abs(x) >= c.fit.bound)
            l.section("fit").fail("bound", fmt::format("{} would exclude the truth (it has a parameter {})", c.fit.bound, x));
    if (c.n.empty()) l.fail("n", "needs at least one sample size");
    for (auto v : c.n)
      if (v < 10) l.fail("n", fmt::format("sample size {} is too small", v));
    if (c.replications < 1) l.fail("replications", "must be at least 1");
    if (c.experiment == "select" && c.max_experts < 2) l.fail("max_experts", "must be at least 2");
    if (c.experiment == "select" && c.family == "contaminated") l.fail("experiment", "select does not apply to contaminated");
    l.finish();
  }
  {
    Section o = top.section("output");
    auto& c = r.output;
    o.read("dir", c.dir);
    o.read("name", c.name);
    if (c.name.empty()) c.name = std::filesystem::path(source).stem().string();
    if (c.name.empty() || c.name.find('/') != std::string::npos)
      o.fail("name", fmt::format("'{}' is not a valid run name", c.name));
    o.finish();
  }
  top.finish();

  // The resolved recipe names its run explicitly so `tunekit eval RUN_DIR` finds it again.
  root["output"]["dir"] = r.output.dir;
  root["output"]["name"] = r.output.name;
  YAML::Emitter out;
  out << root;
  r.resolved_yaml = std::string(out.c_str()) + "\n";
  return r;
}

Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open recipe file", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_recipe(ss.str(), path, overrides);
}

}  // namespace tunekit
