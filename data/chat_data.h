// Instruction and chat datasets for causal-LM fine-tuning: records read from JSONL, CSV/TSV
// (instruction records only) or a directory of them, rendered with a chat template (data/chat.h),
// cut to a length and laid out as rows of ids with labels on the response tokens, one example
// per row or several packed into one row (segments).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/chat.h"
#include "data/dataset.h"
#include "data/fashion_mnist.h"
#include "data/tokenizer.h"

namespace tunekit::data {

// Rendering helpers beside data/chat.h's (implemented in data/chat.cpp; declared here so that
// chat.h, which the recipe includes everywhere, stays as it is).

// An instruction record (Alpaca's fields) rendered with `chat_template`: alpaca writes its own
// "### Instruction: / ### Input: / ### Response:" layout (`system`, when given, replaces its
// opening sentence); every other template renders the conversation [system?] user = instruction
// (+ "\n\n" + input when input is not empty), assistant = output.
RenderedChat render_instruction(ChatTemplate chat_template, const std::string& system, const std::string& instruction,
                                const std::string& input, const std::string& output, const Tokenizer& tok);

// Why `messages` is not a conversation a template renders ("" when it is), naming the message:
// "messages[2].role: 'bot' is not system, user or assistant". A conversation: at most one
// system message, first; then user and assistant turns alternating, starting with a user's;
// no empty content. For training (`prompt` false) it ends with an assistant turn; for a prompt
// the last message must be a user's.
std::string conversation_problem(const std::vector<ChatMessage>& messages, bool prompt);

// Throws a one-line error when `tok` lacks a token the template writes (naming the token and
// the template): chatml <|im_start|>/<|im_end|>; llama3 <|begin_of_text|>, <|start_header_id|>,
// <|end_header_id|>, <|eot_id|>; mistral bos and eos; plain and alpaca eos.
void check_chat_template(ChatTemplate chat_template, const Tokenizer& tok);

// Labels where no loss applies (PyTorch's cross_entropy ignore_index).
inline constexpr int64_t kIgnoreLabel = -100;

// One record: a conversation (chat records) or an instruction (instruct records), and where it
// came from.
struct ChatRecord {
  std::vector<ChatMessage> messages;        // chat
  std::string instruction, input, output;  // instruct
  std::string file;
  int64_t line = 0;
};

struct ChatFileSpec {
  std::string path;              // a file, or a directory whose *.jsonl/*.csv/*.tsv files are read in name order
  std::string format = "auto";   // auto (from each file's extension) | jsonl | csv | tsv
  bool instruct = false;         // instruction records (else chat records: JSONL only)
  std::string instruction_field = "instruction", input_field = "input", output_field = "output";
  std::string messages_field = "messages";
};

// Every record of the file (or directory). A malformed record is a one-line error naming
// FILE:LINE and the field ("FILE:LINE: messages[2].role: 'bot' is not system, user or
// assistant"): invalid JSON, a missing or non-string field, content that is not UTF-8, an empty
// instruction or output, a conversation data/chat.h's conversation_problem refuses.
std::vector<ChatRecord> read_chat_records(const ChatFileSpec& spec);

struct ChatDataOptions {
  TORCH_ARG(std::string, train_file);
  TORCH_ARG(std::string, val_file);   // empty: val_fraction of train
  TORCH_ARG(std::string, test_file);  // empty: no test split
  TORCH_ARG(ChatFileSpec, files);     // format and field names (its path is ignored)
  TORCH_ARG(ChatTemplate, chat_template) = ChatTemplate::Plain;  // resolved (not Auto)
  TORCH_ARG(std::string, system);     // a system message put first in every record that has none
  TORCH_ARG(int64_t, max_seq_len) = 128;
  TORCH_ARG(bool, packing) = false;   // the train split only
  TORCH_ARG(double, val_fraction) = 0.1;
  TORCH_ARG(int64_t, limit_train) = 0;  // 0 = all (examples, before packing)
  TORCH_ARG(uint64_t, seed) = 0;
};

// A record rendered with the template (the options' system message added when it has none).
RenderedChat render_record(const ChatRecord& record, ChatTemplate chat_template, const std::string& system,
                           const Tokenizer& tok);

// The pad id rows are filled with: the tokenizer's pad, else its eos, else 0.
int64_t chat_pad_id(const Tokenizer& tok);

// Examples cut to `max_len` tokens: the start is kept, the end cut. An example with no trained
// token left is dropped (counted in *dropped).
std::vector<RenderedChat> truncate_examples(std::vector<RenderedChat> examples, int64_t max_len, int64_t* dropped);

// One example per row: inputs [N, max_len] right-padded with pad_id, labels [N, max_len] = the id
// where the token is trained, kIgnoreLabel elsewhere (padding included). The objective shifts:
// logits at t predict labels at t+1.
LabelledDataset example_rows(const std::vector<RenderedChat>& examples, int64_t max_len, int64_t pad_id);

// Examples packed greedily, in order, into rows of max_len (an example that does not fit in what
// is left of a row starts the next): inputs and labels as example_rows, and segments [N, max_len]
// = the example's index within its row; a row's padding is one more segment, never trained.
LabelledDataset packed_rows(const std::vector<RenderedChat>& examples, int64_t max_len, int64_t pad_id);

// The train/val/test splits (val split off train, seeded, when there is no val_file); the train
// split packed when options.packing. `message` says how many examples, rows, cut and dropped.
ImageSplits load_chat_data(const ChatDataOptions& options, const Tokenizer& tok, std::string* message = nullptr);

}  // namespace tunekit::data
