#include "src/hf/config.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "util/error.h"
#include "util/file.h"
#include "util/text.h"

namespace tunekit::hf {

namespace fs = std::filesystem;
using json = nlohmann::json;
using models::hf::Family;

namespace {

// A JSON value as it reads in a message: strings bare, everything else compact JSON.
std::string shown(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// Typed reads of one JSON object's keys; a missing or null key gives the default (what
// transformers' config classes do), a key of the wrong type is an error naming the file and key.
class Keys {
 public:
  Keys(const json& raw, std::string where) : raw_(raw), where_(std::move(where)) {}

  bool present(const char* key) const { return raw_.contains(key); }  // even when null
  bool has(const char* key) const { return raw_.contains(key) && !raw_[key].is_null(); }
  const json& at(const char* key) const { return raw_[key]; }

  [[noreturn]] void fail(const std::string& what) const { throw Error(fmt::format("{}: {}", where_, what)); }

  int64_t positive(const char* key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const json& v = raw_[key];
    if (!v.is_number_integer() || v.get<int64_t>() <= 0)
      fail(fmt::format("{} must be a positive integer, not {}", key, v.dump()));
    return v.get<int64_t>();
  }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = raw_[key];
    if (!v.is_number()) fail(fmt::format("{} must be a number, not {}", key, v.dump()));
    return v.get<double>();
  }
  bool flag(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = raw_[key];
    if (!v.is_boolean()) fail(fmt::format("{} must be true or false, not {}", key, v.dump()));
    return v.get<bool>();
  }
  std::string text(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = raw_[key];
    if (!v.is_string()) fail(fmt::format("{} must be a string, not {}", key, v.dump()));
    return v.get<std::string>();
  }
  // A feature switch tunekit does not implement: an error when it is on.
  void must_be_off(const char* key, bool fallback, const std::string& why) const {
    if (flag(key, fallback)) fail(fmt::format("{} true is not supported ({})", key, why));
  }
  const std::string& where() const { return where_; }

 private:
  const json& raw_;
  std::string where_;
};

// The class names of each family: with a head, and the headless base model.
struct FamilyClasses {
  Family family;
  const char* head;
  const char* base;
};
constexpr FamilyClasses kClasses[] = {
    {Family::Gpt2, "GPT2LMHeadModel", "GPT2Model"},          {Family::Llama, "LlamaForCausalLM", "LlamaModel"},
    {Family::Mistral, "MistralForCausalLM", "MistralModel"}, {Family::Qwen2, "Qwen2ForCausalLM", "Qwen2Model"},
    {Family::Vit, "ViTForImageClassification", "ViTModel"},
};
const FamilyClasses& classes_of(Family f) {
  for (const auto& c : kClasses)
    if (c.family == f) return c;
  return kClasses[0];
}

void read_architecture(const Keys& k, HfConfig& c) {
  const auto& cls = classes_of(c.family);
  if (!k.has("architectures")) return;
  const json& a = k.at("architectures");
  if (!a.is_array() || a.empty() || !a[0].is_string())
    k.fail(fmt::format("architectures must be a list of class names, not {}", a.dump()));
  c.architecture = a[0].get<std::string>();
  if (c.architecture == cls.base) {
    c.base_model = true;
  } else if (c.architecture != cls.head) {
    k.fail(fmt::format("architectures {} is not supported for model_type {} (only {} or {})", c.architecture,
                       to_string(c.family), cls.head, cls.base));
  }
}

void read_dtype(const Keys& k, HfConfig& c) {
  // transformers writes torch_dtype; versions from 4.56 on write dtype instead.
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (!k.has(key)) continue;
    if (!k.at(key).is_string()) k.fail(fmt::format("{} must be a string, not {}", key, k.at(key).dump()));
    c.dtype = hf_dtype_from_name(k.at(key).get<std::string>(), fmt::format("{}: {}", k.where(), key));
    return;
  }
}

// The context a causal LM is used at: `wanted`, or the checkpoint's maximum when 0.
int64_t context_or(int64_t wanted, int64_t maximum) { return wanted > 0 ? wanted : maximum; }

void read_gpt2(const Keys& k, HfConfig& c, int64_t context) {
  auto& o = c.gpt2;
  o.vocab_size(k.positive("vocab_size", 50257))
      .n_positions(k.positive("n_positions", 1024))
      .n_embd(k.positive("n_embd", 768))
      .n_layer(k.positive("n_layer", 12))
      .n_head(k.positive("n_head", 12))
      .n_inner(k.positive("n_inner", 0))
      .layer_norm_epsilon(k.number("layer_norm_epsilon", 1e-5));
  if (o.n_embd() % o.n_head() != 0)
    k.fail(fmt::format("n_embd {} is not a multiple of n_head {}", o.n_embd(), o.n_head()));
  const std::string act = k.text("activation_function", "gelu_new");
  static const std::map<std::string, models::hf::Gpt2Activation> kActs = {
      {"gelu_new", models::hf::Gpt2Activation::GeluNew},
      {"gelu_pytorch_tanh", models::hf::Gpt2Activation::GeluNew},  // the same tanh formula
      {"gelu", models::hf::Gpt2Activation::Gelu},
      {"relu", models::hf::Gpt2Activation::Relu}};
  auto it = kActs.find(act);
  if (it == kActs.end())
    k.fail(fmt::format("activation_function {} is not supported (gelu_new, gelu_pytorch_tanh, gelu, relu)", act));
  o.activation(it->second);
  if (!k.flag("scale_attn_weights", true))
    k.fail("scale_attn_weights false is not supported (scores are scaled by 1/sqrt(d))");
  k.must_be_off("scale_attn_by_inverse_layer_idx", false, "scores are not scaled per layer");
  k.must_be_off("reorder_and_upcast_attn", false, "attention is computed in float32 as written");
  if (!k.flag("tie_word_embeddings", true))
    k.fail("tie_word_embeddings false is not supported for gpt2 (the head is the token embedding)");
  c.context = context_or(context, o.n_positions());
  if (c.context > o.n_positions())
    k.fail(fmt::format("the context {} exceeds n_positions {} (GPT-2's positions are learned)", c.context,
                       o.n_positions()));
  o.max_seq_len(c.context);
}

// rope_scaling and rope_parameters.rope_type: only the plain rotary embedding is implemented.
double read_rope(const Keys& k) {
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!k.has(key)) continue;
    const json& r = k.at(key);
    if (!r.is_object()) k.fail(fmt::format("{} must be an object or null, not {}", key, r.dump()));
    for (const char* type_key : {"rope_type", "type"}) {
      if (!r.contains(type_key) || r[type_key].is_null()) continue;
      if (!(r[type_key].is_string() && r[type_key].get<std::string>() == "default"))
        k.fail(fmt::format("{} {{{}: {}}} is not supported (only none)", key, type_key, shown(r[type_key])));
    }
    // rope_scaling with a factor but no type is a scaling all the same.
    if (std::string(key) == "rope_scaling" && !r.contains("rope_type") && !r.contains("type") && !r.empty())
      k.fail(fmt::format("rope_scaling {} is not supported (only none)", r.dump()));
  }
  if (k.has("rope_theta")) return k.number("rope_theta", 10000.0);
  if (k.has("rope_parameters") && k.at("rope_parameters").contains("rope_theta")) {
    const json& t = k.at("rope_parameters")["rope_theta"];
    if (!t.is_number()) k.fail(fmt::format("rope_parameters.rope_theta must be a number, not {}", t.dump()));
    return t.get<double>();
  }
  return 10000.0;
}

// Mistral slides every layer's attention over `sliding_window` tokens (4096 when the key is
// absent, none when it is null); Qwen2 does so with use_sliding_window, in the layers from
// max_window_layers on. tunekit attends over the whole context: the same computation while the
// context fits in the window. Returns the window (0: none).
int64_t read_sliding_window(const Keys& k, Family f, int64_t layers) {
  if (f == Family::Mistral) return k.present("sliding_window") ? k.positive("sliding_window", 0) : 4096;
  if (f != Family::Qwen2 || !k.flag("use_sliding_window", false)) return 0;
  const int64_t window = k.positive("sliding_window", 4096);
  if (k.has("layer_types")) {  // newer files list each layer's kind
    const json& types = k.at("layer_types");
    if (!types.is_array()) k.fail(fmt::format("layer_types must be a list, not {}", types.dump()));
    for (const auto& t : types)
      if (t.is_string() && t.get<std::string>() == "sliding_attention") return window;
    return 0;
  }
  return k.positive("max_window_layers", 28) < layers ? window : 0;
}

void read_llama(const Keys& k, HfConfig& c, int64_t context) {
  struct Defaults {
    int64_t vocab, intermediate, kv_heads, max_positions;
  };
  const Defaults d = c.family == Family::Llama     ? Defaults{32000, 11008, 0, 2048}
                     : c.family == Family::Mistral ? Defaults{32000, 14336, 8, 4096 * 32}
                                                   : Defaults{151936, 22016, 0, 32768};
  auto& o = c.llama;
  o.family(c.family)
      .vocab_size(k.positive("vocab_size", d.vocab))
      .hidden_size(k.positive("hidden_size", 4096))
      .intermediate_size(k.positive("intermediate_size", d.intermediate))
      .num_hidden_layers(k.positive("num_hidden_layers", 32))
      .num_attention_heads(k.positive("num_attention_heads", 32))
      .rms_norm_eps(k.number("rms_norm_eps", 1e-6))
      .max_position_embeddings(k.positive("max_position_embeddings", d.max_positions))
      .tie_word_embeddings(k.flag("tie_word_embeddings", false));
  const int64_t kv = k.positive("num_key_value_heads", d.kv_heads ? d.kv_heads : o.num_attention_heads());
  if (o.num_attention_heads() % kv != 0)
    k.fail(
        fmt::format("num_attention_heads {} is not a multiple of num_key_value_heads {}", o.num_attention_heads(), kv));
  o.num_key_value_heads(kv).head_dim(k.positive("head_dim", 0));
  if (o.head_dim() == 0 && o.hidden_size() % o.num_attention_heads() != 0)
    k.fail(fmt::format("hidden_size {} is not a multiple of num_attention_heads {} (and no head_dim is given)",
                       o.hidden_size(), o.num_attention_heads()));
  const std::string act = k.text("hidden_act", "silu");
  if (act != "silu" && act != "swish") k.fail(fmt::format("hidden_act {} is not supported (only silu)", act));
  o.rope_theta(read_rope(k));
  if (c.family == Family::Qwen2) {
    o.qkv_bias(true).o_bias(false);
  } else if (c.family == Family::Llama) {
    const bool bias = k.flag("attention_bias", false);
    o.qkv_bias(bias).o_bias(bias).mlp_bias(k.flag("mlp_bias", false));
  }
  const int64_t window = read_sliding_window(k, c.family, o.num_hidden_layers());
  if (context > 0) {
    if (window > 0 && context > window)
      k.fail(
          fmt::format("sliding_window {} is shorter than the context {} (sliding-window attention is not "
                      "supported; use a context of at most {})",
                      window, context, window));
    c.context = context;
  } else {  // the longest context the model computes exactly
    c.context = window > 0 ? std::min(window, o.max_position_embeddings()) : o.max_position_embeddings();
  }
  o.max_seq_len(c.context);
}

std::vector<std::string> read_labels(const Keys& k) {
  if (k.has("id2label")) {
    const json& m = k.at("id2label");
    if (!m.is_object()) k.fail(fmt::format("id2label must be an object, not {}", m.dump()));
    std::vector<std::string> labels(m.size());
    std::vector<bool> seen(m.size(), false);
    for (auto it = m.begin(); it != m.end(); ++it) {
      size_t id = 0;
      try {
        size_t used = 0;
        id = std::stoul(it.key(), &used);
        if (used != it.key().size()) throw std::invalid_argument("trailing");
      } catch (const std::exception&) {
        k.fail(fmt::format("id2label key '{}' is not a class id", it.key()));
      }
      if (id >= labels.size() || seen[id])
        k.fail(fmt::format("id2label ids must be 0..{} once each ('{}' is not)", labels.size() - 1, it.key()));
      seen[id] = true;
      labels[id] = shown(it.value());
    }
    return labels;
  }
  std::vector<std::string> labels;
  const int64_t n = k.positive("num_labels", 2);
  for (int64_t i = 0; i < n; ++i) labels.push_back(fmt::format("LABEL_{}", i));
  return labels;
}

void read_vit(const Keys& k, HfConfig& c) {
  auto& o = c.vit;
  o.image_size(k.positive("image_size", 224))
      .patch_size(k.positive("patch_size", 16))
      .num_channels(k.positive("num_channels", 3))
      .hidden_size(k.positive("hidden_size", 768))
      .num_hidden_layers(k.positive("num_hidden_layers", 12))
      .num_attention_heads(k.positive("num_attention_heads", 12))
      .intermediate_size(k.positive("intermediate_size", 3072))
      .layer_norm_eps(k.number("layer_norm_eps", 1e-12))
      .qkv_bias(k.flag("qkv_bias", true));
  if (o.image_size() % o.patch_size() != 0)
    k.fail(fmt::format("image_size {} is not a multiple of patch_size {}", o.image_size(), o.patch_size()));
  if (o.hidden_size() % o.num_attention_heads() != 0)
    k.fail(fmt::format("hidden_size {} is not a multiple of num_attention_heads {}", o.hidden_size(),
                       o.num_attention_heads()));
  const std::string act = k.text("hidden_act", "gelu");
  if (act != "gelu") k.fail(fmt::format("hidden_act {} is not supported (only gelu)", act));
  c.labels = read_labels(k);
  o.num_labels(static_cast<int64_t>(c.labels.size()));
}

// image_mean / image_std: one number per channel (one number for all channels is repeated).
std::vector<double> per_channel(const Keys& k, const char* key, int64_t channels, double fallback) {
  if (!k.has(key)) return std::vector<double>(static_cast<size_t>(channels), fallback);
  const json& v = k.at(key);
  std::vector<double> out;
  if (v.is_number()) out.assign(static_cast<size_t>(channels), v.get<double>());
  if (v.is_array())
    for (const auto& x : v) {
      if (!x.is_number()) k.fail(fmt::format("{} must be numbers, not {}", key, v.dump()));
      out.push_back(x.get<double>());
    }
  if (out.size() == 1) out.assign(static_cast<size_t>(channels), out[0]);
  if (static_cast<int64_t>(out.size()) != channels)
    k.fail(fmt::format("{} has {} values but config.json's num_channels is {}", key, v.dump(), channels));
  for (double s : out)
    if (std::string(key) == "image_std" && !(s > 0)) k.fail(fmt::format("image_std {} must be positive", v.dump()));
  return out;
}

// preprocessor_config.json (ViTImageProcessor): resize to `size`, rescale by 1/255, normalise.
HfImageInput read_image_input(const std::string& dir, const models::hf::VitOptions& vit) {
  HfImageInput in;
  in.height = in.width = vit.image_size();
  in.mean = in.std = std::vector<double>(static_cast<size_t>(vit.num_channels()), 0.5);
  const std::string path = (fs::path(dir) / "preprocessor_config.json").string();
  if (!fs::exists(path)) return in;
  in.found = true;
  const json raw = read_json_file(path);
  if (!raw.is_object()) throw Error(fmt::format("{}: not a JSON object", path));
  Keys k(raw, path);
  if (!k.flag("do_rescale", true))
    k.fail("do_rescale false is not supported (tunekit's images are in [0, 1], as after rescale_factor 1/255)");
  const double factor = k.number("rescale_factor", 1.0 / 255);
  if (std::abs(factor * 255 - 1) > 1e-6) k.fail(fmt::format("rescale_factor {} is not supported (only 1/255)", factor));
  if (k.flag("do_normalize", true)) {
    in.mean = per_channel(k, "image_mean", vit.num_channels(), 0.5);
    in.std = per_channel(k, "image_std", vit.num_channels(), 0.5);
  } else {
    in.mean.assign(static_cast<size_t>(vit.num_channels()), 0.0);
    in.std.assign(static_cast<size_t>(vit.num_channels()), 1.0);
  }
  if (k.flag("do_resize", true) && k.has("size")) {
    const json& s = k.at("size");
    if (s.is_number_integer()) {
      in.height = in.width = s.get<int64_t>();
    } else if (s.is_object() && s.contains("height") && s.contains("width") && s["height"].is_number_integer() &&
               s["width"].is_number_integer()) {
      in.height = s["height"].get<int64_t>();
      in.width = s["width"].get<int64_t>();
    } else {
      k.fail(fmt::format("size {} is not supported (an integer or {{height, width}})", s.dump()));
    }
  }
  if (in.height != vit.image_size() || in.width != vit.image_size())
    k.fail(fmt::format("size {}x{} differs from config.json's image_size {} (the position embeddings fit only that)",
                       in.height, in.width, vit.image_size()));
  return in;
}

}  // namespace

std::string HfConfig::config_path() const { return (fs::path(dir) / "config.json").string(); }

std::string HfConfig::head_architecture() const { return classes_of(family).head; }

torch::ScalarType hf_dtype_from_name(const std::string& name, const std::string& where) {
  std::string n = name.rfind("torch.", 0) == 0 ? name.substr(6) : name;
  if (n == "float32" || n == "float") return torch::kFloat;
  if (n == "float16" || n == "half") return torch::kHalf;
  if (n == "bfloat16") return torch::kBFloat16;
  throw Error(fmt::format("{} {} is not supported (float32, float16, bfloat16)", where, name));
}

std::string hf_dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat:
      return "float32";
    case torch::kHalf:
      return "float16";
    case torch::kBFloat16:
      return "bfloat16";
    default:
      throw Error(fmt::format("dtype {} is not a Hugging Face storage dtype (float32, float16, bfloat16)",
                              c10::toString(dtype)));
  }
}

HfConfig read_hf_config(const std::string& dir, int64_t context) {
  HfConfig c;
  c.dir = dir;
  const std::string path = c.config_path();
  if (!fs::is_directory(dir)) throw Error(fmt::format("{}: not a directory (a Hugging Face model directory)", dir));
  if (!fs::exists(path)) throw Error(fmt::format("{}: no config.json (not a Hugging Face model directory)", dir));
  c.raw = read_json_file(path);
  if (!c.raw.is_object()) throw Error(fmt::format("{}: not a JSON object", path));
  Keys k(c.raw, path);
  const std::string type = k.text("model_type", "");
  if (type.empty()) k.fail(fmt::format("model_type is missing (supported: {})", join(enum_names<Family>(), ", ")));
  auto family = enum_from_name<Family>(type);
  if (!family)
    k.fail(fmt::format("model_type {} is not supported (supported: {})", type, join(enum_names<Family>(), ", ")));
  c.family = *family;
  if (k.has("quantization_config")) k.fail("quantization_config: quantized checkpoints are not supported");
  read_architecture(k, c);
  read_dtype(k, c);
  switch (c.family) {
    case Family::Gpt2:
      read_gpt2(k, c, context);
      break;
    case Family::Llama:
    case Family::Mistral:
    case Family::Qwen2:
      read_llama(k, c, context);
      break;
    case Family::Vit:
      read_vit(k, c);
      c.image = read_image_input(dir, c.vit);
      {
        models::hf::ImagePreprocess p;  // enabled by the loader when the data's own statistics are known
        p.mean = c.image.mean;
        p.std = c.image.std;
        c.vit.preprocess(p);
      }
      break;
  }
  return c;
}

}  // namespace tunekit::hf
