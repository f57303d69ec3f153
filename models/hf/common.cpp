#include "models/hf/common.h"

#include <fmt/format.h>

#include <cmath>

#include "models/attention.h"
#include "models/attention_kernel.h"
#include "models/init_guard.h"
#include "util/error.h"

namespace tunekit::models::hf {

RmsNormImpl::RmsNormImpl(int64_t dim_, double eps_) : dim(dim_), eps(eps_) { reset(); }

void RmsNormImpl::reset() { weight = register_parameter("weight", torch::ones({dim})); }

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) {
  // transformers: h = x.float(); h = h * rsqrt(h.pow(2).mean(-1) + eps); weight * h.to(x.dtype)
  const auto dtype = x.scalar_type();
  auto h = x.to(torch::promote_types(dtype, torch::kFloat));
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(dtype);
}

torch::jit::Module RmsNormImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("RmsNorm");
  m.register_parameter("weight", weight.detach().clone(), false);
  // 6 is torch.float32 (dtype names do not resolve in a C++-defined module).
  m.define(fmt::format(R"(
def forward(self, x: Tensor) -> Tensor:
    h = x.to(torch.promote_types(x.dtype, 6))
    h = h * torch.rsqrt(h.pow(2).mean(-1, True) + {})
    return self.weight * h.to(x.dtype)
)",
                       py_float(eps)));
  return m;
}

std::pair<torch::Tensor, torch::Tensor> rotary_cos_sin(int64_t n, int64_t head_dim, double theta,
                                                       torch::ScalarType dtype) {
  // LlamaRotaryEmbedding: inv_freq = 1 / base^(arange(0, d, 2).float() / d), all in float32.
  auto inv_freq = torch::reciprocal(torch::pow(theta, torch::arange(0, head_dim, 2, torch::kLong).to(torch::kFloat) / head_dim));
  auto angles = torch::outer(torch::arange(n, torch::kLong).to(torch::kFloat), inv_freq);  // [n, d/2]
  auto emb = torch::cat({angles, angles}, -1);
  return {emb.cos().to(dtype).view({1, n, 1, head_dim}), emb.sin().to(dtype).view({1, n, 1, head_dim})};
}

torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto rotated = torch::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

std::pair<torch::Tensor, torch::Tensor> rotary_cos_sin_at(const torch::Tensor& positions, int64_t head_dim,
                                                          double theta, torch::ScalarType dtype) {
  // As rotary_cos_sin (outer(p, f) is p[:, None] * f, so positions 0..n-1 give its values).
  auto inv_freq = torch::reciprocal(torch::pow(theta, torch::arange(0, head_dim, 2, torch::kLong).to(torch::kFloat) / head_dim));
  auto angles = positions.to(torch::kFloat).unsqueeze(-1) * inv_freq;  // [P, N, d/2]
  auto emb = torch::cat({angles, angles}, -1).unsqueeze(2);            // [P, N, 1, d]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

std::string rotary_script(int64_t head_dim, double theta, const std::string& like) {
  return fmt::format(
      "    inv_freq = torch.reciprocal(torch.pow({theta}, torch.arange(0, {d}, 2).float() / {d}))\n"
      "    angles = torch.outer(torch.arange(N).float(), inv_freq)\n"
      "    emb = torch.cat([angles, angles], -1)\n"
      "    cos = emb.cos().to({like}.dtype).view(1, N, 1, {d})\n"
      "    sin = emb.sin().to({like}.dtype).view(1, N, 1, {d})\n",
      fmt::arg("theta", py_float(theta)), fmt::arg("d", head_dim), fmt::arg("like", like));
}

torch::Tensor segment_positions(const torch::Tensor& segments) {
  const int64_t B = segments.size(0), N = segments.size(1);
  auto index = torch::arange(N, segments.options()).expand({B, N});
  auto starts = torch::ones({B, N}, segments.options().dtype(torch::kBool));
  if (N > 1) starts.slice(1, 1).copy_(segments.slice(1, 1) != segments.slice(1, 0, N - 1));
  // The index of each token's segment start: the running maximum of the start indices.
  auto start = std::get<0>(torch::where(starts, index, torch::zeros_like(index)).cummax(1));
  return index - start;
}

torch::Tensor segment_key_starts(const torch::Tensor& segments) {
  return torch::arange(segments.size(1), segments.options()).expand_as(segments) - segment_positions(segments);
}

torch::Tensor key_starts_mask(const torch::Tensor& key_starts) {
  const int64_t N = key_starts.size(1);
  auto key = torch::arange(N, key_starts.options());
  auto later = key.view({1, 1, N}) > key.view({1, N, 1});        // [1, N, N]: j > i
  auto before = key.view({1, 1, N}) < key_starts.unsqueeze(2);  // [B, N, N]: j < start(i)
  return (later | before).unsqueeze(1);
}

namespace {

void check_segments(const torch::Tensor& segments, const torch::Tensor& ids, const std::string& family) {
  if (segments.scalar_type() != torch::kLong || segments.sizes() != ids.sizes())
    throw Error(fmt::format("{}: segments must be int64 of the ids' shape {}, got {} {}", family,
                            c10::str(ids.sizes()), c10::toString(segments.scalar_type()), c10::str(segments.sizes())));
  if (segments.size(1) > 1 && (segments.slice(1, 1) < segments.slice(1, 0, segments.size(1) - 1)).any().item<bool>())
    throw Error(fmt::format("{}: segments must be non-decreasing along each row (one packed example after another)",
                            family));
}

void check_cache(const models::KvCache& cache, int64_t batch, int64_t n, int64_t context, size_t layers,
                 const std::string& family) {
  if (cache.length < 0) throw Error(fmt::format("{}: the cache's length {} is negative", family, cache.length));
  if (cache.length + n > context)
    throw Error(fmt::format("{}: the context is full: {} cached tokens + {} new exceed the model's {} positions",
                            family, cache.length, n, context));
  if ((cache.k.size() != 0 && cache.k.size() != layers) || cache.v.size() != cache.k.size())
    throw Error(fmt::format("{}: the cache holds {} layers, the model has {} (a cache belongs to one model)", family,
                            cache.k.size(), layers));
  if (cache.length > 0 && (cache.k.empty() || !cache.k[0].defined()))
    throw Error(fmt::format("{}: the cache says {} tokens but holds no keys", family, cache.length));
  if (!cache.k.empty() && cache.k[0].defined() && cache.k[0].size(0) != batch)
    throw Error(fmt::format("{}: the cache was filled for a batch of {}, the ids have {} rows", family,
                            cache.k[0].size(0), batch));
}

}  // namespace

LmCall prepare_lm_call(const models::LmInputs& in, int64_t context, int64_t vocab_size, size_t layers,
                       const std::string& family) {
  check_ids(in.ids, context, vocab_size, family);
  const int64_t B = in.ids.size(0), N = in.ids.size(1);
  LmCall call;
  call.attention.context = context;
  auto longs = in.ids.options().dtype(torch::kLong);
  if (in.segments.defined() && in.cache)
    throw Error(fmt::format("{}: packed segments and a key/value cache cannot be combined in one call", family));
  if (in.segments.defined()) {
    check_segments(in.segments, in.ids, family);
    call.positions = segment_positions(in.segments);
    call.attention.key_starts = segment_key_starts(in.segments);
  } else if (in.cache) {
    check_cache(*in.cache, B, N, context, layers, family);
    const int64_t L = in.cache->length;
    call.positions = torch::arange(L, L + N, longs).unsqueeze(0);
    // Query i sits at position L + i: keys 0..L+i are visible (L = 0: causal, no mask needed).
    if (L > 0)
      call.attention.mask = torch::ones({N, L + N}, longs.dtype(torch::kBool)).triu(L + 1).view({1, 1, N, L + N});
    in.cache->k.resize(layers);
    in.cache->v.resize(layers);
    call.attention.cache = in.cache;
  } else {
    call.positions = torch::arange(N, longs).unsqueeze(0);
  }
  return call;
}

std::string incremental_blocker_of(torch::nn::Module& model, const std::string& family) {
  for (const auto& item : model.named_modules("", false))
    if (auto* lin = dynamic_cast<LinearImpl*>(item.value().get()); lin && lin->output_adapter())
      return fmt::format(
          "{}: a {} on {} may read the whole sequence at once (its gate's mean input), so a key/value cache or "
          "packed segments would change its result; generate without the cache and do not pack",
          family, lin->output_adapter()->kind(), item.key());
  return "";
}

namespace {

// Writes this call's keys or values x [B, KV, N, Dh] after the `length` cached ones in `slot`
// and returns all of them [B, KV, length + N, Dh]. Without autograd the slot is a buffer that
// grows by doubling (up to the context), so a step copies only its own token; with autograd
// the keys are concatenated (a graph of their own).
torch::Tensor append_to_cache(torch::Tensor& slot, const torch::Tensor& x, int64_t length, int64_t context) {
  const int64_t N = x.size(2), need = length + N;
  if (length > 0 && (!slot.defined() || slot.size(2) < length || slot.size(0) != x.size(0) || slot.size(1) != x.size(1) ||
                     slot.size(3) != x.size(3) || slot.scalar_type() != x.scalar_type()))
    throw Error(fmt::format("attention: the key/value cache does not fit this model ({} cached, slot {}, keys {})",
                            length, slot.defined() ? c10::str(slot.sizes()) : "empty", c10::str(x.sizes())));
  if (torch::GradMode::is_enabled()) {
    slot = length == 0 ? x : torch::cat({slot.narrow(2, 0, length), x}, 2);
    return slot;
  }
  if (!slot.defined() || slot.size(2) < need || slot.size(0) != x.size(0) || slot.size(1) != x.size(1) ||
      slot.size(3) != x.size(3) || slot.scalar_type() != x.scalar_type()) {
    const int64_t capacity = std::min(context, std::max(need, 2 * (slot.defined() ? slot.size(2) : 0)));
    auto bigger = torch::empty({x.size(0), x.size(1), std::max(capacity, need), x.size(3)}, x.options());
    if (length > 0) bigger.narrow(2, 0, length).copy_(slot.narrow(2, 0, length));
    slot = bigger;
  }
  slot.narrow(2, length, N).copy_(x);
  return slot.narrow(2, 0, need);
}

}  // namespace

torch::Tensor attend_aten(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                          const LmAttention* lm, const torch::Tensor& sigmoid_bias, double scale, bool causal) {
  const int64_t B = q.size(0), N = q.size(1), H = q.size(2), Dh = q.size(3), KV = k.size(2), R = H / KV;
  auto qh = q.transpose(1, 2).reshape({B, KV, R * N, Dh});
  auto kh = k.transpose(1, 2);
  auto vh = v.view({B, N, KV, Dh}).transpose(1, 2);
  if (lm && lm->cache) {  // the cached keys and values, then these (transformers' DynamicCache layout)
    auto& c = *lm->cache;
    kh = append_to_cache(c.k.at(lm->layer), kh, c.length, lm->context);
    vh = append_to_cache(c.v.at(lm->layer), vh, c.length, lm->context);
  }
  const int64_t K = kh.size(2);
  auto scores = torch::matmul(qh, kh.transpose(-2, -1)).mul_(scale).view({B, H, N, K});
  if (lm && lm->mask.defined())
    scores.masked_fill_(lm->mask, -INFINITY);
  else if (lm && lm->key_starts.defined())
    scores.masked_fill_(key_starts_mask(lm->key_starts), -INFINITY);
  else if (causal)
    scores.masked_fill_(torch::ones({N, N}, q.options().dtype(torch::kBool)).triu(1), -INFINITY);
  auto probs = sigmoid_bias.defined() ? torch::sigmoid(scores + sigmoid_bias) : torch::softmax(scores, -1);
  // Grouped-query attention without repeating K and V: the R query heads that share a key/value
  // head (HF's repeat_kv: head h reads kv head h / R) are stacked along the rows.
  return torch::matmul(probs.view({B, KV, R * N, K}), vh).view({B, H, N, Dh}).transpose(1, 2).reshape({B, N, H * Dh});
}

HfAttentionBase::HfAttentionBase(AttentionShape shape_) : shape(std::move(shape_)) {}

void HfAttentionBase::register_variant() {
  SkipInit initialise(false);  // no checkpoint holds the variant's parts (models/init_guard.h)
  const auto& s = shape;
  if (s.heads <= 0 || s.kv_heads <= 0 || s.heads % s.kv_heads != 0)
    throw Error(fmt::format("attention: {} query heads cannot share {} key/value heads (heads must be a multiple)",
                            s.heads, s.kv_heads));
  if (s.head_dim <= 0 || s.head_dim % 2 != 0)
    throw Error(fmt::format("attention: head_dim {} must be a positive even number", s.head_dim));
  const auto& var = s.variant;
  if (var.gate != Gate::None) {
    // As models/attention.cpp: W_g a normal Linear from the attention input, without a bias
    // unless `gate_bias` (then b_g = 0 at the start; docs/methods.md §2). The value gate matches
    // the value projection's width.
    const int64_t out = var.gate == Gate::SdpaHeadwise ? s.heads
                        : var.gate == Gate::Value      ? s.kv_heads * s.head_dim
                                                       : s.heads * s.head_dim;
    gate = register_module("gate", Linear(LinearOptions(s.hidden, out).bias(var.gate_bias)));
    torch::NoGradGuard no_grad;
    if (gate->bias.defined()) gate->bias.zero_();
  }
  if (var.qk_norm) {
    q_norm = register_module("q_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.head_dim})));
    k_norm = register_module("k_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.head_dim})));
  }
  sigmoid_bias = register_sigmoid_bias(*this, var);
}

std::vector<std::string> HfAttentionBase::variant_parameters() const {
  std::vector<std::string> out;
  const auto& var = shape.variant;
  if (var.gate != Gate::None) out.push_back("gate.weight");
  if (var.gate != Gate::None && var.gate_bias) out.push_back("gate.bias");
  if (var.qk_norm) out.insert(out.end(), {"q_norm.weight", "q_norm.bias", "k_norm.weight", "k_norm.bias"});
  if (var.score == Score::Sigmoid && var.bias_mode == SigmoidBias::Learnable) out.push_back("sigmoid_bias");
  return out;
}

double HfAttentionBase::core_flops(double n) const {
  const auto& s = shape;
  double f = 2 * 2 * n * n * double(s.heads * s.head_dim);  // Q K^T and P V
  if (gate) f += 2 * n * double(s.hidden * gate->options.out_features());
  return f;
}

torch::Tensor HfAttentionBase::attend(const torch::Tensor& x, torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                      const torch::Tensor& cos, const torch::Tensor& sin, const LmAttention* lm) {
  const auto& var = shape.variant;
  const int64_t B = q.size(0), N = q.size(1), H = shape.heads, KV = shape.kv_heads, Dh = shape.head_dim, R = H / KV;
  const double scale = 1.0 / std::sqrt(double(Dh));
  const bool sigmoid = var.score == Score::Sigmoid;
  torch::Tensor g;
  if (var.gate != Gate::None) g = torch::sigmoid(gate(x));  // G = sigma(X W_g (+ b_g))
  if (var.gate == Gate::Value) v = v * g;                  // V <- V (.) G
  q = q.view({B, N, H, Dh});
  k = k.view({B, N, KV, Dh});
  if (var.qk_norm) {  // per head, before the rotation (as Qwen3 / OLMo2 place their q/k norms)
    q = q_norm(q);
    k = k_norm(k);
  }
  if (cos.defined()) {
    q = apply_rotary(q, cos, sin);
    k = apply_rotary(k, cos, sin);
  }
  torch::Tensor out;  // [B, N, H*Dh]
  const bool alike = k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type();
  // bf16 compute (the CPU autocast scope) hands over bf16 q, k, v: the fused cores run them in
  // float32 and give the output back in bf16. Their products are a few per cent of a step's FLOPs
  // at these widths; ATen's bf16 path builds [B, H, N, N] scores, mask and softmax copies instead.
  // (Rotary tables in float32 may have widened q and k already while v is still bf16.)
  auto bf16_or_float = [](const torch::Tensor& t) {
    return t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kFloat;
  };
  const bool widen = bf16_or_float(q) && bf16_or_float(k) && bf16_or_float(v) &&
                     (q.scalar_type() == torch::kBFloat16 || k.scalar_type() == torch::kBFloat16 ||
                      v.scalar_type() == torch::kBFloat16) &&
                     attention_kernel_available(torch::kFloat, q.device());
  const bool kernel = (alike && attention_kernel_available(q)) || widen;
  auto core_in = [&](const torch::Tensor& t, int64_t width) {
    auto r = t.reshape({B, N, width});
    return (widen ? r.to(torch::kFloat) : r).contiguous();
  };
  auto bias_in = [&] { return sigmoid ? (widen ? sigmoid_bias.to(torch::kFloat) : sigmoid_bias) : torch::Tensor(); };
  if (!lm && !shape.causal && R == 1 && kernel) {
    // Bidirectional, one key/value head per query head (ViT): the fused core of
    // models/attention_kernel.h reads the heads in place.
    auto qc = core_in(q, H * Dh), kc = core_in(k, H * Dh), vc = core_in(v, H * Dh);
    out = sigmoid ? sigmoid_attention(qc, kc, vc, bias_in(), H, scale) : softmax_attention(qc, kc, vc, H, scale);
    if (widen) out = out.to(torch::kBFloat16);
  } else if (shape.causal && kernel && (!lm || (!lm->mask.defined() && (!lm->cache || lm->cache->length == 0)))) {
    // Causal over this call's tokens (training, evaluation, a prefill into an empty cache),
    // packed segments as key starts: the causal kernel skips the masked upper triangle and
    // reads the grouped key/value heads in place; the cache then takes k and v as below.
    out = causal_attention(core_in(q, H * Dh), core_in(k, KV * Dh), core_in(v, KV * Dh), H, KV, scale,
                           lm ? lm->key_starts : torch::Tensor(), bias_in());
    if (widen) out = out.to(torch::kBFloat16);
    if (lm && lm->cache) {
      auto& c = *lm->cache;
      append_to_cache(c.k.at(lm->layer), k.transpose(1, 2), 0, lm->context);
      append_to_cache(c.v.at(lm->layer), v.view({B, N, KV, Dh}).transpose(1, 2), 0, lm->context);
    }
  } else {
    out = attend_aten(q, k, v, lm, sigmoid ? sigmoid_bias : torch::Tensor(), scale, shape.causal);
  }
  if (var.gate == Gate::SdpaElementwise) out = out * g;
  if (var.gate == Gate::SdpaHeadwise) out = (out.view({B, N, H, Dh}) * g.unsqueeze(-1)).view({B, N, H * Dh});
  return out;
}

std::string HfAttentionBase::script_attend(torch::jit::Module& m, const ScriptUnit& unit, bool rotary) const {
  const auto& var = shape.variant;
  const int64_t H = shape.heads, KV = shape.kv_heads, Dh = shape.head_dim, R = H / KV;
  std::string src;
  if (var.gate != Gate::None) {
    m.register_module("gate", gate->to_script(unit));
    src += "    g = torch.sigmoid(self.gate.forward(x))\n";
  }
  if (var.gate == Gate::Value) src += "    v = v * g\n";
  src += fmt::format("    q = q.view(B, N, {H}, {Dh})\n    k = k.view(B, N, {KV}, {Dh})\n", fmt::arg("H", H),
                     fmt::arg("KV", KV), fmt::arg("Dh", Dh));
  if (var.qk_norm) {
    m.register_module("q_norm", layer_norm_script(unit, q_norm));
    m.register_module("k_norm", layer_norm_script(unit, k_norm));
    src += "    q = self.q_norm.forward(q)\n    k = self.k_norm.forward(k)\n";
  }
  if (rotary)
    src += fmt::format(
        "    q = q * cos + torch.cat([-q[:, :, :, {h}:], q[:, :, :, :{h}]], -1) * sin\n"
        "    k = k * cos + torch.cat([-k[:, :, :, {h}:], k[:, :, :, :{h}]], -1) * sin\n",
        fmt::arg("h", Dh / 2));
  src += fmt::format(
      "    q = q.transpose(1, 2).reshape(B, {KV}, {R} * N, {Dh})\n"
      "    k = k.transpose(1, 2)\n"
      "    v = v.view(B, N, {KV}, {Dh}).transpose(1, 2)\n"
      "    scores = (torch.matmul(q, k.transpose(-2, -1)) * {scale}).view(B, {H}, N, N)\n",
      fmt::arg("H", H), fmt::arg("KV", KV), fmt::arg("R", R), fmt::arg("Dh", Dh),
      fmt::arg("scale", py_float(1.0 / std::sqrt(double(Dh)))));
  if (shape.causal) src += "    scores = scores.masked_fill(torch.ones(N, N).triu(1) != 0, float('-inf'))\n";
  if (var.score == Score::Sigmoid) {
    m.register_buffer("sigmoid_bias", sigmoid_bias.detach().clone());
    src += "    probs = torch.sigmoid(scores + self.sigmoid_bias)\n";
  } else {
    src += "    probs = torch.softmax(scores, -1)\n";
  }
  src += fmt::format("    out = torch.matmul(probs.view(B, {KV}, {R} * N, N), v).view(B, {H}, N, {Dh}).transpose(1, 2)\n",
                     fmt::arg("H", H), fmt::arg("KV", KV), fmt::arg("R", R), fmt::arg("Dh", Dh));
  if (var.gate == Gate::SdpaElementwise) src += fmt::format("    out = out * g.view(B, N, {}, {})\n", H, Dh);
  if (var.gate == Gate::SdpaHeadwise) src += fmt::format("    out = out * g.view(B, N, {}, 1)\n", H);
  src += fmt::format("    out = out.reshape(B, N, {})\n", H * Dh);
  return src;
}

torch::nn::EmbeddingOptions embedding_options(int64_t num, int64_t dim) {
  auto o = torch::nn::EmbeddingOptions(num, dim);
  if (init_skipped()) o._weight(torch::empty({num, dim}));
  return o;
}

void init_linear(Linear& linear, double std) {
  torch::NoGradGuard no_grad;
  linear->weight.normal_(0, std);
  if (linear->bias.defined()) linear->bias.zero_();
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters())  // a packed int8 weight's rows end in 4 scale bytes (models/linear.h)
    n += p.scalar_type() == torch::kChar && p.dim() == 2 ? p.size(0) * (p.size(1) - 4) : p.numel();
  return n;
}

std::string count_string(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

void check_ids(const torch::Tensor& ids, int64_t max_seq_len, int64_t vocab_size, const std::string& family) {
  if (ids.dim() != 2 || ids.scalar_type() != torch::kLong)
    throw Error(fmt::format("{}: expected token ids [B, N] of int64, got {} {}", family,
                            c10::toString(ids.scalar_type()), c10::str(ids.sizes())));
  const int64_t N = ids.size(1);
  if (N == 0 || N > max_seq_len)
    throw Error(fmt::format("{}: sequence length {} is outside 1..{} (the model's positions)", family, N, max_seq_len));
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= vocab_size)
      throw Error(fmt::format("{}: token id {} is outside the vocabulary 0..{}", family, lo < 0 ? lo : hi,
                              vocab_size - 1));
  }
}

torch::Tensor embed_ids(torch::nn::Embedding& embedding, const torch::Tensor& ids, bool sparse_grad) {
  const auto& w = embedding->weight;
  const auto& o = embedding->options;
  // max_norm renormalises in forward, and scale_grad_by_freq has no sparse backward: the module's own path
  if (!sparse_grad || !w.requires_grad() || !torch::GradMode::is_enabled() || o.max_norm() || o.scale_grad_by_freq())
    return embedding(ids);
  return torch::embedding(w, ids, o.padding_idx() ? *o.padding_idx() : -1, /*scale_grad_by_freq=*/false, /*sparse=*/true);
}

torch::jit::Module embedding_script(const ScriptUnit& unit, const torch::nn::Embedding& embedding) {
  auto m = unit.module("Embedding");
  m.register_parameter("weight", embedding->weight.detach().clone(), false);
  m.define("def forward(self, ids: Tensor) -> Tensor:\n    return torch.embedding(self.weight, ids)\n");
  return m;
}

torch::jit::Module container_script(const ScriptUnit& unit, const std::string& class_name,
                                    const std::vector<std::pair<std::string, torch::jit::Module>>& children) {
  auto m = unit.module(class_name);
  for (const auto& [name, child] : children) m.register_module(name, child);
  return m;
}

}  // namespace tunekit::models::hf
