#include "src/eval/generate.h"

#include <fmt/format.h>

#include "data/dataset.h"
#include "util/error.h"

namespace tunekit {

GenerateResult generate(models::Model& model, const data::Tokenizer& tok, int64_t max_seq_len, const GenerateOptions& o) {
  if (o.chat) throw Error("generate: chat prompts are not rendered yet");
  std::vector<int64_t> ids;
  if (tok.special().add_bos && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  const auto prompt = tok.encode(o.prompt);
  ids.insert(ids.end(), prompt.begin(), prompt.end());
  return generate_ids(model, tok, max_seq_len, ids, o);
}

GenerateResult generate_ids(models::Model& model, const data::Tokenizer& tok, int64_t max_seq_len,
                            const std::vector<int64_t>& prompt_ids, const GenerateOptions& o) {
  if (o.max_new_tokens < 0) throw Error("generate: --max-new-tokens must be >= 0");
  if (o.temperature < 0) throw Error("generate: --temperature must be >= 0 (0 = greedy)");
  if (o.top_k < 0) throw Error("generate: --top-k must be >= 0 (0 = no limit)");
  if (prompt_ids.empty()) throw Error("generate: the prompt has no tokens");
  torch::NoGradGuard no_grad;
  bool was_training = model.is_training();
  model.eval();
  auto gen = data::seeded_generator(o.seed);
  std::vector<int64_t> ids = prompt_ids;
  GenerateResult r;
  r.prompt_ids = prompt_ids;
  r.stop_reason = "max_new_tokens";
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    const auto start = ids.size() > size_t(max_seq_len) ? ids.size() - max_seq_len : 0;
    auto ctx = torch::tensor(std::vector<int64_t>(ids.begin() + start, ids.end()), torch::kLong).unsqueeze(0);
    auto logits = model.forward(ctx).select(0, 0).select(0, -1).to(torch::kFloat);  // [V]
    logits = logits.slice(0, 0, tok.vocab_size());  // rows past the tokenizer's pieces are never sampled
    int64_t next;
    if (o.temperature == 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      logits = logits / o.temperature;
      if (o.top_k > 0 && o.top_k < logits.size(0)) {
        auto kth = std::get<0>(logits.topk(o.top_k)).min();
        logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
      }
      next = torch::multinomial(torch::softmax(logits, 0), 1, false, gen).item<int64_t>();
    }
    if (next == tok.eos_id()) {
      r.stopped_at_eos = true;
      r.stop_reason = "eos";
      break;
    }
    ids.push_back(next);
    r.new_ids.push_back(next);
  }
  model.train(was_training);
  r.continuation = tok.decode(r.new_ids);
  const size_t skip = (!prompt_ids.empty() && prompt_ids[0] == tok.bos_id()) ? 1 : 0;
  r.text = tok.decode(std::vector<int64_t>(ids.begin() + skip, ids.end()));
  return r;
}

}  // namespace tunekit
