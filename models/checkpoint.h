// Activation checkpointing for one block (train.activation_checkpointing; LibTorch's C++ API has
// no torch.utils.checkpoint): the forward keeps only the block's input and recomputes the block's
// activations in the backward, replaying the CPU random generator (dropout) and the autocast state.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

namespace tunekit::models {

// One block as a function of its input; whatever else it reads (rotary tables, attention masks)
// it captures by value, since it runs again in the backward, after the forward has returned.
using BlockFn = std::function<torch::Tensor(const torch::Tensor&)>;

// block(x), computed without keeping its activations: the backward runs block again on x (with
// the random generator and the autocast state of the forward) and returns the gradients of x and
// of `params`. `params` must hold every tensor requiring grad that block reads besides x (the
// block's trainable parameters, and shared ones registered elsewhere such as a hypernetwork):
// the result requires grad through them even when x does not (a frozen embedding under LoRA),
// and a parameter missing from the list would silently get no gradient. Each tensor once.
torch::Tensor checkpointed(const BlockFn& block, const torch::Tensor& x, const std::vector<torch::Tensor>& params);

// Whether a forward checkpoints its blocks: asked for, the model training, autograd recording,
// and no key/value cache in use (a cached step writes the cache and keeps nothing to recompute).
bool checkpointing_applies(bool requested, const torch::nn::Module& model, bool uses_cache);

// The tensors requiring grad among `root`'s parameters that no module in `blocks` holds (the
// embeddings, the final norm, a head, shared adapter parts), each once.
std::vector<torch::Tensor> trainable_outside(const torch::nn::Module& root,
                                             const std::vector<const torch::nn::Module*>& blocks);
// `module`'s parameters requiring grad followed by `shared`, each tensor once: the `params` of
// checkpointed() for one block.
std::vector<torch::Tensor> checkpoint_params(const torch::nn::Module& module, const std::vector<torch::Tensor>& shared);

}  // namespace tunekit::models
