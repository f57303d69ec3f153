// Builds what every verb needs from a recipe: the model with its adapters attached and
// (optionally) the weights of `init_from` or of a run's checkpoint loaded.
#pragma once
#include <memory>
#include <string>

#include "adapters/attach.h"
#include "data/fashion_mnist.h"
#include "data/tokenizer.h"
#include "models/model.h"
#include "src/recipe/recipe.h"

namespace tunekit {

struct RunModel {
  std::shared_ptr<models::Model> model;
  adapters::AttachReport report;
  std::string init_message;  // what init_from loaded, for the log
  int64_t narrowed_at_load = 0;  // frozen weights stored as model.frozen_dtype while read
};

// Model + adapters. With `load_init`, init_from's weights are loaded before the adapters are
// attached (so adapters start at their documented initialisation). With `store_frozen` (training),
// a model.from_hf base with model.frozen_dtype bf16 or int8 has the weights the adapters will
// freeze (every models::Linear weight outside adapter.modules_to_save) stored narrow as they are
// read, so the load never holds them in float32; the adapters then start from the stored base
// (DoRA's magnitude is the stored weight's row norm). Without it the base is read in float32.
RunModel build_run_model(const Recipe& recipe, bool load_init, bool store_frozen = false);

// Loads a run directory's recipe (recipe.yaml) and a checkpoint ("best" or "last") into a model.
struct LoadedRun {
  Recipe recipe;
  RunModel run;
  std::string checkpoint_dir;
};
LoadedRun load_run(const std::string& run_dir, const std::string& checkpoint = "best");

// The recipe's train/val/test data. Text recipes use `tokenizer` when given, else read the one
// of `run_dir` (default: the recipe's run directory), which training puts there
// (from_recipe::prepare_tokenizer). Instruct/chat data appends a line saying what it read, cut
// and dropped to `message` when given.
data::ImageSplits load_data(const Recipe& recipe, const std::string& run_dir = "",
                            const data::Tokenizer* tokenizer = nullptr, std::string* message = nullptr);

}  // namespace tunekit
