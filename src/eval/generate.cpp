#include "src/eval/generate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <functional>

#include "data/dataset.h"
#include "models/lm.h"
#include "src/eval/sampling.h"
#include "util/error.h"

namespace tunekit {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Where the logits of the next token come from: the first call runs the prompt, each later call
// adds the token just chosen. `ids` is the whole sequence so far.
struct LogitSource {
  std::function<torch::Tensor(const std::vector<int64_t>& ids)> prefill, step;
};

torch::Tensor row_tensor(const int64_t* begin, const int64_t* end) {
  return torch::tensor(std::vector<int64_t>(begin, end), torch::kLong).unsqueeze(0);
}

LogitSource cached_source(models::CausalLm& lm, models::KvCache& cache) {
  auto run = [&lm, &cache](const torch::Tensor& ids) {
    models::LmInputs in;
    in.ids = ids;
    in.cache = &cache;
    in.last_only = true;
    return lm.forward_lm(in).select(0, 0).select(0, -1);
  };
  return {[run](const std::vector<int64_t>& ids) { return run(row_tensor(ids.data(), ids.data() + ids.size())); },
          [run](const std::vector<int64_t>& ids) { return run(row_tensor(&ids.back(), &ids.back() + 1)); }};
}

// The reference: the whole context (the last `window` tokens) through forward(ids) every step.
LogitSource rerun_source(models::Model& model, int64_t window) {
  auto run = [&model, window](const std::vector<int64_t>& ids) {
    const size_t start = ids.size() > size_t(window) ? ids.size() - size_t(window) : 0;
    return model.forward(row_tensor(ids.data() + start, ids.data() + ids.size())).select(0, 0).select(0, -1);
  };
  return {run, run};
}

// The first stop string in `text` (its offset), or npos.
size_t find_stop(const std::string& text, const std::vector<std::string>& stops) {
  size_t at = std::string::npos;
  for (const auto& s : stops)
    if (!s.empty()) at = std::min(at, text.find(s));
  return at;
}

void check_options(const GenerateOptions& o) {
  if (o.max_new_tokens < 0) throw Error("generate: --max-new-tokens must be >= 0");
  SamplingOptions s{o.temperature, o.top_k, o.top_p, o.repetition_penalty};
  check_sampling_options(s, "generate");
}

// Fills text (prompt + continuation, decoded as one sequence, bos left out); a stop string
// (found in the continuation at `cut`) cuts the continuation and the text before it.
void finish_text(GenerateResult& r, const data::Tokenizer& tok, const std::vector<int64_t>& ids,
                 const std::vector<std::string>& stops, size_t cut) {
  const size_t skip = (!r.prompt_ids.empty() && r.prompt_ids[0] == tok.bos_id()) ? 1 : 0;
  r.text = tok.decode(std::vector<int64_t>(ids.begin() + skip, ids.end()));
  if (cut == std::string::npos) return;
  r.continuation = r.continuation.substr(0, cut);
  const auto prompt_text = tok.decode(std::vector<int64_t>(r.prompt_ids.begin() + skip, r.prompt_ids.end()));
  const size_t at = r.text.compare(0, prompt_text.size(), prompt_text) == 0
                        ? find_stop(r.text.substr(prompt_text.size()), stops)
                        : std::string::npos;
  r.text = at == std::string::npos ? prompt_text + r.continuation : r.text.substr(0, prompt_text.size() + at);
}

}  // namespace

std::vector<int64_t> prompt_ids(const data::Tokenizer& tok, const GenerateOptions& o) {
  if (o.chat) {
    if (o.chat_template == data::ChatTemplate::Auto)
      throw Error("generate: the chat template must be chosen (or guessed) before generating, not auto");
    std::vector<data::ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", o.prompt});
    return data::render_prompt(o.chat_template, messages, tok);
  }
  std::vector<int64_t> ids;
  if (tok.special().add_bos && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  const auto prompt = tok.encode(o.prompt);
  ids.insert(ids.end(), prompt.begin(), prompt.end());
  return ids;
}

GenerateResult generate(models::Model& model, const data::Tokenizer& tok, int64_t max_seq_len, const GenerateOptions& o) {
  check_options(o);
  return generate_ids(model, tok, max_seq_len, prompt_ids(tok, o), o);
}

GenerateResult generate_ids(models::Model& model, const data::Tokenizer& tok, int64_t max_seq_len,
                            const std::vector<int64_t>& prompt, const GenerateOptions& o) {
  check_options(o);
  if (prompt.empty()) throw Error("generate: the prompt has no tokens");
  models::CausalLm* lm = models::as_causal_lm(model);
  int64_t context = max_seq_len;
  if (lm) context = context > 0 ? std::min(context, lm->context_length()) : lm->context_length();
  if (context <= 0) throw Error("generate: the model's context length is unknown (max_seq_len 0)");
  if (lm && int64_t(prompt.size()) > context)
    throw Error(fmt::format("generate: the prompt has {} tokens, more than the model's context of {}", prompt.size(),
                            context));
  GenerateResult r;
  r.prompt_ids = prompt;
  r.stop_reason = "max_new_tokens";
  std::string blocker;
  if (lm && o.use_cache) blocker = lm->incremental_blocker();
  r.used_cache = lm && o.use_cache && blocker.empty();
  r.no_cache_reason = blocker;

  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  models::KvCache cache;
  LogitSource source = r.used_cache ? cached_source(*lm, cache) : rerun_source(model, context);
  std::vector<int64_t> stop_ids = tok.special().stop;
  if (stop_ids.empty() && tok.eos_id() >= 0) stop_ids.push_back(tok.eos_id());
  const SamplingOptions sampling{o.temperature, o.top_k, o.top_p, o.repetition_penalty};
  const int64_t vocab = tok.vocab_size();
  auto gen = data::seeded_generator(o.seed);
  std::vector<int64_t> ids = prompt;
  size_t cut = std::string::npos;
  auto start = Clock::now();
  try {
    if (lm && int64_t(ids.size()) >= context && o.max_new_tokens > 0) r.stop_reason = "context";
    torch::Tensor logits;
    if (o.max_new_tokens > 0 && r.stop_reason != "context") logits = source.prefill(ids);
    while (logits.defined()) {
      // Rows past the tokenizer's pieces (a padded embedding) are never chosen.
      auto row = logits.to(torch::kFloat);
      if (vocab > 0 && vocab < row.size(0)) row = row.slice(0, 0, vocab);
      const int64_t next = next_token(row, ids, sampling, gen);
      if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
        r.stopped_at_eos = true;
        r.stop_reason = "eos";
        break;
      }
      ids.push_back(next);
      r.new_ids.push_back(next);
      if (!o.stop.empty()) {
        r.continuation = tok.decode(r.new_ids);
        if ((cut = find_stop(r.continuation, o.stop)) != std::string::npos) {
          r.stop_reason = "stop string";
          break;
        }
      }
      if (int64_t(r.new_ids.size()) >= o.max_new_tokens) break;
      if (lm && int64_t(ids.size()) >= context) {
        r.stop_reason = "context";
        break;
      }
      if (r.decode_steps == 0) {
        r.prefill_seconds = seconds_since(start);
        start = Clock::now();
      }
      logits = source.step(ids);
      ++r.decode_steps;
    }
  } catch (...) {
    model.train(was_training);
    throw;
  }
  if (r.decode_steps == 0)
    r.prefill_seconds = seconds_since(start);
  else
    r.decode_seconds = seconds_since(start);
  model.train(was_training);
  if (r.decode_steps > 0 && r.decode_seconds > 0) r.tokens_per_second = double(r.decode_steps) / r.decode_seconds;
  if (cut == std::string::npos) r.continuation = tok.decode(r.new_ids);
  finish_text(r, tok, ids, o.stop, cut);
  return r;
}

GreedyIds greedy_ids(models::Model& model, const std::vector<int64_t>& prompt, const std::vector<int64_t>& stop_ids,
                     int64_t max_new, int64_t max_context) {
  torch::NoGradGuard no_grad;
  models::CausalLm* lm = models::as_causal_lm(model);
  if (lm) max_context = std::min(max_context, lm->context_length());
  models::KvCache cache;
  const bool cached = lm && lm->incremental_blocker().empty();
  LogitSource source = cached ? cached_source(*lm, cache) : rerun_source(model, max_context);
  GreedyIds out;
  std::vector<int64_t> ids = prompt;
  for (int64_t i = 0; i < max_new && int64_t(ids.size()) < max_context; ++i) {
    const int64_t next = (i == 0 ? source.prefill(ids) : source.step(ids)).argmax().item<int64_t>();
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      out.ended = true;
      break;
    }
    out.ids.push_back(next);
    ids.push_back(next);
  }
  return out;
}

}  // namespace tunekit
