#include "adapters/hypernet.h"

#include <cmath>

namespace tunekit::adapters {

namespace {
torch::Tensor kaiming(std::vector<int64_t> shape) {
  auto t = torch::empty(shape);
  torch::nn::init::kaiming_uniform_(t, std::sqrt(5.0));  // torch.nn.Linear's init
  return t;
}
}  // namespace

std::string module_key(const std::string& path) {
  std::string k = path;
  for (auto& c : k)
    if (c == '.') c = '_';
  return k;
}

FactorGeneratorImpl::FactorGeneratorImpl(HypernetOptions options_) : options(std::move(options_)) {
  torch::NoGradGuard no_grad;
  W1_A = register_parameter("W1_A", kaiming({options.hidden(), options.embed()}));
  W1_B = register_parameter("W1_B", kaiming({options.hidden(), options.embed()}));
}

torch::Tensor FactorGeneratorImpl::seed(const std::string& name, std::vector<int64_t> shape) {
  torch::NoGradGuard no_grad;
  // Seeds ~ Kaiming-uniform like LoRA's A (docs/methods.md §8), O(1) under tanh.
  return register_parameter(name, kaiming(std::move(shape)));
}

int64_t FactorGeneratorImpl::add_target(const std::string& name, int64_t d_in, int64_t d_out) {
  const auto key = module_key(name);
  const int64_t r = options.r(), e = options.embed(), z = options.hidden();
  Slot s;
  if (options.share_seeds()) {
    if (!shared_seed_A_.defined()) shared_seed_A_ = seed("seed_A", {r, e});
    auto it = shared_seed_B_.find(d_out);
    if (it == shared_seed_B_.end())
      it = shared_seed_B_.emplace(d_out, seed(shared_seed_B_.empty() ? "seed_B" : "seed_B_" + std::to_string(d_out),
                                              {d_out, e}))
               .first;
    s.seed_A = shared_seed_A_;
    s.seed_B = it->second;
  } else {
    s.seed_A = seed(key + "_seed_A", {r, e});
    s.seed_B = seed(key + "_seed_B", {d_out, e});
  }
  torch::NoGradGuard no_grad;
  s.W2_A = register_parameter(key + "_W2_A", kaiming({d_in, z}));
  s.W2_B = register_parameter(key + "_W2_B", torch::zeros({r, z}));  // B = 0 at start (docs/methods.md §8)
  slots_.push_back(s);
  return static_cast<int64_t>(slots_.size()) - 1;
}

torch::Tensor FactorGeneratorImpl::activate(const torch::Tensor& t) const {
  switch (options.act()) {
    case Activation::Relu: return torch::relu(t);
    case Activation::Gelu: return torch::gelu(t);
    case Activation::Tanh: break;
  }
  return torch::tanh(t);
}

std::pair<torch::Tensor, torch::Tensor> FactorGeneratorImpl::factors(int64_t slot) const {
  const Slot& s = slots_.at(static_cast<size_t>(slot));
  auto A = torch::linear(activate(torch::linear(s.seed_A, W1_A)), s.W2_A);  // [r, d_in]
  auto B = torch::linear(activate(torch::linear(s.seed_B, W1_B)), s.W2_B);  // [d_out, r]
  return {A, B};
}

std::shared_ptr<FactorGeneratorImpl> AdapterSetImpl::generator(const std::string& group,
                                                               const HypernetOptions& options) {
  auto it = generators_.find(group);
  if (it != generators_.end()) return it->second;
  auto g = register_module(module_key(group), std::make_shared<FactorGeneratorImpl>(options));
  generators_.emplace(group, g);
  return g;
}

}  // namespace tunekit::adapters
