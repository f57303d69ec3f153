// The adapter kinds, one row each: the recipe's name, the PEFT type of its adapter file, which
// tensors that file holds, the factory that finds its hosts in a model and attaches it, and the
// line `tunekit ls` prints. Plain C++ (no LibTorch), so the recipe can use the enum.
#pragma once
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace tunekit::adapters {

enum class AdapterKind { None, LinearProbe, Lora, Dora, Hora, Doran, PromptExpert, Prefix };

struct AttachOptions;  // adapters/attach.h
struct Hosts;          // adapters/attach.h
// Finds the modules of `model` an adapter of this kind can go on, each with its attach step.
using HostsFactory = Hosts (*)(torch::nn::Module& model, const AttachOptions& options);

// The row has the fields util/enum_table.h reads (name, value, help), so the recipe parses
// adapter.kind and prints it from this one table.
struct AdapterKindRow {
  AdapterKind value;
  const char* name;       // adapter.kind in a recipe
  const char* peft_type;  // adapter_config.json's peft_type; nullptr: the kind has no adapter file
  bool use_dora;          // PEFT's use_dora flag
  bool low_rank;          // rank-r factors with scale alpha/r on models::Linear (r and alpha apply)
  // The parameters its adapter file holds (besides modules_to_save): those with one of these
  // module names on their path (e.g. blocks.0.attn.q.adapter.lora_A, hypernets.model.W1_A).
  std::vector<std::string> saves;
  HostsFactory hosts;       // nullptr: nothing is attached (none, linear_probe)
  const char* help;         // one line for `tunekit ls`
};

// Every kind, in the enum's order.
const std::vector<AdapterKindRow>& adapter_kinds();
const AdapterKindRow& kind_row(AdapterKind kind);
// The enum table of AdapterKind (found by argument-dependent lookup from util/enum_table.h).
inline const std::vector<AdapterKindRow>& enum_rows(AdapterKind) { return adapter_kinds(); }

}  // namespace tunekit::adapters
