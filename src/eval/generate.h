// Sampling from a causal LM: the prompt's ids (the chat template applied when asked), then one
// token at a time until max_new_tokens, a stop token (eos, generation_config's eos ids) or a stop
// string. With a models::CausalLm the prompt is run once and every new token is one step over a
// key/value cache; other models re-run the last max_seq_len tokens each step. Greedy (temperature
// 0), temperature, top-k, top-p and a repetition penalty (src/eval/sampling.h: transformers'
// rules). Seeded: the same seed gives the same text.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/chat.h"
#include "data/tokenizer.h"
#include "models/model.h"

namespace tunekit {

struct GenerateOptions {
  std::string prompt;
  bool chat = false;  // prompt is a user message rendered with chat_template (and system, if any)
  data::ChatTemplate chat_template = data::ChatTemplate::Plain;  // never Auto here
  std::string system;
  int64_t max_new_tokens = 50;
  double temperature = 1.0;         // 0 = greedy
  int64_t top_k = 0;                // 0 = the whole vocabulary
  double top_p = 1.0;               // nucleus: the smallest set of tokens with this much probability
  double repetition_penalty = 1.0;  // > 1: logits of tokens already present divided (positive) or multiplied (negative)
  std::vector<std::string> stop;    // stop strings: the continuation ends before the first one
  bool use_cache = true;            // false: re-run the whole context every step (the reference)
  uint64_t seed = 0;
};

struct GenerateResult {
  std::string text;                // prompt + continuation, detokenised
  std::string continuation;        // the new tokens alone, detokenised (cut before a stop string)
  std::vector<int64_t> prompt_ids;
  std::vector<int64_t> new_ids;
  std::string stop_reason;         // "eos", "stop string", "max_new_tokens", "context"
  bool stopped_at_eos = false;     // at one of tok.special().stop (eos first); the stop id is not in new_ids
  bool used_cache = false;         // prefill + one cached step per token (else the context re-run each step)
  std::string no_cache_reason;     // why not, when the cache was asked for ("" otherwise)
  // prefill: the prompt's forward and the first token; decode: every later step (one forward
  // and one token each); tokens_per_second = decode_steps / decode_seconds (0 without steps).
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t decode_steps = 0;
  double tokens_per_second = 0;
};

// max_seq_len: the context (0: the model's own, models::CausalLm::context_length()); a
// models::CausalLm stops with "context" when prompt + new tokens fill it (a longer prompt is an
// error), other models slide a window of the last max_seq_len tokens.
GenerateResult generate(models::Model& model, const data::Tokenizer& tok, int64_t max_seq_len, const GenerateOptions& options);
// The prompt's ids as generate() feeds them: the chat template applied (options.chat: a user
// message after options.system, if any, then the assistant's header), or bos + the text.
std::vector<int64_t> prompt_ids(const data::Tokenizer& tok, const GenerateOptions& options);
// The same from ready ids (a rendered prompt, bos included where the model wants one);
// options.prompt and options.chat are ignored.
GenerateResult generate_ids(models::Model& model, const data::Tokenizer& tok, int64_t max_seq_len,
                            const std::vector<int64_t>& prompt_ids, const GenerateOptions& options);

// Greedy continuation of `prompt` without a tokenizer (exact-match evaluation): argmax tokens until
// one of `stop_ids` (not kept; `ended` set), `max_new` tokens or the context is full. The logits
// come from where generate_ids reads them: the key/value cache when the model's may be used, else
// the context re-run.
struct GreedyIds {
  std::vector<int64_t> ids;
  bool ended = false;
};
GreedyIds greedy_ids(models::Model& model, const std::vector<int64_t>& prompt, const std::vector<int64_t>& stop_ids,
                     int64_t max_new, int64_t max_context);

}  // namespace tunekit
