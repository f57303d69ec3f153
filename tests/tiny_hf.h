// The tiny Llama-family shape the HF-model, generation, causal-kernel, chat-objective and precision
// tests share: hidden 32, 2 layers, grouped-query attention (4 query heads on 2 key/value heads).
#pragma once
#include <cstdint>

#include "models/hf/families.h"

namespace tunekit::testkit {

inline models::hf::LlamaOptions tiny_llama_options(int64_t vocab, int64_t positions) {
  return models::hf::LlamaOptions()
      .vocab_size(vocab)
      .hidden_size(32)
      .intermediate_size(48)
      .num_hidden_layers(2)
      .num_attention_heads(4)
      .num_key_value_heads(2)
      .max_position_embeddings(positions);
}

}  // namespace tunekit::testkit
