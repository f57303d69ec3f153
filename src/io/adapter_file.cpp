#include "src/io/adapter_file.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

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
  for (const auto& pattern : cfg.modules_to_save)
    for (const auto& m : model.named_modules("", false)) {
      if (!glob_match(pattern, m.key())) continue;
      for (const auto& p : m.value()->named_parameters()) {
        std::string name = m.key() + "." + p.key();
        if (seen.insert(name).second) out.emplace_back(peft_name(name), p.value());
      }
    }
  return out;
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
                      {"hidden", cfg.hypernet.hidden},
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
                                     {"input", adapters::to_string(cfg.gate.input)}}}};
  json config = {
      {"peft_type", adapters::kind_row(cfg.kind).peft_type},
      {"task_type", nullptr},
      {"base_model_name_or_path", base_model.empty() ? json(nullptr) : json(base_model)},
      {"revision", nullptr},
      {"inference_mode", true},
      {"r", cfg.r},
      {"lora_alpha", cfg.alpha},
      {"lora_dropout", cfg.dropout},
      {"target_modules", adapted},  // full module names: PEFT matches them exactly
      {"modules_to_save", cfg.modules_to_save.empty() ? json(nullptr) : json(cfg.modules_to_save)},
      {"use_dora", adapters::kind_row(cfg.kind).use_dora},
      {"use_rslora", cfg.rslora},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"init_lora_weights", true},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", json::object()},
      {"alpha_pattern", json::object()},
      {"tunekit", tk},
  };
  write_file_atomic((fs::path(dir) / kAdapterConfigFile).string(), config.dump(2) + "\n");
  write_safetensors((fs::path(dir) / kAdapterWeightsFile).string(), adapter_state(model, cfg),
                    {{"format", "pt"}, {"tunekit_kind", to_string(cfg.kind)}});
}

std::string resolve_adapter_dir(const std::string& path) {
  fs::path p(path);
  if (fs::exists(p / kAdapterWeightsFile)) return p.string();
  for (const char* ck : {"best", "last"}) {
    auto d = p / "checkpoints" / ck;
    if (fs::exists(d / kAdapterWeightsFile)) return d.string();
  }
  if (!fs::exists(p)) throw Error(fmt::format("adapter.init_from: {}: no such directory", path));
  throw Error(fmt::format("adapter.init_from: {}: no {} here or in its checkpoints/best (expected a saved adapter "
                          "or a run trained with a low-rank adapter)",
                          path, kAdapterWeightsFile));
}

int64_t load_adapter(const std::string& path, torch::nn::Module& model, const AdapterConfig& cfg) {
  const std::string dir = resolve_adapter_dir(path);
  const std::string config_path = (fs::path(dir) / kAdapterConfigFile).string();
  const std::string weights_path = (fs::path(dir) / kAdapterWeightsFile).string();
  if (fs::exists(config_path)) {
    json config;
    try {
      std::ifstream in(config_path);
      config = json::parse(in);
    } catch (const json::exception& e) {
      throw Error(fmt::format("{}: invalid JSON ({})", config_path, e.what()));
    }
    std::string kind;
    if (config.contains("tunekit") && config["tunekit"].contains("kind")) {
      kind = config["tunekit"]["kind"].get<std::string>();
    } else {  // a PEFT file written elsewhere
      if (config.value("peft_type", "") != "LORA")
        throw Error(fmt::format("{}: peft_type '{}' is not supported (LORA, HORA, DORAN)", config_path,
                                config.value("peft_type", "")));
      kind = config.value("use_dora", false) ? "dora" : "lora";
    }
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
  for (const auto& [name, value] : file.tensors) {
    auto it = by_name.find(name);
    if (it == by_name.end())
      throw Error(fmt::format("{}: tensor '{}' has no place in this model's {} adapter{}", weights_path, name,
                              to_string(cfg.kind), did_you_mean(name, names)));
    if (value.sizes() != it->second->sizes())
      throw Error(fmt::format("{}: tensor '{}' has shape {} but the model's is {}", weights_path, name,
                              c10::str(value.sizes()), c10::str(it->second->sizes())));
    it->second->copy_(value);
    loaded.insert(name);
  }
  for (const auto& n : names)
    if (!loaded.count(n))
      throw Error(fmt::format("{}: no tensor '{}' (the adapter was saved with other targets or modules_to_save?)",
                              weights_path, n));
  return static_cast<int64_t>(loaded.size());
}

}  // namespace tunekit::io
