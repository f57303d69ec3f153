#include "adapters/attach.h"

#include <fmt/format.h>

#include <functional>
#include <map>
#include <set>

#include "adapters/dora.h"
#include "adapters/doran.h"
#include "adapters/hora.h"
#include "adapters/hypernet.h"
#include "adapters/lora.h"
#include "adapters/prefix.h"
#include "adapters/prompt_expert.h"
#include "models/attention.h"
#include "models/block.h"
#include "models/linear.h"
#include "util/error.h"
#include "util/text.h"

namespace tunekit::adapters {

namespace {
void set_trainable(torch::nn::Module& m, bool on) {
  for (auto& p : m.parameters()) p.set_requires_grad(on);
}

std::vector<std::string> module_names(torch::nn::Module& model) {
  std::vector<std::string> names;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) names.push_back(item.key());
  return names;
}

// The generator group a target belongs to under `share` (hypernet.h).
std::string generator_group(const std::string& name, HypernetShare share) {
  if (share == HypernetShare::Model) return "model";
  if (share == HypernetShare::Target) return name;
  auto dot = name.rfind('.');
  return dot == std::string::npos ? "model" : name.substr(0, dot);
}

HypernetOptions hypernet_options(const AdapterConfig& cfg) {
  const auto& h = cfg.hypernet;
  return HypernetOptions()
      .r(cfg.r)
      .embed(h.embed)
      .hidden(h.hidden)
      .act(h.act == HypernetActivation::Relu   ? Activation::Relu
           : h.act == HypernetActivation::Gelu ? Activation::Gelu
                                               : Activation::Tanh)
      .share_seeds(h.share_seeds);
}

std::shared_ptr<Adapter> make_adapter(const AdapterConfig& cfg, const std::string& name, models::LinearImpl& lin,
                                      AdapterSetImpl* set) {
  auto opts = LoraOptions(lin.options.in_features(), lin.options.out_features()).r(cfg.r).alpha(cfg.alpha).dropout(cfg.dropout);
  switch (cfg.kind) {
    case AdapterKind::Lora: return std::make_shared<LoraImpl>(opts);
    case AdapterKind::Dora: return std::make_shared<DoraImpl>(opts, lin.weight, cfg.detach_norm);
    case AdapterKind::Hora:
    case AdapterKind::Doran: {
      auto gen = set->generator(generator_group(name, cfg.hypernet.share), hypernet_options(cfg));
      int64_t slot = gen->add_target(name, lin.options.in_features(), lin.options.out_features());
      if (cfg.kind == AdapterKind::Hora) return std::make_shared<HoraImpl>(opts, gen, slot);
      return std::make_shared<DoranImpl>(opts, gen, slot, lin.weight, cfg.tau_init, cfg.detach_norm);
    }
    default: break;
  }
  throw Error("internal: no adapter for kind " + to_string(cfg.kind));
}

template <typename F>
void for_each_linear(torch::nn::Module& model, F&& f) {
  for (const auto& item : model.named_modules("", false))
    if (auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get())) f(item.key(), *lin);
}
PromptExpertOptions prompt_options(const AdapterConfig& cfg, int64_t in, int64_t out) {
  const auto& g = cfg.gate;
  auto gate = GateOptions(in, cfg.experts)
                  .kind(g.kind)
                  .top_k(g.top_k)
                  .temperature(g.temperature)
                  .act(g.act)
                  .tau1(g.tau1)
                  .tau2(g.tau2)
                  .noise(g.noise)
                  .bias_init(g.bias_init);
  return PromptExpertOptions(in, out, gate).hidden(cfg.expert_hidden).gate_input(g.input);
}

// Attaches prompt experts to the Linear layers, blocks and block MLPs matching cfg.targets.
void attach_prompt_experts(torch::nn::Module& model, const AdapterConfig& cfg, AttachReport& report) {
  std::vector<std::pair<std::string, std::function<void()>>> hosts;  // name -> attach
  std::map<std::string, models::BlockImpl*> blocks;
  auto named = model.named_modules("", false);
  for (const auto& item : named)
    if (auto* b = dynamic_cast<models::BlockImpl*>(item.value().get())) blocks[item.key()] = b;
  for (const auto& item : named) {
    const std::string name = item.key();
    if (auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get())) {
      hosts.emplace_back(name, [&cfg, lin] {
        lin->attach_output(std::make_shared<PromptExpertImpl>(
            prompt_options(cfg, lin->options.in_features(), lin->options.out_features())));
      });
    } else if (auto* b = dynamic_cast<models::BlockImpl*>(item.value().get())) {
      hosts.emplace_back(name, [&cfg, b] {
        b->attach_output(std::make_shared<PromptExpertImpl>(prompt_options(cfg, b->options.dim(), b->options.dim())));
      });
    } else if (name.size() > 4 && name.compare(name.size() - 4, 4, ".mlp") == 0 &&
               blocks.count(name.substr(0, name.size() - 4))) {
      auto* b = blocks[name.substr(0, name.size() - 4)];
      hosts.emplace_back(name, [&cfg, b] {
        b->attach_mlp_output(std::make_shared<PromptExpertImpl>(prompt_options(cfg, b->options.dim(), b->options.dim())));
      });
    }
  }
  std::vector<std::string> candidates;
  for (const auto& h : hosts) candidates.push_back(h.first);
  std::set<std::string> done;
  for (const auto& pattern : cfg.targets) {
    bool hit = false;
    for (const auto& [name, attach] : hosts) {
      if (!glob_match(pattern, name)) continue;
      hit = true;
      if (!done.insert(name).second) continue;
      attach();
      report.adapted.push_back(name);
    }
    if (!hit)
      throw Error(fmt::format("adapter.targets: pattern '{}' matches no Linear layer, block or block MLP{}; prompt "
                              "experts go on e.g. head, blocks.3.mlp or blocks.3",
                              pattern, did_you_mean(pattern, candidates)));
  }
}
}  // namespace

std::vector<std::string> adaptable_modules(torch::nn::Module& model) {
  std::vector<std::string> names;
  for_each_linear(model, [&](const std::string& name, models::LinearImpl&) { names.push_back(name); });
  return names;
}

int64_t count_parameters(const torch::nn::Module& model, bool trainable_only) {
  int64_t n = 0;
  for (const auto& p : model.parameters())
    if (!trainable_only || p.requires_grad()) n += p.numel();
  return n;
}

AttachReport attach_adapters(torch::nn::Module& model, const AdapterConfig& cfg) {
  AttachReport report;
  if (cfg.kind != AdapterKind::None) set_trainable(model, false);

  if (cfg.low_rank()) {
    AdapterSet set{nullptr};
    if (cfg.kind == AdapterKind::Hora || cfg.kind == AdapterKind::Doran) {
      if (model.named_children().contains("hypernets"))
        throw Error("this model already has hypernetwork adapters attached");
      set = AdapterSet();
    }
    auto candidates = adaptable_modules(model);
    for (const auto& pattern : cfg.targets) {
      bool hit = false;
      for_each_linear(model, [&](const std::string& name, models::LinearImpl& lin) {
        if (!glob_match(pattern, name) || lin.adapter()) return;
        hit = true;
        lin.attach(make_adapter(cfg, name, lin, set.is_empty() ? nullptr : set.get()));
        report.adapted.push_back(name);
      });
      if (!hit && std::none_of(candidates.begin(), candidates.end(),
                               [&](const std::string& n) { return glob_match(pattern, n); }))
        throw Error(fmt::format("adapter.targets: pattern '{}' matches no Linear layer{}; adaptable layers "
                                "look like {}",
                                pattern, did_you_mean(pattern, candidates),
                                candidates.empty() ? "(none)" : candidates.front()));
    }
    // Registered once, at the root, after every target has added its slot (ARCHITECTURE.md).
    if (set) model.register_module("hypernets", set.ptr());
  }

  if (cfg.kind == AdapterKind::PromptExpert) attach_prompt_experts(model, cfg, report);
  if (cfg.kind == AdapterKind::Prefix) {
    std::vector<std::pair<std::string, models::AttentionImpl*>> layers;
    std::vector<std::string> names;
    for (const auto& item : model.named_modules("", false))
      if (auto* a = dynamic_cast<models::AttentionImpl*>(item.value().get())) {
        layers.emplace_back(item.key(), a);
        names.push_back(item.key());
      }
    for (const auto& pattern : cfg.targets) {
      bool hit = false;
      for (auto& [name, a] : layers) {
        if (!glob_match(pattern, name)) continue;
        hit = true;
        if (a->prefix()) continue;
        a->attach_prefix(std::make_shared<PrefixImpl>(PrefixOptions(a->options.dim(), cfg.prefix_length)
                                                          .reparam(cfg.prefix_reparam)
                                                          .hidden(cfg.prefix_hidden)));
        report.adapted.push_back(name);
      }
      if (!hit)
        throw Error(fmt::format("adapter.targets: pattern '{}' matches no attention layer{}; prefixes go on e.g. "
                                "blocks.*.attn",
                                pattern, did_you_mean(pattern, names)));
    }
  }

  if (cfg.kind != AdapterKind::None) {
    auto names = module_names(model);
    for (const auto& pattern : cfg.modules_to_save) {
      bool hit = false;
      for (const auto& item : model.named_modules("", false)) {
        if (!glob_match(pattern, item.key())) continue;
        hit = true;
        set_trainable(*item.value(), true);
        report.saved.push_back(item.key());
      }
      if (!hit)
        throw Error(fmt::format("adapter.modules_to_save: '{}' matches no module{}", pattern,
                                did_you_mean(pattern, names)));
    }
  }
  report.trainable = count_parameters(model, true);
  report.total = count_parameters(model, false);
  return report;
}

std::string AttachReport::summary() const {
  double pct = total ? 100.0 * trainable / total : 0.0;
  std::string s = fmt::format("trainable params: {} of {} ({:.2f}%)", with_commas(trainable), with_commas(total), pct);
  if (!adapted.empty()) s += fmt::format("; adapters on {} layers", adapted.size());
  if (!saved.empty()) s += fmt::format("; modules_to_save: {}", join(saved, ", "));
  return s;
}

void merge_adapters(torch::nn::Module& model) {
  for_each_linear(model, [](const std::string&, models::LinearImpl& lin) { lin.merge(); });
}

void unmerge_adapters(torch::nn::Module& model) {
  for_each_linear(model, [](const std::string&, models::LinearImpl& lin) { lin.unmerge(); });
}

}  // namespace tunekit::adapters
