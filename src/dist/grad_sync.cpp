#include "src/dist/grad_sync.h"

#include <fmt/format.h>

#include <cstdint>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "util/error.h"

namespace tunekit::dist {

std::vector<Bucket> make_buckets(const std::vector<torch::Tensor>& params, int64_t bucket_bytes) {
  const int64_t limit = std::max<int64_t>(1, bucket_bytes / int64_t(sizeof(float)));
  std::vector<Bucket> buckets;
  Bucket current;
  for (size_t i = params.size(); i-- > 0;) {
    const int64_t n = params[i].numel();
    if (n == 0) continue;
    if (current.numel > 0 && current.numel + n > limit) {
      buckets.push_back(std::move(current));
      current = Bucket{};
    }
    current.index.push_back(i);
    current.numel += n;
  }
  if (current.numel > 0) buckets.push_back(std::move(current));
  return buckets;
}

torch::Tensor flatten_grads(const std::vector<torch::Tensor>& params, const Bucket& bucket) {
  torch::NoGradGuard no_grad;
  auto flat = torch::empty({bucket.numel}, torch::kFloat);
  int64_t at = 0;
  for (size_t i : bucket.index) {
    const auto& p = params[i];
    auto dst = flat.slice(0, at, at + p.numel());
    if (p.grad().defined())
      dst.copy_(p.grad().reshape({-1}));
    else
      dst.zero_();
    at += p.numel();
  }
  return flat;
}

void unflatten_grads(const torch::Tensor& flat, double scale, const std::vector<torch::Tensor>& params,
                     const Bucket& bucket) {
  torch::NoGradGuard no_grad;
  int64_t at = 0;
  for (size_t i : bucket.index) {
    const auto& p = params[i];
    auto g = p.grad();
    if (g.defined()) {
      auto src = flat.slice(0, at, at + p.numel()).view(g.sizes());
      if (scale == 1.0)
        g.copy_(src);
      else
        g.copy_(src * scale);
    }
    at += p.numel();
  }
}

bool overlap_from_env(const char* value) {
  if (value == nullptr || std::string(value) == "0") return false;
  if (std::string(value) == "1") return true;
  throw Error(fmt::format("environment: TUNEKIT_DIST_OVERLAP=\"{}\" is not 0 or 1", value));
}

GradSync::GradSync(ProcessGroup& group, std::vector<torch::Tensor> trainable, int64_t bucket_bytes, bool overlap)
    : group_(group), params_(std::move(trainable)), buckets_(make_buckets(params_, bucket_bytes)), overlap_(overlap) {
  for (const auto& b : buckets_) bytes_per_step_ += b.numel * int64_t(sizeof(float));
  bytes_per_step_ += int64_t(params_.size()) * int64_t(sizeof(float));  // the defined-gradient flags
  bucket_of_.assign(params_.size(), SIZE_MAX);
  offset_of_.assign(params_.size(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    int64_t at = 0;
    for (size_t i : buckets_[b].index) {
      bucket_of_[i] = b;
      offset_of_[i] = size_t(at);
      at += params_[i].numel();
    }
  }
  if (overlap_)
    for (size_t i = 0; i < params_.size(); ++i)
      hooks_.push_back(params_[i].register_hook([this, i](const torch::Tensor& g) { on_grad(i, g); }));
}

GradSync::~GradSync() {
  for (size_t i = 0; i < hooks_.size(); ++i) params_[i].remove_hook(hooks_[i]);
}

void GradSync::arm() {
  if (!overlap_) return;
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = true;
  final_.assign(params_.size(), 0);
  missing_.clear();
  flats_.clear();
  for (const auto& b : buckets_) {
    missing_.push_back(int64_t(b.index.size()));
    flats_.push_back(torch::zeros({b.numel}, torch::kFloat));
  }
  launched_ = 0;
  works_.clear();
  error_.clear();
}

// Called by autograd with the gradient about to be accumulated into params_[param].grad(): the
// final gradient is what is there plus it (computed as accumulation would: in the gradient's dtype).
void GradSync::on_grad(size_t param, const torch::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_ || !error_.empty() || !grad.defined()) return;
  const size_t b = bucket_of_[param];
  if (b == SIZE_MAX) return;  // an empty parameter
  try {
    torch::NoGradGuard no_grad;
    const auto& p = params_[param];
    if (final_[param] || b < launched_)
      throw Error(fmt::format("a second gradient reached parameter {} in one backward", param));
    auto dst = flats_[b].slice(0, int64_t(offset_of_[param]), int64_t(offset_of_[param]) + p.numel());
    const auto& held = p.grad();
    dst.copy_((held.defined() ? held + grad : grad).reshape({-1}));
    final_[param] = 1;
    --missing_[b];
    launch_ready();
  } catch (const std::exception& e) {
    error_ = e.what();
  }
}

void GradSync::launch_ready() {
  while (launched_ < buckets_.size() && missing_[launched_] == 0) launch(launched_);
}

void GradSync::launch(size_t bucket) {
  std::vector<torch::Tensor> one{flats_[bucket]};
  works_.push_back(group_.backend().allreduce(one));
  launched_ = bucket + 1;
}

int64_t broadcast_tensors(ProcessGroup& group, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  torch::NoGradGuard no_grad;
  int64_t bytes = 0;
  for (const auto& [name, t] : tensors) {
    if (t.numel() == 0) continue;
    torch::Tensor wire = t.is_contiguous() ? t : t.contiguous();
    bool widened = false;
    switch (wire.scalar_type()) {
      // Gloo has no bfloat16 or bool: the same bytes travel as float16 and uint8 (a broadcast
      // copies bytes and computes nothing, so any bit pattern arrives as it was sent).
      case torch::kBFloat16: wire = wire.view(torch::kHalf); break;
      case torch::kBool: wire = wire.view(torch::kByte); break;
      case torch::kFloat: case torch::kDouble: case torch::kHalf: case torch::kLong: case torch::kInt:
      case torch::kChar: case torch::kByte: break;
      default:
        if (at::isFloatingType(wire.scalar_type()) || at::isComplexType(wire.scalar_type()))
          throw Error(fmt::format("broadcast of {} from rank 0: its dtype {} has no Gloo form here", name,
                                  c10::toString(wire.scalar_type())));
        wire = wire.to(torch::kLong);  // another integer type Gloo lacks (int16): an int64 copy
        widened = true;
    }
    group.broadcast(wire, 0, fmt::format("broadcast of {} from rank 0", name));
    bytes += wire.numel() * int64_t(wire.element_size());
    if (widened) t.copy_(wire);
    else if (!t.is_contiguous()) t.copy_(wire.view(t.scalar_type()));
  }
  return bytes;
}

void GradSync::broadcast_model(models::Model& model) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : model.named_parameters()) tensors.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers()) tensors.emplace_back(b.key(), b.value());
  broadcast_tensors(group_, tensors);
}

void GradSync::reduce(double scale, int64_t step) {
  const std::string what = fmt::format("allreduce of the step {} gradients", step);
  std::lock_guard<std::mutex> lock(mutex_);
  const bool armed = armed_;
  armed_ = false;
  if (!armed) {  // after backward: every bucket from the gradients as they are
    flats_.clear();
    works_.clear();
    launched_ = 0;
    for (const auto& b : buckets_) flats_.push_back(flatten_grads(params_, b));
  }
  // Which parameters got a gradient on some rank: in one process the whole global batch's
  // gradient is defined when any of its examples reached the parameter (an expert one rank's
  // rows routed to and the other's did not), so such a gradient must be defined on every rank.
  auto defined = torch::empty({int64_t(params_.size())}, torch::kFloat);
  auto flag = defined.accessor<float, 1>();  // element writes, not a tensor op per parameter
  for (size_t i = 0; i < params_.size(); ++i) flag[int64_t(i)] = params_[i].grad().defined() ? 1.0f : 0.0f;
  try {
    if (!error_.empty()) throw Error(fmt::format("gradient hook: {}", error_));
    if (armed) {  // the parameters this rank's backward did not reach: what they hold, or zeros
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < params_.size(); ++i)
        if (!final_[i] && bucket_of_[i] != SIZE_MAX && bucket_of_[i] >= launched_ && params_[i].grad().defined())
          flats_[bucket_of_[i]]
              .slice(0, int64_t(offset_of_[i]), int64_t(offset_of_[i]) + params_[i].numel())
              .copy_(params_[i].grad().reshape({-1}));
    }
    for (size_t b = launched_; b < buckets_.size(); ++b) launch(b);
    std::vector<torch::Tensor> flags{defined};
    works_.push_back(group_.backend().allreduce(flags));
    for (auto& w : works_) w->wait();
    works_.clear();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    group_.fail(what, e);
  }
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i)  // flag: now the sum over ranks
      if (flag[int64_t(i)] > 0 && !params_[i].grad().defined()) params_[i].mutable_grad() = torch::zeros_like(params_[i]);
  }
  for (size_t i = 0; i < buckets_.size(); ++i) unflatten_grads(flats_[i], scale, params_, buckets_[i]);
  flats_.clear();
}

}  // namespace tunekit::dist
