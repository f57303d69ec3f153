// The adapter-kind table and each kind's factory: which modules it goes on and how one is made.
#include "adapters/kind.h"

#include <fmt/format.h>

#include <map>
#include <memory>

#include "adapters/attach.h"
#include "adapters/dora.h"
#include "adapters/doran.h"
#include "adapters/hora.h"
#include "models/attention.h"
#include "models/block.h"
#include "models/linear.h"
#include "util/error.h"

namespace tunekit::adapters {

namespace {
using MakeAdapter = std::function<std::shared_ptr<Adapter>(const std::string& name, models::LinearImpl& lin,
                                                           const LoraOptions& lora)>;

// Every models::Linear, with `make` creating its adapter (LoRA options sized to the layer).
Hosts linear_hosts(torch::nn::Module& model, const AttachOptions& o, MakeAdapter make) {
  Hosts out;
  for (const auto& item : model.named_modules("", false)) {
    auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get());
    if (!lin) continue;
    out.hosts.push_back({item.key(), [o, make, lin, name = item.key()] {
                           if (lin->adapter()) return false;
                           auto lora = o.lora();
                           lora.in_features(lin->options.in_features()).out_features(lin->options.out_features());
                           lin->attach(make(name, *lin, lora));
                           return true;
                         }});
  }
  out.what = "Linear layer";
  out.hint = fmt::format("; adaptable layers look like {}", out.hosts.empty() ? "(none)" : out.hosts.front().name);
  return out;
}

Hosts lora_hosts(torch::nn::Module& model, const AttachOptions& o) {
  return linear_hosts(model, o, [](const std::string&, models::LinearImpl&, const LoraOptions& lora) {
    return std::make_shared<LoraImpl>(lora);
  });
}

Hosts dora_hosts(torch::nn::Module& model, const AttachOptions& o) {
  return linear_hosts(model, o, [detach = o.detach_norm()](const std::string&, models::LinearImpl& lin,
                                                           const LoraOptions& lora) {
    return std::make_shared<DoraImpl>(lora, lin.weight, detach);
  });
}

// The generator group a target belongs to under `share` (hypernet.h).
std::string generator_group(const std::string& name, GeneratorShare share) {
  if (share == GeneratorShare::Model) return "model";
  if (share == GeneratorShare::Target) return name;
  auto dot = name.rfind('.');
  return dot == std::string::npos ? "model" : name.substr(0, dot);
}

// HoRA and DoRAN: every target adds its slot to a generator of the model's AdapterSet, which is
// registered once, at the root, after every target has added its slot (docs/architecture.md).
Hosts generated_hosts(torch::nn::Module& model, const AttachOptions& o, bool doran) {
  if (model.named_children().contains("hypernets"))
    throw Error("this model already has hypernetwork adapters attached");
  AdapterSet set;
  auto h = o.hypernet();
  h.r(o.lora().r());
  auto make = [sets = set.ptr(), h, o, doran](const std::string& name, models::LinearImpl& lin,
                                              const LoraOptions& lora) -> std::shared_ptr<Adapter> {
    auto gen = sets->generator(generator_group(name, o.share()), h);
    int64_t slot = gen->add_target(name, lin.options.in_features(), lin.options.out_features());
    if (!doran) return std::make_shared<HoraImpl>(lora, gen, slot);
    return std::make_shared<DoranImpl>(lora, gen, slot, lin.weight, o.tau_init(), o.detach_norm());
  };
  Hosts out = linear_hosts(model, o, make);
  out.done = [&model, set] { model.register_module("hypernets", set.ptr()); };
  return out;
}

Hosts hora_hosts(torch::nn::Module& model, const AttachOptions& o) { return generated_hosts(model, o, false); }
Hosts doran_hosts(torch::nn::Module& model, const AttachOptions& o) { return generated_hosts(model, o, true); }

std::shared_ptr<PromptExpertImpl> prompt_expert(const AttachOptions& o, int64_t in, int64_t out) {
  auto p = o.prompt_expert();
  p.in_features(in).out_features(out);
  p.gate().in_features(in);
  return std::make_shared<PromptExpertImpl>(p);
}

// Prompt experts go on Linear layers, whole blocks and block MLPs (blocks.N.mlp).
Hosts prompt_expert_hosts(torch::nn::Module& model, const AttachOptions& o) {
  Hosts out;
  std::map<std::string, models::BlockImpl*> blocks;
  auto named = model.named_modules("", false);
  for (const auto& item : named)
    if (auto* b = dynamic_cast<models::BlockImpl*>(item.value().get())) blocks[item.key()] = b;
  for (const auto& item : named) {
    const std::string name = item.key();
    if (auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get())) {
      out.hosts.push_back({name, [o, lin] {
                             const auto& lo = lin->options;
                             lin->attach_output(prompt_expert(o, lo.in_features(), lo.out_features()));
                             return true;
                           }});
    } else if (auto* b = dynamic_cast<models::BlockImpl*>(item.value().get())) {
      out.hosts.push_back({name, [o, b] {
                             b->attach_output(prompt_expert(o, b->options.dim(), b->options.dim()));
                             return true;
                           }});
    } else if (name.size() > 4 && name.compare(name.size() - 4, 4, ".mlp") == 0 &&
               blocks.count(name.substr(0, name.size() - 4))) {
      auto* b = blocks[name.substr(0, name.size() - 4)];
      out.hosts.push_back({name, [o, b] {
                             b->attach_mlp_output(prompt_expert(o, b->options.dim(), b->options.dim()));
                             return true;
                           }});
    }
  }
  out.what = "Linear layer, block or block MLP";
  out.hint = "; prompt experts go on e.g. head, blocks.3.mlp or blocks.3";
  return out;
}

// Prefixes go on attention layers.
Hosts prefix_hosts(torch::nn::Module& model, const AttachOptions& o) {
  Hosts out;
  for (const auto& item : model.named_modules("", false))
    if (auto* a = dynamic_cast<models::AttentionImpl*>(item.value().get()))
      out.hosts.push_back({item.key(), [o, a] {
                             if (a->prefix()) return false;
                             auto p = o.prefix();
                             p.dim(a->options.dim());
                             a->attach_prefix(std::make_shared<PrefixImpl>(p));
                             return true;
                           }});
  out.what = "attention layer";
  out.hint = "; prefixes go on e.g. blocks.*.attn";
  return out;
}
}  // namespace

const std::vector<AdapterKindRow>& adapter_kinds() {
  using K = AdapterKind;
  static const std::vector<AdapterKindRow> rows{
      {K::None, "none", nullptr, false, false, {}, nullptr, "full fine-tuning: every parameter trains"},
      {K::LinearProbe, "linear_probe", nullptr, false, false, {}, nullptr,
       "only adapter.modules_to_save train (e.g. a new head)"},
      {K::Lora, "lora", "LORA", false, true, {"adapter"}, lora_hosts,
       "low-rank update (alpha/r) B A on adapter.targets (docs/methods.md §5)"},
      {K::Dora, "dora", "LORA", true, true, {"adapter"}, dora_hosts,
       "LoRA direction + trained magnitude, m * V / ||V||_c (docs/methods.md §7)"},
      {K::Hora, "hora", "HORA", false, true, {"adapter", "hypernets"}, hora_hosts,
       "LoRA factors from a hypernetwork shared across heads (and q/v) (docs/methods.md §8)"},
      {K::Doran, "doran", "DORAN", true, true, {"adapter", "hypernets"}, doran_hosts,
       "DoRA with learnable tau in the norm and generated factors (docs/methods.md §9)"},
      {K::PromptExpert, "prompt_expert", "PROMPT_EXPERT", false, false, {"prompt"}, prompt_expert_hosts,
       "frozen sub-network mixed with K trainable experts by a gate (docs/methods.md §10, §11)"},
      {K::Prefix, "prefix", "PREFIX", false, false, {"prefix"}, prefix_hosts,
       "learnable prompt keys/values in every targeted attention layer (docs/methods.md §12)"},
  };
  return rows;
}

const AdapterKindRow& kind_row(AdapterKind kind) {
  const auto& rows = adapter_kinds();
  auto i = static_cast<size_t>(kind);
  if (i >= rows.size() || rows[i].value != kind)
    throw Error("internal: no adapter-kind row for kind " + std::to_string(i));
  return rows[i];
}

}  // namespace tunekit::adapters
