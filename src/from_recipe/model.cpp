#include "src/from_recipe/model.h"

#include "data/fashion_mnist.h"
#include "models/text.h"
#include "models/vit.h"
#include "src/hf/load.h"
#include "src/hf/scratch.h"
#include "util/error.h"

namespace tunekit::from_recipe {

hf::HfLoadOptions hf_load_options(const ModelConfig& c) {
  auto build = hf::HfBuildOptions().attention(c.attention).dropout(c.dropout);
  if (c.kind == ModelKind::Vit)  // Fashion-MNIST's images, resized and normalised as the checkpoint expects
    build.num_labels(c.num_classes)
        .preprocess_images(true)
        .data_mean({data::kFashionMnistMean})
        .data_std({data::kFashionMnistStd});
  return hf::HfLoadOptions().max_seq_len(c.is_hf_lm() ? c.max_seq_len : 0).build(build).exclude(c.exclude);
}

std::shared_ptr<models::Model> build_model(
    const ModelConfig& c, const std::function<std::vector<torch::Tensor>(torch::nn::Module&)>& frozen_select) {
  if (c.is_hf()) {
    auto options = hf_load_options(c);
    if (frozen_select) options.frozen_dtype(c.frozen_dtype).frozen_select(frozen_select);
    return hf::load_hf_model(c.from_hf, options);
  }
  if (!c.from_config.empty())  // random initialisation, as transformers does (src/hf/scratch.h)
    return hf::build_from_config(hf::read_config_source(c.from_config, c.max_seq_len), hf_load_options(c).build());
  if (c.kind == ModelKind::Vit)
    return std::make_shared<models::ViTImpl>(models::ViTOptions()
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
    return std::make_shared<models::TextTransformerImpl>(
        models::TextTransformerOptions(c.vocab_size, c.max_seq_len)
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

}  // namespace tunekit::from_recipe
