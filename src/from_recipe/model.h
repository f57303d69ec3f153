// The recipe's `model:` section as a models::Model (the one place that translates it into
// ViTOptions / TextTransformerOptions). The kinds themselves are ModelKind's table in recipe.h.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "src/recipe/recipe.h"

namespace tunekit::from_recipe {

std::shared_ptr<models::Model> build_model(const ModelConfig& cfg);

}  // namespace tunekit::from_recipe
