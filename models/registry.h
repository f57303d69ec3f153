// The model registry: builds a models::Model from a recipe's `model:` section, and lists
// the kinds tunekit knows (for `tunekit ls`).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "src/recipe/recipe.h"

namespace tunekit::models {

std::shared_ptr<Model> build_model(const ModelConfig& cfg);

struct RegistryEntry {
  std::string name, description;
};
std::vector<RegistryEntry> known_models();

}  // namespace tunekit::models
