// The recipe's `adapter:` section as adapters::AttachOptions (the only place that translates it).
#pragma once
#include "adapters/attach.h"
#include "src/recipe/recipe.h"

namespace tunekit::from_recipe {

adapters::AttachOptions attach_options(const AdapterConfig& cfg);

}  // namespace tunekit::from_recipe
