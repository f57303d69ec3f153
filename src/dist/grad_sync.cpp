#include "src/dist/grad_sync.h"

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "util/error.h"

namespace tunekit::dist {

std::vector<Bucket> make_buckets(const std::vector<torch::Tensor>& params, int64_t bucket_bytes) {
  const int64_t limit = std::max<int64_t>(1, bucket_bytes / int64_t(sizeof(float)));
  std::vector<Bucket> buckets;
  Bucket current;
  for (size_t i = 0; i < params.size(); ++i) {
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

GradSync::GradSync(ProcessGroup& group, std::vector<torch::Tensor> trainable, int64_t bucket_bytes)
    : group_(group), params_(std::move(trainable)), buckets_(make_buckets(params_, bucket_bytes)) {
  for (const auto& b : buckets_) bytes_per_step_ += b.numel * int64_t(sizeof(float));
  bytes_per_step_ += int64_t(params_.size()) * int64_t(sizeof(float));  // the defined-gradient flags
}

void GradSync::broadcast_model(models::Model& model) {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : model.named_parameters()) tensors.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers()) tensors.emplace_back(b.key(), b.value());
  for (auto& [name, t] : tensors) {
    if (t.numel() == 0) continue;
    const bool as_is = (t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kDouble ||
                        t.scalar_type() == torch::kLong || t.scalar_type() == torch::kInt) && t.is_contiguous();
    torch::Tensor wire = as_is ? t : t.to(t.is_floating_point() ? torch::kFloat : torch::kLong).contiguous();
    group_.broadcast(wire, 0, fmt::format("broadcast of {} from rank 0", name));
    if (!as_is) t.copy_(wire);
  }
}

void GradSync::reduce(double scale, int64_t step) {
  std::vector<torch::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  flats.reserve(buckets_.size());
  const std::string what = fmt::format("allreduce of the step {} gradients", step);
  // Which parameters got a gradient on some rank: in one process the whole global batch's
  // gradient is defined when any of its examples reached the parameter (an expert one rank's
  // rows routed to and the other's did not), so such a gradient must be defined on every rank.
  auto defined = torch::empty({int64_t(params_.size())}, torch::kFloat);
  for (size_t i = 0; i < params_.size(); ++i) defined[int64_t(i)] = params_[i].grad().defined() ? 1.0f : 0.0f;
  try {
    std::vector<torch::Tensor> flags{defined};
    works.push_back(group_.backend().allreduce(flags));
    for (const auto& b : buckets_) {
      flats.push_back(flatten_grads(params_, b));
      std::vector<torch::Tensor> one{flats.back()};
      works.push_back(group_.backend().allreduce(one));
    }
    for (auto& w : works) w->wait();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    group_.fail(what, e);
  }
  {
    torch::NoGradGuard no_grad;
    auto any = defined.accessor<float, 1>();
    for (size_t i = 0; i < params_.size(); ++i)
      if (any[int64_t(i)] > 0 && !params_[i].grad().defined()) params_[i].mutable_grad() = torch::zeros_like(params_[i]);
  }
  for (size_t i = 0; i < buckets_.size(); ++i) unflatten_grads(flats[i], scale, params_, buckets_[i]);
}

}  // namespace tunekit::dist
