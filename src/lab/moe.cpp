#include "src/lab/moe.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "data/dataset.h"
#include "util/error.h"

namespace tunekit::lab {
namespace {

constexpr double kHalfLog2Pi = 0.91893853320467274178;

torch::Tensor log_normal(const torch::Tensor& y, const torch::Tensor& mean, const torch::Tensor& log_sigma) {
  return -0.5 * ((y - mean) * torch::exp(-log_sigma)).pow(2) - log_sigma - kHalfLog2Pi;
}

torch::Tensor gate_scores(const MoE& m, const torch::Tensor& x) { return x.mm(m.beta.t()) + m.bias; }

torch::Tensor activate(ExpertFn fn, const torch::Tensor& z) {
  switch (fn) {
    case ExpertFn::Linear: return z;
    case ExpertFn::Relu: return torch::relu(z);
    case ExpertFn::Gelu: return torch::gelu(z);
    case ExpertFn::Tanh: return torch::tanh(z);
  }
  return z;
}

// Contaminated: the frozen expert's mean h0(x) [n] and log f0(y | h0(x)) [n] (Gaussian with
// standard deviation σ0, or Laplace with scale σ0: −|y − h0|/σ0 − log 2σ0).
torch::Tensor frozen_mean(const MoE& m, const torch::Tensor& x) { return activate(m.expert, x.mv(m.a0) + m.c0); }
torch::Tensor frozen_log_density(const MoE& m, const torch::Tensor& x, const torch::Tensor& y) {
  if (m.frozen_density == Density::Laplace)
    return -(y - frozen_mean(m, x)).abs() / m.sigma0 - torch::log(2 * m.sigma0);
  return log_normal(y, frozen_mean(m, x), torch::log(m.sigma0));
}

// log g_i(x) of a mixture density: softmax, or sigmoid normalised over the experts.
torch::Tensor log_gate(const MoE& m, const torch::Tensor& x) {
  auto s = gate_scores(m, x);
  if (m.gate == GateFn::Softmax) return torch::log_softmax(s, 1);
  auto ls = torch::log_sigmoid(s);
  return ls - torch::logsumexp(ls, 1, true);
}

// Per-expert log-densities [n, k] of the mixture families.
torch::Tensor expert_log_density(const MoE& m, const torch::Tensor& x, const torch::Tensor& y) {
  if (m.family == Family::Multinomial) {
    auto logits = torch::einsum("nd,kcd->nkc", {x, m.a}) + m.c.unsqueeze(0);  // [n, k, C]
    auto lp = torch::log_softmax(logits, 2);
    return lp.gather(2, y.view({-1, 1, 1}).expand({x.size(0), m.experts(), 1})).squeeze(2);
  }
  auto mean = expert_outputs(m, x);  // [n, k]
  return log_normal(y.unsqueeze(1), mean, m.log_sigma);
}

torch::Tensor leaf(torch::Tensor t) { return t.detach().to(torch::kDouble).requires_grad_(true); }

double mean_nll(const MoE& m, const torch::Tensor& x, const torch::Tensor& y) {
  torch::NoGradGuard g;
  return -log_likelihood(m, x, y).mean().item<double>();
}

// Full-batch L-BFGS (strong Wolfe) on `params` minimising `loss()`.
void lbfgs(std::vector<torch::Tensor> params, const std::function<torch::Tensor()>& loss, int64_t iterations,
           double tolerance) {
  torch::optim::LBFGS opt(params, torch::optim::LBFGSOptions(1)
                                      .max_iter(iterations)
                                      .max_eval(iterations * 5 / 4)
                                      .tolerance_grad(1e-9)
                                      .tolerance_change(tolerance)
                                      .history_size(20)
                                      .line_search_fn("strong_wolfe"));
  opt.step([&] {
    opt.zero_grad();
    auto l = loss();
    l.backward();
    return l;
  });
}

void em(MoE& m, const torch::Tensor& x, const torch::Tensor& y, const FitOptions& o) {
  const int64_t n = x.size(0), d = x.size(1);
  auto X1 = torch::cat({x, torch::ones({n, 1}, x.options())}, 1);
  double prev = std::numeric_limits<double>::infinity();
  for (int64_t it = 0; it < o.iterations; ++it) {
    torch::Tensor r;  // responsibilities of the trainable experts [n, k]
    double nll;
    {
      torch::NoGradGuard g;
      if (m.family == Family::Contaminated) {
        auto s = x.mv(m.beta[0]) + m.bias[0];
        auto l0 = torch::log_sigmoid(-s) + frozen_log_density(m, x, y);
        auto l1 = torch::log_sigmoid(s) + log_normal(y, x.mv(m.a[0]) + m.c[0], m.log_sigma[0]);  // EM: linear
        auto ll = torch::logaddexp(l0, l1);
        r = torch::exp(l1 - ll).unsqueeze(1);
        nll = -ll.mean().item<double>();
      } else {
        auto joint = log_gate(m, x) + expert_log_density(m, x, y);
        auto ll = torch::logsumexp(joint, 1, true);
        r = torch::exp(joint - ll);
        nll = -ll.mean().item<double>();
      }
      // M-step, experts: weighted least squares and weighted variances, in closed form.
      for (int64_t i = 0; i < r.size(1); ++i) {
        auto w = r.select(1, i);
        auto A = X1.t().mm(X1 * w.unsqueeze(1)) + 1e-9 * torch::eye(d + 1, x.options());
        auto sol = torch::linalg_solve(A, X1.t().mv(w * y));
        auto resid = y - X1.mv(sol);
        double var = std::max(1e-8, ((w * resid.pow(2)).sum() / w.sum().clamp_min(1e-12)).item<double>());
        m.a[i].copy_(sol.slice(0, 0, d));
        m.c[i].copy_(sol[d]);
        m.log_sigma[m.log_sigma.size(0) == 1 ? 0 : i].fill_(0.5 * std::log(var));
      }
    }
    // M-step, gate: maximise the expected complete log-likelihood of the gate (a few L-BFGS steps).
    if (m.family == Family::Contaminated) {
      auto rr = r.squeeze(1);
      lbfgs(m.constant_weight ? std::vector<torch::Tensor>{m.bias} : std::vector<torch::Tensor>{m.beta, m.bias}, [&] {
        auto s = x.mv(m.beta[0]) + m.bias[0];
        return -(rr * torch::log_sigmoid(s) + (1 - rr) * torch::log_sigmoid(-s)).mean();
      }, 20, 1e-12);
    } else {
      lbfgs({m.beta, m.bias}, [&] { return -(r * log_gate(m, x)).sum(1).mean(); }, 20, 1e-12);
    }
    if (std::abs(prev - nll) <= o.tolerance * std::max(1.0, std::abs(nll))) break;
    prev = nll;
  }
}

}  // namespace

torch::Tensor expert_outputs(const MoE& m, const torch::Tensor& x) { return activate(m.expert, x.mm(m.a.t()) + m.c); }

int64_t MoE::num_parameters() const {
  int64_t p = 0;
  for (const auto& t : trainable()) p += t.numel();
  if (gate == GateFn::Softmax && family != Family::Contaminated) p -= dim() + 1;  // translation of (β, b)
  if (family == Family::Multinomial) p -= experts() * (dim() + 1);               // per-expert class translation
  return p;
}

MoE MoE::clone() const {
  MoE m = *this;
  for (auto* t : {&m.beta, &m.bias, &m.a, &m.c, &m.log_sigma, &m.a0, &m.c0, &m.sigma0})
    if (t->defined()) *t = t->detach().clone();
  return m;
}

torch::Tensor gate_weights(const MoE& m, const torch::Tensor& x) {
  auto s = gate_scores(m, x);
  if (m.family == Family::Contaminated) return torch::sigmoid(s);
  if (m.family == Family::Regression && m.gate == GateFn::Sigmoid) return torch::sigmoid(s);
  return torch::exp(log_gate(m, x));
}

torch::Tensor log_likelihood(const MoE& m, const torch::Tensor& x, const torch::Tensor& y) {
  switch (m.family) {
    case Family::Gaussian:
    case Family::Multinomial:
      return torch::logsumexp(log_gate(m, x) + expert_log_density(m, x, y), 1);
    case Family::Regression: {
      auto f = (gate_weights(m, x) * expert_outputs(m, x)).sum(1);
      return log_normal(y, f, m.log_sigma[0]);
    }
    case Family::Contaminated: {
      auto s = x.mv(m.beta[0]) + m.bias[0];
      auto l0 = torch::log_sigmoid(-s) + frozen_log_density(m, x, y);
      auto l1 = torch::log_sigmoid(s) + log_normal(y, expert_outputs(m, x).select(1, 0), m.log_sigma[0]);
      return torch::logaddexp(l0, l1);
    }
  }
  return {};
}

Sample sample(const MoE& t, int64_t n, uint64_t seed) {
  torch::NoGradGuard g;
  auto gen = data::seeded_generator(seed);
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  Sample s;
  s.x = torch::randn({n, t.dim()}, gen, opts);
  auto noise = torch::randn({n}, gen, opts);
  switch (t.family) {
    case Family::Gaussian: {
      s.z = torch::multinomial(torch::exp(log_gate(t, s.x)), 1, true, gen).squeeze(1);
      auto mean = expert_outputs(t, s.x).gather(1, s.z.unsqueeze(1)).squeeze(1);
      s.y = mean + torch::exp(t.log_sigma).index_select(0, s.z) * noise;
      break;
    }
    case Family::Regression:
      s.y = (gate_weights(t, s.x) * expert_outputs(t, s.x)).sum(1) + torch::exp(t.log_sigma[0]) * noise;
      s.z = torch::full({n}, -1, torch::kLong);
      break;
    case Family::Contaminated: {
      auto g1 = torch::sigmoid(s.x.mv(t.beta[0]) + t.bias[0]);
      s.z = torch::bernoulli(g1, gen).to(torch::kLong);
      torch::Tensor e0 = noise;  // the frozen density's standard draw
      if (t.frozen_density == Density::Laplace) {  // inverse CDF of Laplace(0, 1) from u ~ U(−½, ½)
        auto u = torch::rand({n}, gen, opts) - 0.5;
        e0 = -torch::sign(u) * torch::log1p(-2 * u.abs());
      }
      auto y0 = frozen_mean(t, s.x) + t.sigma0 * e0;
      auto y1 = expert_outputs(t, s.x).select(1, 0) + torch::exp(t.log_sigma[0]) * noise;
      s.y = torch::where(s.z.eq(1), y1, y0);
      break;
    }
    case Family::Multinomial: {
      s.z = torch::multinomial(torch::exp(log_gate(t, s.x)), 1, true, gen).squeeze(1);
      auto logits = torch::einsum("nd,kcd->nkc", {s.x, t.a}) + t.c.unsqueeze(0);
      auto chosen = logits.index({torch::arange(n), s.z});  // [n, C]
      s.y = torch::multinomial(torch::softmax(chosen, 1), 1, true, gen).squeeze(1);
      break;
    }
  }
  return s;
}

MoE random_init(Family family, GateFn gate, int64_t k, const torch::Tensor& x, const torch::Tensor& y, int64_t classes,
                const MoE* frozen, uint64_t seed) {
  auto gen = data::seeded_generator(seed * 7919 + 13);
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  const int64_t d = x.size(1);
  MoE m;
  m.family = family;
  m.gate = gate;
  m.classes = classes;
  if (frozen) m.expert = frozen->expert;
  if (family == Family::Contaminated) k = 1;
  m.beta = leaf(torch::randn({k, d}, gen, opts));
  if (frozen && frozen->constant_weight) {
    m.constant_weight = true;
    m.beta = torch::zeros({k, d}, opts);  // not a leaf: never fitted
  }
  m.bias = leaf(torch::randn({k}, gen, opts) * 0.5);
  if (family == Family::Multinomial) {
    m.a = leaf(torch::randn({k, classes, d}, gen, opts));
    m.c = leaf(torch::randn({k, classes}, gen, opts) * 0.5);
    m.log_sigma = leaf(torch::zeros({1}, opts));  // unused
  } else {
    const double ym = y.mean().item<double>(), ys = y.std().item<double>() + 1e-6;
    m.a = leaf(torch::randn({k, d}, gen, opts) * ys);
    m.c = leaf(ym + torch::randn({k}, gen, opts) * ys);
    const int64_t ns = family == Family::Gaussian ? k : 1;
    m.log_sigma = leaf(torch::full({ns}, std::log(ys), opts));
  }
  if (family == Family::Contaminated) {
    if (!frozen) throw Error("lab: the contaminated model needs its frozen expert");
    m.a0 = frozen->a0.detach().clone();
    m.c0 = frozen->c0.detach().clone();
    m.sigma0 = frozen->sigma0.detach().clone();
    m.frozen_density = frozen->frozen_density;
  }
  return m;
}

FitResult fit(const MoE& shape, const torch::Tensor& x, const torch::Tensor& y, const FitOptions& o, uint64_t seed) {
  if (o.method == FitMethod::EM && shape.expert != ExpertFn::Linear)
    throw Error(fmt::format("lab: EM's closed-form expert step needs linear experts, not {} (use fit.method: gradient)",
                            to_string(shape.expert)));
  if (o.method == FitMethod::EM && shape.family != Family::Gaussian && shape.family != Family::Contaminated)
    throw Error(fmt::format("lab: EM applies to the gaussian and contaminated families, not {} (use fit.method: gradient)",
                            to_string(shape.family)));
  FitResult best;
  best.nll = std::numeric_limits<double>::infinity();
  for (int r = 0; r < std::max<int64_t>(1, o.restarts); ++r) {
    MoE m = random_init(shape.family, shape.gate, o.experts, x, y, shape.classes, &shape, seed * 101 + r);
    if (o.method == FitMethod::EM) {
      em(m, x, y, o);
    } else if (o.bound > 0) {
      // Optimise u with θ = bound·tanh(u) for β, b, a, c (σ stays free on its log scale).
      std::vector<torch::Tensor*> boxed{&m.beta, &m.bias, &m.a, &m.c};
      std::vector<torch::Tensor> raw;
      for (auto* p : boxed) raw.push_back(leaf(torch::atanh((p->detach() / o.bound).clamp(-0.99, 0.99))));
      auto view = [&] {
        MoE v = m;
        torch::Tensor* members[4] = {&v.beta, &v.bias, &v.a, &v.c};
        for (size_t i = m.constant_weight ? 1 : 0; i < 4; ++i) *members[i] = o.bound * torch::tanh(raw[i]);
        return v;
      };
      std::vector<torch::Tensor> params(raw.begin() + (m.constant_weight ? 1 : 0), raw.end());
      params.push_back(m.log_sigma);
      lbfgs(params, [&] { return -log_likelihood(view(), x, y).mean(); }, o.iterations, o.tolerance);
      MoE v = view();
      if (!m.constant_weight) m.beta = leaf(v.beta);
      m.bias = leaf(v.bias);
      m.a = leaf(v.a);
      m.c = leaf(v.c);
    } else {
      lbfgs(m.trainable(), [&] { return -log_likelihood(m, x, y).mean(); }, o.iterations, o.tolerance);
    }
    double nll = mean_nll(m, x, y);
    if (std::isfinite(nll) && nll < best.nll) {
      best.model = m.clone();
      best.nll = nll;
      best.restart = r;
    }
  }
  if (!std::isfinite(best.nll)) throw Error("lab: every restart of the fit diverged (non-finite likelihood)");
  return best;
}

Atoms atoms(const MoE& m) {
  torch::NoGradGuard g;
  Atoms out;
  auto beta = m.beta.detach(), bias = m.bias.detach();
  auto a = m.a.detach().reshape({m.experts(), -1}), c = m.c.detach().reshape({m.experts(), -1});
  if (m.family == Family::Contaminated) {
    out.weight = torch::exp(bias);  // the frozen expert's logit is pinned at 0: no translation
  } else if (m.gate == GateFn::Softmax) {
    auto lb = bias - torch::logsumexp(bias, 0);
    out.weight = torch::exp(lb);
    beta = beta - (out.weight.unsqueeze(1) * beta).sum(0, true);
  } else {
    out.weight = torch::sigmoid(bias);
  }
  if (m.family == Family::Multinomial) {
    auto a3 = m.a.detach();
    a = (a3 - a3.mean(1, true)).reshape({m.experts(), -1});
    c = c - c.mean(1, true);
  }
  std::vector<torch::Tensor> parts{beta, a, c};
  out.blocks = {beta.size(1), a.size(1), c.size(1)};
  if (m.family == Family::Gaussian || m.family == Family::Contaminated) {
    parts.push_back(torch::exp(m.log_sigma.detach()).view({-1, 1}).expand({m.experts(), 1}));
    out.blocks.push_back(1);
  }
  out.theta = torch::cat(parts, 1);
  return out;
}

MoE gaussian_from_atoms(const torch::Tensor& weight, const torch::Tensor& theta, int64_t d) {
  MoE m;
  m.family = Family::Gaussian;
  m.gate = GateFn::Softmax;
  m.bias = torch::log(weight.to(torch::kDouble));
  m.beta = theta.slice(1, 0, d).contiguous();
  m.a = theta.slice(1, d, 2 * d).contiguous();
  m.c = theta.select(1, 2 * d).contiguous();
  m.log_sigma = torch::log(theta.select(1, 2 * d + 1).clamp_min(1e-12));
  return m;
}

double voronoi_loss(const MoE& fitted, const MoE& truth) {
  Atoms f = atoms(fitted), t = atoms(truth);
  auto cell = torch::cdist(f.theta.unsqueeze(0), t.theta.unsqueeze(0)).squeeze(0).argmin(1);  // [k̂]
  double loss = 0;
  for (int64_t j = 0; j < t.theta.size(0); ++j) {
    auto members = cell.eq(j).nonzero().flatten();
    const int64_t size = members.numel();
    loss += std::abs(f.weight.index_select(0, members).sum().item<double>() - t.weight[j].item<double>());
    const double e = size > 1 ? 2.0 : 1.0;
    for (int64_t q = 0; q < size; ++q) {
      int64_t i = members[q].item<int64_t>();
      auto diff = f.theta[i] - t.theta[j];
      double term = 0;
      int64_t off = 0;
      for (auto w : f.blocks) {
        term += std::pow(diff.slice(0, off, off + w).norm().item<double>(), e);
        off += w;
      }
      loss += f.weight[i].item<double>() * term;
    }
  }
  return loss;
}

}  // namespace tunekit::lab
