// The recipe's `model:` section as a models::Model (the one place that translates it into
// ViTOptions / TextTransformerOptions, or into the Hugging Face loader's options for
// model.from_hf). The kinds themselves are ModelKind's table in recipe.h.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "src/hf/load.h"
#include "src/recipe/recipe.h"

namespace tunekit::from_recipe {

// With model.from_hf the model is the checkpoint's, its weights loaded (src/hf/load.h); then the
// weights `frozen_select` picks (when given) are stored as model.frozen_dtype says while they
// are read (hf::HfLoadOptions::frozen_select).
std::shared_ptr<models::Model> build_model(
    const ModelConfig& cfg, const std::function<std::vector<torch::Tensor>(torch::nn::Module&)>& frozen_select = nullptr);
// The loader's options for a model.from_hf section: context, attention variant, dropout, a ViT's
// classes and its image preprocessing (Fashion-MNIST's normalisation undone), excluded tensors.
hf::HfLoadOptions hf_load_options(const ModelConfig& cfg);

}  // namespace tunekit::from_recipe
