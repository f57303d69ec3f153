// The recipe parser's parts, one per YAML section and in the same shape (internal to
// src/recipe/): each takes its section, reads and checks its keys, and reports keys nobody read.
// The checks that span sections (data against model) have their own functions.
#pragma once
#include <string>

#include "src/recipe/recipe.h"
#include "src/recipe/yaml_reader.h"

namespace tunekit::recipe {

using yaml::Section;

// `threads:` is a number (BLAS threads, LibTorch at 1) or {torch: N, blas: N}; read from the top.
ThreadPolicy parse_threads(Section& top);
ModelConfig parse_model(Section model);        // recipe_model.cpp
InitFromConfig parse_init_from(Section init);  // recipe_model.cpp
AdapterConfig parse_adapter(Section adapter);  // recipe_adapter.cpp
DataConfig parse_data(Section data, const ModelConfig& model);  // recipe_data.cpp
OptimizerConfig parse_optimizer(Section optimizer);             // recipe_train.cpp, with the rest
ScheduleConfig parse_schedule(Section schedule);
TrainConfig parse_train(Section train);
OutputConfig parse_output(Section output, const std::string& source);
SweepConfig parse_sweep(Section sweep);

// Cross-section checks (recipe_data.cpp).
// data.dataset must suit model.kind (reported on data.dataset).
void check_dataset_fits_model(Section& data, const DataConfig& c, const ModelConfig& model);
// A classifier's model.num_classes must match the classes the data selects.
void check_classes_fit_model(Section& top, const ModelConfig& model, const DataConfig& data);

}  // namespace tunekit::recipe
