#include "models/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>

#include <mutex>
#include <unordered_set>
#include <utility>

#include "util/error.h"

namespace tunekit::models {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What the backward needs besides the saved input: the block, the tensors whose gradients it
// returns, and the state the forward ran under. Rides in the autograd context as a capsule.
struct Replay : torch::CustomClassHolder {
  BlockFn block;
  std::vector<torch::Tensor> params;
  bool x_requires_grad = false;
  torch::Tensor rng_state;  // the default CPU generator's state before the forward ran block
  bool autocast_cpu = false;
  at::ScalarType autocast_dtype = at::kBFloat16;
};

torch::Tensor cpu_rng_state() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_cpu_rng_state(const torch::Tensor& state) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// While alive: the CPU generator replays the forward's draws; afterwards it continues from where
// it was (the recomputation consumes none of the caller's random numbers).
class RngReplay {
 public:
  explicit RngReplay(const torch::Tensor& state) : resume_(cpu_rng_state()) { set_cpu_rng_state(state); }
  ~RngReplay() { set_cpu_rng_state(resume_); }
  RngReplay(const RngReplay&) = delete;
  RngReplay& operator=(const RngReplay&) = delete;

 private:
  torch::Tensor resume_;
};

// While alive: CPU autocast as the forward had it (a backward may run outside the caller's
// models::ComputeScope). Casts cached by a recomputation this switched on are dropped after it.
class AutocastAs {
 public:
  AutocastAs(bool enabled, at::ScalarType dtype)
      : enabled_(at::autocast::is_cpu_enabled()), dtype_(at::autocast::get_autocast_cpu_dtype()), switched_on_(enabled && !enabled_) {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
  ~AutocastAs() {
    at::autocast::set_cpu_enabled(enabled_);
    at::autocast::set_autocast_cpu_dtype(dtype_);
    if (switched_on_) at::autocast::clear_cache();
  }
  AutocastAs(const AutocastAs&) = delete;
  AutocastAs& operator=(const AutocastAs&) = delete;

 private:
  bool enabled_;
  at::ScalarType dtype_;
  bool switched_on_;
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  // `params` are inputs only so that the output requires grad through them and the backward
  // can return their gradients; the block reads them itself.
  static torch::Tensor forward(AutogradContext* ctx, c10::intrusive_ptr<Replay> replay, const torch::Tensor& x,
                               at::TensorList params) {
    (void)params;
    torch::NoGradGuard no_grad;  // Function::apply already records nothing; said here for the reader
    ctx->save_for_backward({x});
    auto y = replay->block(x);
    ctx->saved_data["replay"] = c10::IValue::make_capsule(std::move(replay));
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    if (torch::GradMode::is_enabled())
      throw Error("activation checkpointing: a backward that records a graph (create_graph, double backward) is not "
                  "supported; turn train.activation_checkpointing off");
    auto replay = c10::static_intrusive_pointer_cast<Replay>(ctx->saved_data.at("replay").toCapsule());
    const torch::Tensor x = ctx->get_saved_variables().at(0);
    torch::Tensor input = x.detach().requires_grad_(replay->x_requires_grad), y;
    {
      RngReplay rng(replay->rng_state);
      AutocastAs autocast(replay->autocast_cpu, replay->autocast_dtype);
      torch::AutoGradMode grad_mode(true);
      y = replay->block(input);
    }
    std::vector<torch::Tensor> wrt;
    if (replay->x_requires_grad) wrt.push_back(input);
    wrt.insert(wrt.end(), replay->params.begin(), replay->params.end());
    variable_list grads(wrt.size());
    if (y.requires_grad() && !wrt.empty())
      grads = torch::autograd::grad({y}, wrt, {grad_outputs.at(0)}, /*retain_graph=*/false, /*create_graph=*/false,
                                    /*allow_unused=*/true);
    variable_list out{torch::Tensor()};  // the replay capsule has no gradient
    out.push_back(replay->x_requires_grad ? grads.front() : torch::Tensor());
    out.insert(out.end(), grads.begin() + (replay->x_requires_grad ? 1 : 0), grads.end());
    return out;
  }
};

void add_once(std::vector<torch::Tensor>& out, std::unordered_set<const void*>& seen, const torch::Tensor& t) {
  if (t.defined() && t.requires_grad() && seen.insert(t.unsafeGetTensorImpl()).second) out.push_back(t);
}

}  // namespace

torch::Tensor checkpointed(const BlockFn& block, const torch::Tensor& x, const std::vector<torch::Tensor>& params) {
  bool any_grad = x.requires_grad();
  for (const auto& p : params) any_grad = any_grad || p.requires_grad();
  if (!torch::GradMode::is_enabled() || !any_grad) return block(x);  // nothing to differentiate: nothing to save
  auto replay = c10::make_intrusive<Replay>();
  replay->block = block;
  replay->params = params;
  replay->x_requires_grad = x.requires_grad();
  replay->rng_state = cpu_rng_state();
  replay->autocast_cpu = at::autocast::is_cpu_enabled();
  replay->autocast_dtype = at::autocast::get_autocast_cpu_dtype();
  return CheckpointFunction::apply(std::move(replay), x, at::TensorList(params));
}

bool checkpointing_applies(bool requested, const torch::nn::Module& model, bool uses_cache) {
  return requested && model.is_training() && torch::GradMode::is_enabled() && !uses_cache;
}

std::vector<torch::Tensor> trainable_outside(const torch::nn::Module& root,
                                             const std::vector<const torch::nn::Module*>& blocks) {
  std::unordered_set<const void*> inside;
  for (const auto* b : blocks)
    for (const auto& p : b->parameters()) inside.insert(p.unsafeGetTensorImpl());
  std::vector<torch::Tensor> out;
  for (const auto& p : root.parameters())
    if (!inside.count(p.unsafeGetTensorImpl())) add_once(out, inside, p);
  return out;
}

std::vector<torch::Tensor> checkpoint_params(const torch::nn::Module& module, const std::vector<torch::Tensor>& shared) {
  std::vector<torch::Tensor> out;
  std::unordered_set<const void*> seen;
  for (const auto& p : module.parameters()) add_once(out, seen, p);
  for (const auto& p : shared) add_once(out, seen, p);
  return out;
}

}  // namespace tunekit::models
