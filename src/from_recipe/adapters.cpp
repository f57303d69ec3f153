#include "src/from_recipe/adapters.h"

namespace tunekit::from_recipe {

namespace {
adapters::HypernetOptions hypernet_options(const AdapterConfig& cfg) {
  const auto& h = cfg.hypernet;
  return adapters::HypernetOptions()
      .r(cfg.r)
      .embed(h.embed)
      .hidden(h.hidden_for(cfg.r))
      .act(h.act)
      .share_seeds(h.share_seeds);
}

// Sizes (in/out features) are the host's, set when each expert is made.
adapters::PromptExpertOptions prompt_expert_options(const AdapterConfig& cfg) {
  const auto& g = cfg.gate;
  auto gate = adapters::GateOptions(0, cfg.experts)
                  .kind(g.kind)
                  .top_k(g.top_k)
                  .temperature(g.temperature)
                  .act(g.act)
                  .tau1(g.tau1)
                  .tau2(g.tau2)
                  .noise(g.noise)
                  .proj_dim(g.proj_dim)
                  .bias_init(g.bias_init);
  return adapters::PromptExpertOptions(0, 0, gate).hidden(cfg.expert_hidden).gate_input(g.input);
}
}  // namespace

adapters::AttachOptions attach_options(const AdapterConfig& cfg) {
  return adapters::AttachOptions(cfg.kind)
      .targets(cfg.targets)
      .modules_to_save(cfg.modules_to_save)
      .lora(adapters::LoraOptions(0, 0).r(cfg.r).alpha(cfg.alpha).dropout(cfg.dropout).rslora(cfg.rslora))
      .detach_norm(cfg.detach_norm)
      .tau_init(cfg.tau_init)
      .hypernet(hypernet_options(cfg))
      .share(cfg.hypernet.share)
      .prompt_expert(prompt_expert_options(cfg))
      .prefix(adapters::PrefixOptions(0, cfg.prefix_length).reparam(cfg.prefix_reparam).hidden(cfg.prefix_hidden));
}

}  // namespace tunekit::from_recipe
