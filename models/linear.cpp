#include "models/linear.h"

#include <cmath>

#include "models/init_guard.h"
#include "util/error.h"

namespace tunekit::models {

namespace {
thread_local bool skip_init = false;
}  // namespace

SkipInit::SkipInit(bool skip) : previous_(skip_init) { skip_init = skip; }
SkipInit::~SkipInit() { skip_init = previous_; }
bool init_skipped() { return skip_init; }

LinearImpl::LinearImpl(LinearOptions options_) : options(std::move(options_)) { reset(); }

void LinearImpl::reset() {
  weight = register_parameter("weight",
                              torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) bias = register_parameter("bias", torch::empty({options.out_features()}));
  reset_parameters();
}

void LinearImpl::reset_parameters() {
  if (init_skipped()) return;  // models/init_guard.h: a checkpoint fills the weights next
  // Same initialisation as torch.nn.Linear.
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    double bound = 1.0 / std::sqrt(static_cast<double>(options.in_features()));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  auto y = adapter_ && !merged_ ? adapter_->forward(x, weight, bias) : torch::linear(x, weight, bias);
  return output_ ? output_->forward(x, y) : y;
}

void LinearImpl::attach_output(std::shared_ptr<adapters::OutputAdapter> prompt) {
  if (output_) throw Error("this Linear already has an output adapter attached");
  output_ = register_module("prompt", std::move(prompt));
}

void LinearImpl::attach(std::shared_ptr<adapters::Adapter> adapter) {
  if (adapter_) throw Error("this Linear already has an adapter attached");
  adapter_ = register_module("adapter", std::move(adapter));
}

void LinearImpl::detach() {
  if (merged_) unmerge();
  if (!adapter_) return;
  unregister_module("adapter");
  adapter_.reset();
}

void LinearImpl::merge() {
  if (!adapter_ || merged_) return;
  torch::NoGradGuard no_grad;
  unmerged_weight_ = weight.detach().clone();
  weight.copy_(adapter_->merged_weight(weight));
  merged_ = true;
}

void LinearImpl::unmerge() {
  if (!merged_) return;
  torch::NoGradGuard no_grad;
  weight.copy_(unmerged_weight_);
  unmerged_weight_ = torch::Tensor();
  merged_ = false;
}

torch::Tensor LinearImpl::effective_weight() const {
  torch::NoGradGuard no_grad;
  if (adapter_ && !merged_) return adapter_->merged_weight(weight).detach();
  return weight.detach();
}

torch::jit::Module LinearImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("Linear");
  m.register_parameter("weight", effective_weight().clone(), false);
  std::string y = "torch.linear(x, self.weight)";
  if (bias.defined()) {
    m.register_parameter("bias", bias.detach().clone(), false);
    y = "torch.linear(x, self.weight, self.bias)";
  }
  if (output_) {
    m.register_module("prompt", output_->to_script(unit));
    y = "self.prompt.forward(x, " + y + ")";
  }
  m.define("def forward(self, x: Tensor) -> Tensor:\n    return " + y + "\n");
  return m;
}

}  // namespace tunekit::models
