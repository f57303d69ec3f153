// Data for causal-LM fine-tuning: instruction records (Alpaca's instruction, optional input,
// output) and chat records (messages: [{role, content}], roles system/user/assistant), rendered
// with a built-in chat template (the model's own Jinja chat_template is never executed) into
// token ids whose loss covers the response (assistant) tokens only.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "util/enum_table.h"

namespace tunekit::data {

// The built-in chat templates, one per family tunekit loads.
enum class ChatTemplate { Auto, Chatml, Llama3, Mistral, Plain, Alpaca };
inline constexpr EnumRow<ChatTemplate> kChatTemplateRows[] = {
    {"auto", ChatTemplate::Auto, "guessed from the model directory (its tokenizer's chat_template and special tokens, else its family)"},
    {"chatml", ChatTemplate::Chatml, "<|im_start|>role\\ncontent<|im_end|>\\n (Qwen2, Qwen2.5)"},
    {"llama3", ChatTemplate::Llama3, "<|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|> (Llama 3)"},
    {"mistral", ChatTemplate::Mistral, "<s>[INST] user [/INST] assistant</s> (Mistral, Llama 2)"},
    {"plain", ChatTemplate::Plain, "role: content lines, eos after each answer (GPT-2, models without a template)"},
    {"gpt2", ChatTemplate::Plain, "the same as plain"},
    {"alpaca", ChatTemplate::Alpaca, "### Instruction: / ### Input: / ### Response: (Alpaca)"},
};
constexpr const auto& enum_rows(ChatTemplate) { return kChatTemplateRows; }
inline std::string to_string(ChatTemplate t) { return enum_name(t); }

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

// A conversation as ids: `train[i]` is 1 where token i is part of a response the loss covers
// (assistant content and the token that ends its turn), 0 for the prompt.
struct RenderedChat {
  std::vector<int64_t> ids;
  std::vector<uint8_t> train;
};

// Renders a whole conversation (the model's bos first when the tokenizer adds one).
// `chat_template` may not be Auto.
RenderedChat render_chat(ChatTemplate chat_template, const std::vector<ChatMessage>& messages, const Tokenizer& tok);
// The ids of a prompt for generation: the messages (the last a user's) and the header of the
// assistant's turn, so that the model's continuation is the answer.
std::vector<int64_t> render_prompt(ChatTemplate chat_template, const std::vector<ChatMessage>& messages,
                                   const Tokenizer& tok);
// The template that fits a model: from its tokenizer's chat_template text and special tokens
// (<|im_start|> -> chatml, <|start_header_id|> -> llama3, [INST] -> mistral), else from
// config.json's model_type (qwen2 -> chatml, mistral -> mistral, gpt2 -> plain, ...).
ChatTemplate guess_chat_template(const Tokenizer& tok, const std::string& model_type);

}  // namespace tunekit::data
