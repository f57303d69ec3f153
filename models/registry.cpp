#include "models/registry.h"

#include "models/text.h"
#include "models/vit.h"
#include "util/error.h"

namespace tunekit::models {

std::shared_ptr<Model> build_model(const ModelConfig& c) {
  if (c.kind == ModelKind::Vit)
    return std::make_shared<ViTImpl>(ViTOptions()
                                         .image_size(c.image_size)
                                         .channels(c.channels)
                                         .patch(c.patch)
                                         .dim(c.dim)
                                         .depth(c.depth)
                                         .heads(c.heads)
                                         .mlp_ratio(c.mlp_ratio)
                                         .num_classes(c.num_classes)
                                         .dropout(c.dropout)
                                         .attention(c.attention)
                                         .post_attn_norm(c.post_attn_norm));
  if (c.kind == ModelKind::Text)
    return std::make_shared<TextTransformerImpl>(
        TextTransformerOptions(c.vocab_size, c.max_seq_len)
            .dim(c.dim)
            .depth(c.depth)
            .heads(c.heads)
            .mlp_ratio(c.mlp_ratio)
            .dropout(c.dropout)
            .attention(c.attention)
            .post_attn_norm(c.post_attn_norm)
            .task(c.task)
            .num_classes(c.num_classes)
            .pooling(c.pooling)
            .causal(c.causal)
            .pad_id(c.pad_id));
  throw Error("model.kind: unknown model '" + to_string(c.kind) + "'");
}

std::vector<RegistryEntry> known_models() {
  return {{"vit", "Vision Transformer: conv patches, class token, pre-norm blocks; attention score softmax|sigmoid, "
                  "gate none|sdpa_elementwise|sdpa_headwise|value, qk_norm, post_attn_norm"},
          {"text", "Text Transformer over sentencepiece ids: token + position embeddings, the same blocks; task "
                   "causal_lm (tied head) or classify (pooling mean|last); causal or bidirectional, padding masked"}};
}

}  // namespace tunekit::models
