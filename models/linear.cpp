#include "models/linear.h"

#include <ATen/autocast_mode.h>

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

namespace {

// x Wᵀ for a frozen W stored narrower than x (models/precision.h): W is widened (or x narrowed,
// under a bf16 compute scope) for this product only; autograd keeps the narrow W, not a widened
// copy, and gives W no gradient.
struct NarrowWeightLinear : torch::autograd::Function<NarrowWeightLinear> {
  static torch::ScalarType compute_dtype(const torch::Tensor& x) {
    return at::autocast::is_cpu_enabled() ? at::autocast::get_autocast_cpu_dtype() : x.scalar_type();
  }
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& W) {
    const auto dtype = compute_dtype(x);
    ctx->save_for_backward({W});
    ctx->saved_data["dtype"] = static_cast<int64_t>(dtype);
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    return torch::matmul(x.to(dtype), widen_weight(W, dtype).t());
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto W = ctx->get_saved_variables()[0];
    const auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt());
    const auto x_dtype = static_cast<torch::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    auto gx = torch::matmul(grads[0].to(dtype), widen_weight(W, dtype)).to(x_dtype);
    return {gx, torch::Tensor()};
  }
};

}  // namespace

bool narrow_weight(const torch::Tensor& W) {
  const auto t = W.scalar_type();
  return t == torch::kBFloat16 || t == torch::kHalf || t == torch::kChar;
}

torch::Tensor widen_weight(const torch::Tensor& W, torch::ScalarType dtype) {
  if (W.scalar_type() != torch::kChar) return W.to(dtype);
  TORCH_CHECK(W.dim() == 2 && W.size(1) > 4, "widen_weight: a packed int8 weight is [out, in + 4], got ",
              W.sizes());
  const int64_t in = W.size(1) - 4;
  auto scale = W.narrow(1, in, 4).contiguous().view(torch::kFloat);  // [out, 1]
  // int8 times float32 promotes to float32 in one pass; then the compute dtype.
  auto w = W.narrow(1, 0, in) * scale;
  return dtype == torch::kFloat ? w : w.to(dtype);
}

torch::Tensor pack_int8_rows(const torch::Tensor& W) {
  TORCH_CHECK(W.dim() == 2 && W.is_floating_point(), "pack_int8_rows: W must be a floating [out, in] tensor");
  torch::NoGradGuard no_grad;
  auto w = W.to(torch::kFloat);
  auto amax = w.abs().amax(1, /*keepdim=*/true);
  auto scale = torch::where(amax > 0, amax / 127.0, torch::ones_like(amax));  // an all-zero row: scale 1
  auto q = torch::round(w / scale).clamp_(-127, 127).to(torch::kChar);
  return torch::cat({q, scale.contiguous().view(torch::kChar)}, 1);
}

torch::Tensor base_linear(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b) {
  const bool narrow = narrow_weight(W);
  if (!narrow || W.scalar_type() == x.scalar_type() || W.requires_grad()) return torch::linear(x, W, b);
  auto y = NarrowWeightLinear::apply(x, W);
  return b.defined() ? y + b : y;
}

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
  auto y = adapter_ && !merged_ ? adapter_->forward(x, weight, bias) : base_linear(x, weight, bias);
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
