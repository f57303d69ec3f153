// attach_adapters: finds the hosts of the chosen adapter kind in a model (adapters/kind.h),
// attaches one adapter to every host whose name matches a target pattern, freezes the base and
// unfreezes the adapters and `modules_to_save`. Also merge/unmerge and parameter counts.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "adapters/hypernet.h"
#include "adapters/kind.h"
#include "adapters/lora.h"
#include "adapters/prefix.h"
#include "adapters/prompt_expert.h"

namespace tunekit::adapters {

// Everything attach_adapters needs; each kind reads its own fields. The sizes in the nested
// Options (in/out features, dim) are set per host.
struct AttachOptions {
  explicit AttachOptions(AdapterKind kind = AdapterKind::None) : kind_(kind) {}
  TORCH_ARG(AdapterKind, kind);
  TORCH_ARG(std::vector<std::string>, targets);          // find_targets patterns, e.g. "blocks.*.attn.q", "q_proj"
  TORCH_ARG(std::vector<std::string>, modules_to_save);  // trained in full beside the adapter, e.g. "head"
  TORCH_ARG(LoraOptions, lora) = LoraOptions(0, 0);      // low-rank kinds: r, alpha, dropout
  TORCH_ARG(bool, detach_norm) = true;                   // dora, doran: norm constant in backward
  TORCH_ARG(double, tau_init) = 1e-3;                    // doran: τ at the start
  TORCH_ARG(HypernetOptions, hypernet);                  // hora, doran (its r is lora's r)
  TORCH_ARG(GeneratorShare, share) = GeneratorShare::Parent;
  TORCH_ARG(PromptExpertOptions, prompt_expert) = PromptExpertOptions(0, 0, GateOptions(0, 1));
  TORCH_ARG(PrefixOptions, prefix) = PrefixOptions(0, 10);
};

// The modules one kind can go on, as a kind's factory finds them (adapters/kind.h).
struct Host {
  std::string name;
  std::function<bool()> attach;  // false: the host already had one (left as it is)
};
struct Hosts {
  std::vector<Host> hosts;
  std::string what;             // "Linear layer", for the no-match error
  std::string hint;             // appended to that error, e.g. "; prefixes go on e.g. blocks.*.attn"
  std::function<void()> done;   // run once every host is attached (may be empty)
};

// The indices of `names` (dotted module names) that one target pattern selects, in order; none
// is an empty result. The three forms, as PEFT's users write them:
//  - a glob (util/text.h: `*` within one segment, `**` across, `?` one character):
//    "blocks.*.attn.q", "model.layers.*.self_attn.q_proj";
//  - a plain name: the module of that name; when no module has it, every module whose name ends
//    with "." + pattern (PEFT's suffix rule for target_modules lists: "q_proj" selects
//    model.layers.0.self_attn.q_proj, "attn.q" selects blocks.3.attn.q);
//  - "re:<regular expression>": the names it matches in full (ECMAScript std::regex), as PEFT
//    treats target_modules given as one string (re.fullmatch); an invalid expression throws.
std::vector<size_t> find_targets(const std::string& pattern, const std::vector<std::string>& names);

// find_targets, and with no hit throws "<label> '<pattern>' matches no <what><did you mean><hint>"
// (a plain name is also compared with the names' last segments: 'q_prj' -> did you mean 'q_proj'?).
std::vector<size_t> match_targets(const std::string& pattern, const std::vector<std::string>& names,
                                  const std::string& label, const std::string& what, const std::string& hint = "");

// The names of the modules the adapter.modules_to_save patterns select, pattern by pattern, as
// attach_adapters unfreezes them (match_targets: a pattern matching no module throws).
std::vector<std::string> match_modules_to_save(torch::nn::Module& model, const std::vector<std::string>& patterns);

struct AttachReport {
  std::vector<std::string> adapted;   // module names that got an adapter
  std::vector<std::string> saved;     // modules_to_save that matched
  int64_t trainable = 0, total = 0;   // parameter counts after attaching
  std::string summary() const;
};

AttachReport attach_adapters(torch::nn::Module& model, const AttachOptions& options);

// Names of every models::Linear in the model (valid low-rank adapter targets).
std::vector<std::string> adaptable_modules(torch::nn::Module& model);

void merge_adapters(torch::nn::Module& model);
void unmerge_adapters(torch::nn::Module& model);

int64_t count_parameters(const torch::nn::Module& model, bool trainable_only);

}  // namespace tunekit::adapters
