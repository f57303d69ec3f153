// The recipe's `data:` section (and what the model needs of the data) as the Options of data/:
// the one place that translates it, plus the recipe-level calls the verbs use.
#pragma once
#include <string>

#include "data/chat_data.h"
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

// dataset instruct / chat: data.template, with auto resolved from the model directory (the
// tokenizer's chat_template text and special tokens, else the family: data::guess_chat_template).
data::ChatTemplate chat_template(const Recipe& recipe, const data::Tokenizer& tok);
data::ChatDataOptions chat_data_options(const Recipe& recipe, const data::Tokenizer& tok);
// data::load_chat_data with the recipe's options; `message` says what was read, cut and dropped.
data::ImageSplits load_chat_data(const Recipe& recipe, const data::Tokenizer& tok, std::string* message = nullptr);

}  // namespace tunekit::from_recipe
