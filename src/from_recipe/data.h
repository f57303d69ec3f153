// The recipe's `data:` section (and what the model needs of the data) as the Options of data/:
// the one place that translates it, plus the recipe-level calls the verbs use.
#pragma once
#include <string>

#include "data/fashion_mnist.h"
#include "data/text_data.h"
#include "src/recipe/recipe.h"

namespace tunekit::from_recipe {

data::FashionMnistOptions fashion_mnist_options(const Recipe& recipe);
data::TextDataOptions text_data_options(const Recipe& recipe);
data::TokenizerOptions tokenizer_options(const Recipe& recipe);

// data::prepare_tokenizer / run_tokenizer / load_text_data with the recipe's options.
data::Tokenizer prepare_tokenizer(const Recipe& recipe, const std::string& run_dir, std::string* message = nullptr);
data::Tokenizer run_tokenizer(const Recipe& recipe, const std::string& run_dir);
data::ImageSplits load_text_data(const Recipe& recipe, const data::Tokenizer& tok);

}  // namespace tunekit::from_recipe
