#include "adapters/prefix.h"

#include "util/error.h"

namespace tunekit::adapters {

PrefixImpl::PrefixImpl(PrefixOptions options_) : options(std::move(options_)) {
  const int64_t L = options.length(), d = options.dim();
  if (L <= 0) throw Error("prefix: length must be positive");
  torch::NoGradGuard no_grad;
  if (options.reparam()) {
    const int64_t e = options.embed() > 0 ? options.embed() : d;
    embedding = register_parameter("embedding", torch::randn({L, e}));
    fc1 = register_module("fc1", torch::nn::Linear(e, options.hidden()));
    fc2 = register_module("fc2", torch::nn::Linear(options.hidden(), 2 * d));
  } else {
    // Small random prompts (as the token embeddings' scale in GPT-2-style init).
    prefix_k = register_parameter("prefix_k", torch::randn({L, d}) * 0.02);
    prefix_v = register_parameter("prefix_v", torch::randn({L, d}) * 0.02);
  }
}

std::pair<torch::Tensor, torch::Tensor> PrefixImpl::keys_values() {
  if (!options.reparam()) return {prefix_k, prefix_v};
  auto kv = fc2(torch::tanh(fc1(embedding)));  // [L, 2d]
  auto parts = kv.chunk(2, -1);
  return {parts[0], parts[1]};
}

}  // namespace tunekit::adapters
