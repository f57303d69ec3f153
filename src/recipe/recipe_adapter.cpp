// The recipe's `adapter:` section, with adapter.hypernet (HoRA, DoRAN) and adapter.gate (prompt experts).
#include <fmt/format.h>

#include <cmath>
#include <utility>

#include "src/recipe/recipe_sections.h"

namespace tunekit::recipe {
namespace {

void parse_hypernet(Section& a, AdapterConfig& c) {
  Section h = a.section("hypernet");
  auto& g = c.hypernet;
  h.read("embed", g.embed);
  // d_z defaults to r: HoRA then costs about LoRA's parameters (the paper's "marginal increase";
  // d_z 32 cost 2.6-2.9x LoRA's, docs/methods.md §8).
  g.hidden = g.hidden_for(c.r);
  h.read("hidden", g.hidden);
  g.act = h.choice("act", g.act);
  // Both papers share the generator's first layers within one attention module (q, v and all its
  // heads): the default for both. HoRA has one seed set, DoRAN seeds per projection
  // (docs/methods.md §8, §9); `share: model` is tunekit's model-wide sharing.
  g.share = h.choice("share", HypernetShare::Parent);
  g.share_seeds = c.kind != AdapterKind::Doran;
  h.read("share_seeds", g.share_seeds);
  h.check_range("embed", g.embed, 1, kMaxDim);
  if (h.has("hidden")) h.check_range("hidden", g.hidden, 1, kMaxDim);  // else r, checked with r
  if (a.has("hypernet") && c.kind != AdapterKind::Hora && c.kind != AdapterKind::Doran)
    a.fail("hypernet", fmt::format("only applies to kind hora or doran (kind is {})", to_string(c.kind)));
  h.finish();
}

void parse_gate(Section& a, AdapterConfig& c) {
  Section g = a.section("gate");
  auto& q = c.gate;
  q.kind = g.choice("kind", q.kind);
  g.read("top_k", q.top_k);
  g.read("temperature", q.temperature);
  q.act = g.choice("act", q.act);
  g.read("tau1", q.tau1);
  g.read("tau2", q.tau2);
  g.read("noise", q.noise);
  g.read("proj_dim", q.proj_dim);
  g.check_range("proj_dim", q.proj_dim, 0, kMaxDim, " (0 = no projection: tunekit's form)");
  if (g.has("proj_dim") && q.kind != adapters::GateKind::Cosine)
    g.fail("proj_dim", fmt::format("only applies to kind cosine (kind is {})", adapters::to_string(q.kind)));
  g.read("bias_init", q.bias_init);
  q.input = g.choice("input", q.input);
  g.check_real("temperature", q.temperature, 0, true, HUGE_VAL, false);
  for (auto [key, v] : {std::pair<const char*, double>{"tau1", q.tau1}, {"tau2", q.tau2}, {"noise", q.noise}})
    g.check_real(key, v, 0, false, HUGE_VAL, false);
  if (q.top_k < 1 || q.top_k > c.experts + 1)
    g.fail("top_k", fmt::format("must be in 1..experts+1 = {} (the frozen expert counts)", c.experts + 1));
  if (a.has("gate") && c.kind != AdapterKind::PromptExpert)
    a.fail("gate", fmt::format("only applies to kind prompt_expert (kind is {})", to_string(c.kind)));
  g.finish();
}

void check_adapter(Section& a, const AdapterConfig& c, const ModelConfig& model) {
  const std::string kind = to_string(c.kind);
  a.check_range("expert_hidden", c.expert_hidden, 0, kMaxDim, " (0 = linear experts)");
  if (c.r <= 0) a.fail("r", fmt::format("must be positive, got {}", c.r));
  if (c.low_rank() && c.r > model.dim)
    a.fail("r", fmt::format("must be at most model.dim = {} (a rank above a layer's width adds nothing), got {}",
                            model.dim, c.r));
  a.check_real("alpha", c.alpha, 0, true, HUGE_VAL, false);
  a.check_real("dropout", c.dropout, 0, false, 1, true);
  if (!(c.tau_init > 0))
    a.fail("tau_init", fmt::format("must be positive (τ = softplus(ρ) > 0), got {}", c.tau_init));
  if (a.has("tau_init") && c.kind != AdapterKind::Doran) a.fail("tau_init", "only applies to kind doran");
  if (c.kind == AdapterKind::Prefix && c.targets.empty())
    a.fail("targets", "prefix needs the attention modules to extend, e.g. [\"blocks.*.attn\"]");
  if (c.kind == AdapterKind::PromptExpert && c.targets.empty())
    a.fail("targets", "prompt_expert needs target modules: the head, blocks.N.mlp or blocks.N, e.g. [head]");
  if (c.low_rank() && c.targets.empty())
    a.fail("targets", fmt::format("{} needs at least one target pattern, e.g. [\"blocks.*.attn.q\", \"blocks.*.attn.v\"]", kind));
  if (!c.init_from.empty() && !c.saves_adapter_file()) {
    std::vector<std::string> with_files;
    for (const auto& row : adapters::adapter_kinds())
      if (row.peft_type) with_files.push_back(row.name);
    a.fail("init_from", fmt::format("needs an adapter kind with adapter files ({}), not {}", join(with_files, ", "), kind));
  }
  if (c.kind == AdapterKind::LinearProbe && c.modules_to_save.empty())
    a.fail("modules_to_save", "linear_probe trains only modules_to_save; name at least one, e.g. [head]");
}

}  // namespace

AdapterConfig parse_adapter(Section a, const ModelConfig& model) {
  AdapterConfig c;
  c.kind = a.choice("kind", c.kind);
  a.read("r", c.r);
  a.read("alpha", c.alpha);
  a.read("dropout", c.dropout);
  a.read("targets", c.targets);
  a.read("modules_to_save", c.modules_to_save);
  a.read("tau_init", c.tau_init);
  a.read("detach_norm", c.detach_norm);
  a.read("rslora", c.rslora);
  if (a.has("rslora") && !c.low_rank()) a.fail("rslora", "only applies to kinds lora, dora, hora, doran");
  a.read("init_from", c.init_from);
  parse_hypernet(a, c);
  a.read("prefix_length", c.prefix_length);
  a.read("prefix_reparam", c.prefix_reparam);
  a.read("prefix_hidden", c.prefix_hidden);
  a.check_range("prefix_length", c.prefix_length, 1, kMaxPrefixLength);
  a.check_range("prefix_hidden", c.prefix_hidden, 1, kMaxDim);
  a.read("experts", c.experts);
  a.check_range("experts", c.experts, 1, kMaxExperts);  // before the gate's top_k counts on it
  a.read("expert_hidden", c.expert_hidden);
  parse_gate(a, c);
  check_adapter(a, c, model);
  a.finish();
  return c;
}

}  // namespace tunekit::recipe
