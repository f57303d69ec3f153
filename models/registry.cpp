#include "models/registry.h"

#include "models/vit.h"
#include "src/util/error.h"

namespace tunekit::models {

std::shared_ptr<Model> build_model(const ModelConfig& c) {
  if (c.kind == "vit")
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
  throw Error("model.kind: unknown model '" + c.kind + "'");
}

std::vector<RegistryEntry> known_models() {
  return {{"vit", "Vision Transformer: conv patches, class token, pre-norm blocks; attention score softmax|sigmoid, "
                  "gate none|sdpa_elementwise|sdpa_headwise|value, qk_norm, post_attn_norm"}};
}

}  // namespace tunekit::models
