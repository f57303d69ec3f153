#include "src/io/adapter_file.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "adapters/attach.h"
#include "models/hf/hf_model.h"
#include "src/io/checkpoint.h"
#include "src/io/safetensors.h"
#include "util/error.h"
#include "util/file.h"
#include "util/text.h"

namespace fs = std::filesystem;

namespace tunekit::io {

namespace {
using json = nlohmann::json;
const std::string kPrefix = "base_model.model.";

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string peft_name(const std::string& ours) {
  auto pos = ours.find(".adapter.");
  if (pos == std::string::npos) return kPrefix + ours;
  std::string path = ours.substr(0, pos), leaf = ours.substr(pos + 9);
  if (leaf == "lora_A" || leaf == "lora_B") return kPrefix + path + "." + leaf + ".weight";
  return kPrefix + path + "." + leaf;
}

// Whether a parameter's path has one of the kind's saved module names on it (adapters/kind.h).
bool saved_by_kind(const std::string& name, const std::vector<std::string>& saves) {
  const std::string path = "." + name;
  for (const auto& part : saves)
    if (path.find("." + part + ".") != std::string::npos) return true;
  return false;
}

// The modules cfg.modules_to_save selects (adapters::match_modules_to_save, as attach_adapters
// unfreezes them), each once, in the model's order.
std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> saved_modules(torch::nn::Module& model,
                                                                                      const AdapterConfig& cfg) {
  const auto picked = adapters::match_modules_to_save(model, cfg.modules_to_save);
  const std::set<std::string> names(picked.begin(), picked.end());
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> out;
  for (const auto& m : model.named_modules("", false))
    if (names.count(m.key())) out.emplace_back(m.key(), m.value());
  return out;
}

// (PEFT name, tensor) for every tensor the adapter file holds, as references into the model.
std::vector<std::pair<std::string, torch::Tensor>> adapter_tensors(torch::nn::Module& model, const AdapterConfig& cfg) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  std::set<std::string> seen;
  const auto& saves = adapters::kind_row(cfg.kind).saves;
  for (const auto& p : model.named_parameters()) {
    const auto& name = p.key();
    if (saved_by_kind(name, saves)) {
      out.emplace_back(peft_name(name), p.value());
      seen.insert(name);
    }
  }
  for (const auto& [module, m] : saved_modules(model, cfg))
    for (const auto& p : m->named_parameters()) {
      std::string name = module + "." + p.key();
      if (seen.insert(name).second) out.emplace_back(peft_name(name), p.value());
    }
  return out;
}

// base_model_name_or_path as PEFT users can use it elsewhere: an absolute path is cut to its
// last component (the model directory's own name).
std::string portable_base_name(const std::string& base) {
  fs::path p(base);
  if (base.empty() || !p.is_absolute()) return base;
  p = p.lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

// What PEFT writes for a model of a Hugging Face family: its task type and fan_in_fan_out.
struct PeftModelFacts {
  json task_type = nullptr;
  bool fan_in_fan_out = false;
};

PeftModelFacts peft_model_facts(torch::nn::Module& model, const std::vector<std::string>& adapted) {
  PeftModelFacts facts;
  auto* hf = dynamic_cast<models::hf::HfModel*>(&model);
  if (!hf) return facts;
  if (models::hf::is_causal_lm(hf->family())) facts.task_type = "CAUSAL_LM";
  // fan_in_fan_out: the adapted layers are stored [in, out] in the checkpoint (GPT-2's Conv1D).
  std::set<std::string> transposed;
  for (const auto& t : hf->hf_tensors())
    if (t.transposed && ends_with(t.name, ".weight")) transposed.insert(t.name.substr(0, t.name.size() - 7));
  for (const auto& name : adapted)
    if (transposed.count(name)) facts.fan_in_fan_out = true;
  return facts;
}

// A boolean key's value; absent or null is false (check_peft_lora has checked the type).
bool flag(const json& config, const std::string& key) {
  return config.contains(key) && config[key].is_boolean() && config[key].get<bool>();
}

bool present(const json& config, const std::string& key) {
  if (!config.contains(key)) return false;
  const json& v = config[key];
  return !(v.is_null() || ((v.is_array() || v.is_object() || v.is_string()) && v.empty()));
}

// Checks a PEFT LORA adapter_config.json for what tunekit can apply: the types of the keys it
// reads, and none of the PEFT features that make the forward differ from W + s B A (or DoRA's
// m V / ‖V‖) with one r and alpha for every target. One line naming the file and the key each.
void check_peft_lora(const json& c, const std::string& where) {
  auto fail = [&](const std::string& key, const std::string& why) {
    throw Error(fmt::format("{}: {}: {}", where, key, why));
  };
  if (!c.is_object()) throw Error(fmt::format("{}: not a JSON object", where));
  if (!c.contains("r") || !c["r"].is_number_integer() || c["r"].get<int64_t>() <= 0)
    fail("r", fmt::format("needs a positive integer (got {})", c.contains("r") ? c["r"].dump() : "none"));
  if (!c.contains("lora_alpha") || !c["lora_alpha"].is_number() || !std::isfinite(c["lora_alpha"].get<double>()))
    fail("lora_alpha",
         fmt::format("needs a number (got {})", c.contains("lora_alpha") ? c["lora_alpha"].dump() : "none"));
  if (c.contains("lora_dropout") && !c["lora_dropout"].is_null() &&
      (!c["lora_dropout"].is_number() || !(c["lora_dropout"].get<double>() >= 0 && c["lora_dropout"].get<double>() < 1)))
    fail("lora_dropout", "needs a number from 0 to below 1 (got " + c["lora_dropout"].dump() + ")");
  bool targets_ok = false;
  if (c.contains("target_modules")) {
    const json& t = c["target_modules"];
    if (t.is_string()) targets_ok = !t.get<std::string>().empty();
    if (t.is_array() && !t.empty()) {
      targets_ok = true;
      for (const auto& x : t) targets_ok = targets_ok && x.is_string() && !x.get<std::string>().empty();
    }
  }
  if (!targets_ok)
    fail("target_modules", fmt::format("needs a list of module names or one regular expression (got {})",
                                       c.contains("target_modules") ? c["target_modules"].dump() : "none"));
  for (const char* key : {"use_dora", "use_rslora", "fan_in_fan_out", "lora_bias", "use_qalora"})
    if (c.contains(key) && !c[key].is_null() && !c[key].is_boolean())
      fail(key, "needs true or false (got " + c[key].dump() + ")");
  if (c.contains("modules_to_save") && !c["modules_to_save"].is_null()) {
    bool ok = c["modules_to_save"].is_array();
    for (const auto& x : ok ? c["modules_to_save"] : json::array()) ok = ok && x.is_string();
    if (!ok) fail("modules_to_save", "needs null or a list of module names (got " + c["modules_to_save"].dump() + ")");
  }
  // The PEFT features tunekit does not implement.
  if (c.contains("bias") && c["bias"] != "none")
    fail("bias",
         fmt::format("{} is not supported (only \"none\": the adapter trains no base biases)", c["bias"].dump()));
  if (present(c, "rank_pattern")) fail("rank_pattern", "per-module ranks are not supported (one r for every target)");
  if (present(c, "alpha_pattern"))
    fail("alpha_pattern", "per-module alphas are not supported (one lora_alpha for every target)");
  if (present(c, "layers_to_transform"))
    fail("layers_to_transform", "is not supported (list the adapted modules in target_modules instead)");
  if (present(c, "layer_replication")) fail("layer_replication", "is not supported (it changes the model's layers)");
  if (present(c, "exclude_modules"))
    fail("exclude_modules", "is not supported (list the adapted modules in target_modules)");
  if (present(c, "trainable_token_indices")) fail("trainable_token_indices", "is not supported");
  if (present(c, "target_parameters")) fail("target_parameters", "is not supported (LoRA on parameters, not modules)");
  if (present(c, "alora_invocation_tokens")) fail("alora_invocation_tokens", "is not supported (activated LoRA)");
  if (flag(c, "lora_bias")) fail("lora_bias", "true is not supported (a bias on lora_B)");
  if (flag(c, "use_qalora")) fail("use_qalora", "true is not supported");
  if (c.contains("init_lora_weights") && !c["init_lora_weights"].is_null() && !c["init_lora_weights"].is_boolean()) {
    const json& init = c["init_lora_weights"];
    const std::string s = init.is_string() ? init.get<std::string>() : init.dump();
    // These only choose where A and B start; the saved tensors say everything.
    if (s != "gaussian" && s != "eva" && s != "orthogonal")
      fail("init_lora_weights", fmt::format("'{}' is not supported ({} the base weights, so this adapter alone "
                                            "does not reproduce the model it was trained on)",
                                            s,
                                            s.rfind("pissa", 0) == 0 || s == "olora" || s == "corda" || s == "loftq"
                                                ? "that initialisation changes"
                                                : "an unknown initialisation may change"));
  }
}

// The adapter kind a file holds: tunekit's section says it; a PEFT LORA file is lora or dora.
// The keys of a tunekit file's config that load_adapter compares with the recipe: their types and ranges.
void check_tunekit_config(const json& c, const std::string& where) {
  const json& tk = c["tunekit"];
  if (!tk.is_object() || !tk.contains("kind") || !tk["kind"].is_string())
    throw Error(fmt::format("{}: tunekit.kind: needs an adapter kind's name (got {})", where,
                            tk.is_object() && tk.contains("kind") ? tk["kind"].dump() : "none"));
  if (c.contains("r") && (!c["r"].is_number_integer() || c["r"].get<int64_t>() <= 0))
    throw Error(fmt::format("{}: r: needs a positive integer (got {})", where, c["r"].dump()));
  if (c.contains("lora_alpha") && (!c["lora_alpha"].is_number() || !std::isfinite(c["lora_alpha"].get<double>())))
    throw Error(fmt::format("{}: lora_alpha: needs a number (got {})", where, c["lora_alpha"].dump()));
  for (const char* key : {"use_rslora", "use_dora"})
    if (c.contains(key) && !c[key].is_null() && !c[key].is_boolean())
      throw Error(fmt::format("{}: {}: needs true or false (got {})", where, key, c[key].dump()));
  if (tk.contains("detach_norm") && !tk["detach_norm"].is_boolean())
    throw Error(fmt::format("{}: tunekit.detach_norm: needs true or false (got {})", where, tk["detach_norm"].dump()));
}

std::string file_kind(const json& config, const std::string& config_path) {
  if (config.is_object() && config.contains("tunekit")) {
    check_tunekit_config(config, config_path);
    return config["tunekit"]["kind"].get<std::string>();
  }
  if (!config.is_object() || config.value("peft_type", json()) != "LORA")
    throw Error(fmt::format(
        "{}: peft_type: {} is not supported (tunekit reads PEFT's LORA adapters, LoRA and DoRA, "
        "and its own HORA, DORAN, PROMPT_EXPERT and PREFIX files)",
        config_path, config.is_object() && config.contains("peft_type") ? config["peft_type"].dump() : "none"));
  check_peft_lora(config, config_path);
  return flag(config, "use_dora") ? "dora" : "lora";
}

std::string json_list(const json& v) { return v.is_array() ? v.dump() : "[]"; }

// A stored tensor fit to load into `target`: a floating type (a header changed to an integer type
// would be reinterpreted or rounded silently) and every value finite.
void check_adapter_tensor(const torch::Tensor& value, const torch::Tensor& target, const std::string& file,
                          const std::string& name) {
  if (target.is_floating_point() && !value.is_floating_point())
    throw Error(fmt::format("{}: tensor '{}' is stored as {}, not a floating-point type (the model's is {})", file, name,
                            c10::toString(value.scalar_type()), c10::toString(target.scalar_type())));
  if (value.is_floating_point() && !torch::isfinite(value).all().item<bool>())
    throw Error(fmt::format("{}: tensor '{}' holds NaN or Inf (the adapter is unusable)", file, name));
}
}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> adapter_state(torch::nn::Module& model, const AdapterConfig& cfg) {
  auto refs = adapter_tensors(model, cfg);
  for (auto& [n, t] : refs) t = t.detach().to(torch::kCPU).clone();
  return refs;
}

void save_adapter(const std::string& dir, torch::nn::Module& model, const AdapterConfig& cfg,
                  const std::vector<std::string>& adapted, const std::string& base_model) {
  if (!cfg.saves_adapter_file())
    throw Error("save_adapter: adapter.kind " + to_string(cfg.kind) + " has no adapter file");
  fs::create_directories(dir);
  json tk = {{"kind", to_string(cfg.kind)},
             {"targets", cfg.targets},
             {"detach_norm", cfg.detach_norm},
             {"format_version", 1}};
  if (cfg.kind == AdapterKind::Hora || cfg.kind == AdapterKind::Doran)
    tk["hypernet"] = {{"embed", cfg.hypernet.embed},
                      {"hidden", cfg.hypernet.hidden_for(cfg.r)},
                      {"act", to_string(cfg.hypernet.act)},
                      {"share", to_string(cfg.hypernet.share)},
                      {"share_seeds", cfg.hypernet.share_seeds}};
  if (cfg.kind == AdapterKind::Doran) tk["tau_init"] = cfg.tau_init;
  if (cfg.kind == AdapterKind::Prefix)
    tk["prefix"] = {{"length", cfg.prefix_length}, {"reparam", cfg.prefix_reparam}, {"hidden", cfg.prefix_hidden}};
  if (cfg.kind == AdapterKind::PromptExpert)
    tk["prompt_expert"] = {{"experts", cfg.experts},
                           {"expert_hidden", cfg.expert_hidden},
                           {"gate", {{"kind", adapters::to_string(cfg.gate.kind)},
                                     {"top_k", cfg.gate.top_k},
                                     {"temperature", cfg.gate.temperature},
                                     {"proj_dim", cfg.gate.proj_dim},
                                     {"input", adapters::to_string(cfg.gate.input)}}}};
  const char* peft_type = adapters::kind_row(cfg.kind).peft_type;
  const bool peft_lora = std::string(peft_type) == "LORA";
  const PeftModelFacts facts = peft_model_facts(model, adapted);
  std::vector<std::string> saved;
  for (const auto& [name, m] : saved_modules(model, cfg)) saved.push_back(name);
  const std::string base = portable_base_name(base_model);
  // PEFT's LoraConfig fields (peft >= 0.9, the first with use_dora), in PEFT's sorted order.
  json config = {
      {"alpha_pattern", json::object()},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", base.empty() ? json(nullptr) : json(base)},
      {"bias", "none"},
      {"fan_in_fan_out", facts.fan_in_fan_out},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"loftq_config", json::object()},
      {"lora_alpha", cfg.alpha == std::floor(cfg.alpha) ? json(static_cast<int64_t>(cfg.alpha)) : json(cfg.alpha)},
      {"lora_dropout", cfg.dropout},
      {"megatron_config", nullptr},
      {"megatron_core", "megatron.core"},
      {"modules_to_save", saved.empty() ? json(nullptr) : json(saved)},
      {"peft_type", peft_type},
      {"r", cfg.r},
      {"rank_pattern", json::object()},
      {"revision", nullptr},
      {"target_modules", adapted},  // full module names: PEFT matches them exactly
      {"task_type", facts.task_type},
      {"use_dora", adapters::kind_row(cfg.kind).use_dora},
      {"use_rslora", cfg.rslora},
  };
  // PEFT's own files carry nothing else (older PEFT refuses unknown keys); tunekit's kinds, which
  // PEFT cannot load anyway, keep their settings in the config beside PEFT's fields.
  if (!peft_lora) config["tunekit"] = tk;
  write_file_atomic((fs::path(dir) / kAdapterConfigFile).string(), config.dump(2) + "\n");
  write_safetensors((fs::path(dir) / kAdapterWeightsFile).string(), adapter_state(model, cfg),
                    {{"format", "pt"}, {"tunekit_kind", to_string(cfg.kind)}, {"tunekit", tk.dump()}});
}

std::string resolve_adapter_dir(const std::string& path, const std::string& label) {
  fs::path p(path);
  if (fs::exists(p / kAdapterWeightsFile)) return p.string();
  for (const char* ck : {"best", "last"}) {
    auto d = p / "checkpoints" / ck;
    if (fs::exists(d / kAdapterWeightsFile)) return d.string();
  }
  if (!fs::exists(p)) throw Error(fmt::format("{}: {}: no such directory", label, path));
  throw Error(fmt::format("{}: {}: no {} here or in its checkpoints/best (expected a saved adapter "
                          "or a run trained with a low-rank adapter)",
                          label, path, kAdapterWeightsFile));
}

int64_t load_adapter(const std::string& path, torch::nn::Module& model, const AdapterConfig& cfg) {
  const std::string dir = resolve_adapter_dir(path);
  // An adapter inside a checkpoint: its files are checked against the checkpoint's manifest first.
  if (fs::exists(fs::path(dir) / "manifest.json") && fs::exists(fs::path(dir) / "state.json")) Checkpoint verified(dir);
  const std::string config_path = (fs::path(dir) / kAdapterConfigFile).string();
  const std::string weights_path = (fs::path(dir) / kAdapterWeightsFile).string();
  if (fs::exists(config_path)) {
    json config = read_json_file(config_path);
    std::string kind = file_kind(config, config_path);
    if (kind != to_string(cfg.kind))
      throw Error(fmt::format("adapter.init_from: {} holds a {} adapter but adapter.kind is {}", dir, kind,
                              to_string(cfg.kind)));
    if (cfg.low_rank() && config.value("r", cfg.r) != cfg.r)
      throw Error(fmt::format("adapter.init_from: {} has r={} but adapter.r is {}", dir, config.value("r", 0), cfg.r));
    if (cfg.low_rank() && config.contains("use_rslora") && config["use_rslora"].is_boolean() &&
        config["use_rslora"].get<bool>() != cfg.rslora)
      throw Error(fmt::format("adapter.init_from: {} was trained with use_rslora: {} (scale alpha/{}) but adapter.rslora is "
                              "{}; set adapter.rslora: {}", dir, !cfg.rslora, cfg.rslora ? "r" : "sqrt(r)", cfg.rslora,
                              !cfg.rslora));
    if (cfg.low_rank() && config.value("lora_alpha", cfg.alpha) != cfg.alpha)
      throw Error(fmt::format("adapter.init_from: {} has lora_alpha={} but adapter.alpha is {}", dir,
                              config.value("lora_alpha", 0.0), cfg.alpha));
    const json mts = config.value("modules_to_save", json());
    const bool file_saves = mts.is_array() && !mts.empty();
    if (file_saves != !cfg.modules_to_save.empty())
      throw Error(fmt::format("adapter.init_from: {} has modules_to_save {} but adapter.modules_to_save is {}", dir,
                              json_list(mts), json(cfg.modules_to_save).dump()));
  }
  auto file = read_safetensors(weights_path);
  auto targets = adapter_tensors(model, cfg);
  std::map<std::string, torch::Tensor*> by_name;
  std::vector<std::string> names;
  for (auto& [n, t] : targets) {
    by_name[n] = &t;
    names.push_back(n);
  }
  std::set<std::string> loaded;
  torch::NoGradGuard no_grad;
  for (const auto& [stored, value] : file.tensors) {
    std::string name = stored;
    // PEFT 0.12-0.13's DoRA layer is a module: some tools save its magnitude with ".weight".
    if (ends_with(name, ".lora_magnitude_vector.weight")) name.resize(name.size() - 7);
    auto it = by_name.find(name);
    if (it == by_name.end())
      throw Error(fmt::format("{}: tensor '{}' has no place in this model's {} adapter{}", weights_path, stored,
                              to_string(cfg.kind), did_you_mean(name, names)));
    if (value.sizes() != it->second->sizes())
      throw Error(fmt::format("{}: tensor '{}' has shape {} but the model's is {}", weights_path, stored,
                              c10::str(value.sizes()), c10::str(it->second->sizes())));
    if (!loaded.insert(name).second) throw Error(fmt::format("{}: tensor '{}' is stored twice", weights_path, name));
    check_adapter_tensor(value, *it->second, weights_path, stored);
    it->second->copy_(value);
  }
  for (const auto& n : names)
    if (!loaded.count(n))
      throw Error(fmt::format("{}: no tensor '{}' (the adapter was saved with other targets or modules_to_save?)",
                              weights_path, n));
  return static_cast<int64_t>(loaded.size());
}

AdapterConfig peft_adapter_config(const std::string& path) {
  const std::string dir = resolve_adapter_dir(path, "adapter");
  const std::string config_path = (fs::path(dir) / kAdapterConfigFile).string();
  if (!fs::exists(config_path))
    throw Error(fmt::format("{}: no {} (a PEFT adapter directory holds it beside {})", dir, kAdapterConfigFile,
                            kAdapterWeightsFile));
  const json config = read_json_file(config_path);
  const std::string kind = file_kind(config, config_path);
  if (kind != "lora" && kind != "dora")
    throw Error(
        fmt::format("{}: a tunekit {} adapter: pass the run directory it was trained in (its recipe rebuilds "
                    "the adapter), not the adapter files alone",
                    config_path, kind));
  check_peft_lora(config, config_path);
  AdapterConfig c;
  c.kind = kind == "dora" ? AdapterKind::Dora : AdapterKind::Lora;
  c.r = config["r"].get<int64_t>();
  c.alpha = config["lora_alpha"].get<double>();
  c.dropout = config.contains("lora_dropout") && config["lora_dropout"].is_number()
                  ? config["lora_dropout"].get<double>()
                  : 0.0;
  c.rslora = flag(config, "use_rslora");
  const json& targets = config["target_modules"];
  if (targets.is_string()) {
    const std::string s = targets.get<std::string>();
    c.targets = {s == "all-linear" ? std::string("re:(?!(.*\\.)?lm_head$).*") : "re:" + s};
  } else {
    c.targets = targets.get<std::vector<std::string>>();
  }
  if (config.contains("modules_to_save") && config["modules_to_save"].is_array())
    c.modules_to_save = config["modules_to_save"].get<std::vector<std::string>>();
  if (config.contains("tunekit") && config["tunekit"].contains("detach_norm"))
    c.detach_norm = config["tunekit"]["detach_norm"].get<bool>();
  c.init_from = dir;
  return c;
}

}  // namespace tunekit::io
