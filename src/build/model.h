// The recipe's `model:` section as a models::Model (the one place that translates it into
// ViTOptions / TextTransformerOptions), and the model kinds tunekit knows (for `tunekit ls`).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "src/recipe/recipe.h"

namespace tunekit::build {

std::shared_ptr<models::Model> build_model(const ModelConfig& cfg);

struct RegistryEntry {
  std::string name, description;
};
std::vector<RegistryEntry> known_models();

}  // namespace tunekit::build
