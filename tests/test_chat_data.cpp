// Instruction and chat data (data/chat.h, data/chat_data.h): every template's text and train mask
// against strings written by hand from the published formats, record errors (file:line:field),
// truncation, the row layout (labels, padding) and packing (segments), and the recipe keys.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "data/chat.h"
#include "data/chat_data.h"
#include "src/recipe/recipe.h"
#include "src/train/setup.h"
#include "tests/helpers.h"
#include "tests/text_helpers.h"
#include "util/error.h"

using namespace tunekit;
namespace fs = std::filesystem;
using testkit::error_of;

namespace {

// A character-level tokenizer: one id per byte (100 + byte), the special tokens as added ids
// 0..k-1. Its encode() never matches special tokens written in the text, so a special token in
// a rendered chat can only come from the template placing its id.
class CharBackend : public data::TokenizerBackend {
 public:
  explicit CharBackend(std::vector<std::string> specials) : specials_(std::move(specials)) {}
  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> ids;
    for (unsigned char c : text) ids.push_back(100 + c);
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
    std::string out;
    for (auto id : ids)
      if (!(skip_special && is_special(id))) out += piece(id);
    return out;
  }
  std::string piece(int64_t id) const override {
    if (id >= 0 && id < static_cast<int64_t>(specials_.size())) return specials_[id];
    if (id >= 100 && id < 356) return std::string(1, static_cast<char>(id - 100));
    return "";
  }
  int64_t token_id(const std::string& p) const override {
    for (size_t i = 0; i < specials_.size(); ++i)
      if (specials_[i] == p) return static_cast<int64_t>(i);
    return p.size() == 1 ? 100 + static_cast<unsigned char>(p[0]) : -1;
  }
  int64_t vocab_size() const override { return 356; }
  bool is_special(int64_t id) const override { return id >= 0 && id < static_cast<int64_t>(specials_.size()); }

 private:
  std::vector<std::string> specials_;
};

// specials[0..]: ids 0..; bos/eos/pad given by piece ("" = none).
data::Tokenizer char_tokenizer(const std::vector<std::string>& specials, const std::string& bos, const std::string& eos,
                               bool add_bos = false, const std::string& pad = "") {
  auto backend = std::make_shared<CharBackend>(specials);
  data::SpecialTokens s;
  s.bos = bos.empty() ? -1 : backend->token_id(bos);
  s.eos = eos.empty() ? -1 : backend->token_id(eos);
  s.pad = pad.empty() ? -1 : backend->token_id(pad);
  if (s.eos >= 0) s.stop = {s.eos};
  s.add_bos = add_bos;
  return data::Tokenizer(backend, s, "test-chars", "", {});
}

data::Tokenizer qwen_like() { return char_tokenizer({"<|endoftext|>", "<|im_start|>", "<|im_end|>"}, "", "<|endoftext|>"); }
data::Tokenizer llama3_like() {
  return char_tokenizer({"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
                        "<|begin_of_text|>", "<|eot_id|>", true);
}
data::Tokenizer mistral_like() { return char_tokenizer({"<unk>", "<s>", "</s>"}, "<s>", "</s>", true); }
data::Tokenizer gpt2_like() { return char_tokenizer({"<|endoftext|>"}, "<|endoftext|>", "<|endoftext|>"); }

// The trained tokens of a rendered chat as text, "|" between separate trained runs.
std::string trained_text(const data::RenderedChat& r, const data::Tokenizer& tok) {
  std::string out;
  for (size_t i = 0; i < r.ids.size(); ++i) {
    if (!r.train[i]) continue;
    if (i > 0 && !r.train[i - 1] && !out.empty()) out += "|";
    out += tok.piece(r.ids[i]);
  }
  return out;
}

const std::vector<data::ChatMessage> kTwoTurns{{"system", "Be brief."},
                                               {"user", "Hi"},
                                               {"assistant", "Hello!"},
                                               {"user", "2+2?"},
                                               {"assistant", "4"}};

struct TemplateCase {
  data::ChatTemplate t;
  data::Tokenizer tok;
  std::string text, trained;
  std::vector<std::string> special_pieces;  // must appear as their ids
};

}  // namespace

TEST(ChatTemplates, TwoTurnsRenderAsPublished) {
  const std::vector<TemplateCase> cases{
      // ChatML (Qwen2): <|im_start|>role\ncontent<|im_end|>\n
      {data::ChatTemplate::Chatml, qwen_like(),
       "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
       "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n",
       "Hello!<|im_end|>|4<|im_end|>", {"<|im_start|>", "<|im_end|>"}},
      // Llama 3: <|begin_of_text|>, then <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
      {data::ChatTemplate::Llama3, llama3_like(),
       "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
       "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
       "Hello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>",
       "Hello!<|eot_id|>|4<|eot_id|>", {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}},
      // Mistral v1 / Llama 2 without <<SYS>>: <s>[INST] user [/INST] answer</s>, system before the first user message
      {data::ChatTemplate::Mistral, mistral_like(),
       "<s>[INST] Be brief.\n\nHi [/INST] Hello!</s>[INST] 2+2? [/INST] 4</s>", " Hello!</s>| 4</s>", {"<s>", "</s>"}},
      // plain: role: content lines, eos after each answer
      {data::ChatTemplate::Plain, gpt2_like(),
       "system: Be brief.\nuser: Hi\nassistant: Hello!<|endoftext|>\nuser: 2+2?\nassistant: 4<|endoftext|>",
       " Hello!<|endoftext|>| 4<|endoftext|>", {"<|endoftext|>"}},
      // Alpaca: the system message in place of the intro, ### Instruction / ### Response, eos after the answer
      {data::ChatTemplate::Alpaca, mistral_like(),
       "<s>Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!</s>\n\n### Instruction:\n2+2?\n\n### Response:\n4</s>",
       "Hello!</s>|4</s>", {"<s>", "</s>"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(data::to_string(c.t));
    const auto r = data::render_chat(c.t, kTwoTurns, c.tok);
    ASSERT_EQ(r.ids.size(), r.train.size());
    EXPECT_EQ(c.tok.decode(r.ids), c.text);
    EXPECT_EQ(trained_text(r, c.tok), c.trained);
    // Each special token is one id (the backend never produces it from text).
    for (const auto& p : c.special_pieces) {
      const int64_t id = c.tok.token_id(p);
      size_t count = 0, pos = 0;
      while ((pos = c.text.find(p, pos)) != std::string::npos) ++count, pos += p.size();
      EXPECT_EQ(static_cast<size_t>(std::count(r.ids.begin(), r.ids.end(), id)), count) << p;
    }
  }
}

TEST(ChatTemplates, PromptsEndWithTheAssistantHeader) {
  const std::vector<data::ChatMessage> q{{"user", "Hi"}};
  EXPECT_EQ(qwen_like().decode(data::render_prompt(data::ChatTemplate::Chatml, q, qwen_like())),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(llama3_like().decode(data::render_prompt(data::ChatTemplate::Llama3, q, llama3_like())),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(mistral_like().decode(data::render_prompt(data::ChatTemplate::Mistral, q, mistral_like())), "<s>[INST] Hi [/INST]");
  EXPECT_EQ(gpt2_like().decode(data::render_prompt(data::ChatTemplate::Plain, q, gpt2_like())), "user: Hi\nassistant:");
  EXPECT_EQ(mistral_like().decode(data::render_prompt(data::ChatTemplate::Alpaca, q, mistral_like())),
            "<s>Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nHi\n\n### Response:\n");
  // A prompt's last message is a user's; a conversation to train on ends with an answer.
  EXPECT_NE(error_of([&] { data::render_prompt(data::ChatTemplate::Chatml, kTwoTurns, qwen_like()); }).find("must end with a user"),
            std::string::npos);
}

TEST(ChatTemplates, InstructionRecords) {
  // Stanford Alpaca's prompt with an input (PROMPT_DICT["prompt_input"]), the output and eos trained.
  const auto tok = mistral_like();
  auto r = data::render_instruction(data::ChatTemplate::Alpaca, "", "Add the numbers.", "2 and 3", "5", tok);
  EXPECT_EQ(tok.decode(r.ids),
            "<s>Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n"
            "### Input:\n2 and 3\n\n### Response:\n5</s>");
  EXPECT_EQ(trained_text(r, tok), "5</s>");
  r = data::render_instruction(data::ChatTemplate::Alpaca, "", "Name a colour.", "", "Red", tok);
  EXPECT_EQ(tok.decode(r.ids),
            "<s>Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nName a colour.\n\n### Response:\nRed</s>");
  // Any other template: user = instruction + "\n\n" + input, assistant = output.
  const auto q = qwen_like();
  r = data::render_instruction(data::ChatTemplate::Chatml, "Be brief.", "Add the numbers.", "2 and 3", "5", q);
  EXPECT_EQ(q.decode(r.ids),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nAdd the numbers.\n\n2 and 3<|im_end|>\n"
            "<|im_start|>assistant\n5<|im_end|>\n");
  EXPECT_EQ(trained_text(r, q), "5<|im_end|>");
}

TEST(ChatTemplates, MissingSpecialTokenIsAnErrorNamingIt) {
  const auto plain_tok = char_tokenizer({"<unk>"}, "", "");
  for (auto [t, token] : std::vector<std::pair<data::ChatTemplate, std::string>>{
           {data::ChatTemplate::Chatml, "<|im_start|>"},
           {data::ChatTemplate::Llama3, "<|begin_of_text|>"},
           {data::ChatTemplate::Mistral, "bos"},
           {data::ChatTemplate::Plain, "eos"},
           {data::ChatTemplate::Alpaca, "eos"}}) {
    const std::string e = error_of([&] { data::render_chat(t, kTwoTurns, plain_tok); });
    EXPECT_NE(e.find(token), std::string::npos) << e;
    EXPECT_NE(e.find("chat template " + data::to_string(t)), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  EXPECT_NE(error_of([&] { data::check_chat_template(data::ChatTemplate::Llama3, qwen_like()); }).find("<|begin_of_text|>"),
            std::string::npos);
}

TEST(ChatTemplates, GuessFromTheModelDirectory) {
  EXPECT_EQ(data::guess_chat_template(qwen_like(), "qwen2"), data::ChatTemplate::Chatml);
  EXPECT_EQ(data::guess_chat_template(qwen_like(), "llama"), data::ChatTemplate::Chatml);  // the tokens win
  EXPECT_EQ(data::guess_chat_template(llama3_like(), "llama"), data::ChatTemplate::Llama3);
  EXPECT_EQ(data::guess_chat_template(mistral_like(), "mistral"), data::ChatTemplate::Mistral);
  EXPECT_EQ(data::guess_chat_template(mistral_like(), "llama"), data::ChatTemplate::Mistral);  // Llama 2
  EXPECT_EQ(data::guess_chat_template(gpt2_like(), "gpt2"), data::ChatTemplate::Plain);
  EXPECT_EQ(data::guess_chat_template(gpt2_like(), "qwen2"), data::ChatTemplate::Chatml);
  // The tokenizer's own Jinja template (as text) comes first.
  auto backend = std::make_shared<CharBackend>(std::vector<std::string>{"<s>", "</s>"});
  data::SpecialTokens s;
  s.bos = 0, s.eos = 1;
  s.chat_template = "{% for message in messages %}{{ '### Instruction:\\n' + message['content'] }}{% endfor %}";
  EXPECT_EQ(data::guess_chat_template(data::Tokenizer(backend, s, "test", "", {}), "llama"), data::ChatTemplate::Alpaca);
  s.chat_template = "{{ '<|im_start|>' + message['role'] }}";
  EXPECT_EQ(data::guess_chat_template(data::Tokenizer(backend, s, "test", "", {}), "gpt2"), data::ChatTemplate::Chatml);
}

// With a real (trained sentencepiece) tokenizer: the text between two special tokens is
// tokenised whole, as the tokenizer reads the rendered text, and the trained tokens are exactly
// the answer's.
TEST(ChatTemplates, SentencepieceTokenisesTheRenderedTextWhole) {
  testkit::TempDir dir;
  data::TokenizerTrainOptions o;
  o.type = "bpe";
  o.vocab_size = 400;
  const auto tok = data::Tokenizer::train(testkit::synthetic_mails(200, 1).texts, o, dir / "t.model");
  const auto r = data::render_chat(data::ChatTemplate::Plain, {{"user", "hello there"}, {"assistant", "good morning"}}, tok);
  std::vector<int64_t> want{tok.bos_id()};  // tunekit's sentencepiece models add bos
  for (auto id : tok.encode("user: hello there\nassistant: good morning")) want.push_back(id);
  want.push_back(tok.eos_id());
  EXPECT_EQ(r.ids, want);
  std::vector<int64_t> trained;
  for (size_t i = 0; i < r.ids.size(); ++i)
    if (r.train[i]) trained.push_back(r.ids[i]);
  ASSERT_FALSE(trained.empty());
  EXPECT_EQ(trained.back(), tok.eos_id());
  trained.pop_back();
  EXPECT_EQ(tok.decode(trained), "good morning");
  // The prompt is the untrained start of the same ids.
  const auto prompt = data::render_prompt(data::ChatTemplate::Plain, {{"user", "hello there"}}, tok);
  const size_t first_trained = std::find(r.train.begin(), r.train.end(), 1) - r.train.begin();
  EXPECT_EQ(prompt, std::vector<int64_t>(r.ids.begin(), r.ids.begin() + first_trained));
}

namespace {

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// The error reading `content` as a chat (or instruct) file named `name` in `dir`.
std::string record_error(const testkit::TempDir& dir, const std::string& name, const std::string& content, bool instruct) {
  write(dir / name, content);
  data::ChatFileSpec spec;
  spec.path = dir / name;
  spec.instruct = instruct;
  return error_of([&] { data::read_chat_records(spec); });
}

const std::string kGood = R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})";

}  // namespace

TEST(ChatRecords, ReadsChatInstructCsvTsvAndDirectories) {
  testkit::TempDir dir;
  fs::create_directories(dir / "d");
  write(dir / "d/b.jsonl", kGood + "\n\n" +
                               R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, )"
                               R"({"role": "assistant", "content": "A"}], "id": 7})" + "\n");
  write(dir / "d/a.jsonl", kGood + "\n");
  write(dir / "d/notes.txt", "ignored\n");
  data::ChatFileSpec spec;
  spec.path = dir / "d";
  auto rs = data::read_chat_records(spec);
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(fs::path(rs[0].file).filename(), "a.jsonl");  // name order
  EXPECT_EQ(rs[2].line, 3);
  EXPECT_EQ(rs[2].messages[0].role, "system");
  EXPECT_EQ(rs[2].messages[2].content, "A");

  write(dir / "i.csv", "instruction,input,output\n\"Say \"\"hi\"\"\",,hi\n\"Add\",\"2\n3\",5\n");
  spec.path = dir / "i.csv";
  spec.instruct = true;
  rs = data::read_chat_records(spec);
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].instruction, "Say \"hi\"");
  EXPECT_EQ(rs[0].input, "");
  EXPECT_EQ(rs[1].input, "2\n3");
  EXPECT_EQ(rs[1].line, 3);
  write(dir / "i.tsv", "q\ta\nWhat?\tThat.\n");
  spec.path = dir / "i.tsv";
  spec.instruction_field = "q";
  spec.output_field = "a";
  rs = data::read_chat_records(spec);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].output, "That.");
}

TEST(ChatRecords, MalformedRecordsNameFileLineAndField) {
  testkit::TempDir dir;
  const std::string f = dir / "c.jsonl";
  const std::string pre = kGood + "\n";  // line 1 is fine; the error is on line 2
  const std::vector<std::pair<std::string, std::string>> chat_cases{
      {"{\"messages\": [", f + ":2: invalid JSON"},
      {"[1, 2]", f + ":2: expected a JSON object per line"},
      {R"({"msgs": []})", f + ":2: messages: missing"},
      {R"({"messages": "hi"})", f + ":2: messages: expected a list of {role, content} objects, got string"},
      {R"({"messages": [3]})", f + ":2: messages[0]: expected an object {role, content}, got number"},
      {R"({"messages": [{"content": "Hi"}]})", f + ":2: messages[0].role: missing"},
      {R"({"messages": [{"role": "user", "content": 5}]})", f + ":2: messages[0].content: expected a string, got number"},
      {R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "x"}]})",
       f + ":2: messages[1].role: 'bot' is not system, user or assistant"},
      {R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}]})",
       f + ":2: messages[1].role: a system message may only come first"},
      {R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "x"}]})",
       f + ":2: messages[1].role: 'user' where the assistant's turn belongs"},
      {R"({"messages": [{"role": "assistant", "content": "Hi"}]})", f + ":2: messages[0].role: 'assistant' where the user's turn belongs"},
      {R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]})",
       f + ":2: messages[1].content: empty"},
      {R"({"messages": [{"role": "user", "content": "Hi"}]})", f + ":2: messages: no assistant turn"},
      {R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]})",
       f + ":2: messages[2].role: a conversation to train on ends with an assistant turn"},
      {R"({"messages": []})", f + ":2: messages: no messages"},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\"}]}", f + ":2: invalid JSON"},
  };
  for (const auto& [line, want] : chat_cases) {
    const std::string e = record_error(dir, "c.jsonl", pre + line + "\n", false);
    EXPECT_EQ(e.rfind(want, 0), 0u) << "got: " << e << "\nwant: " << want;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  const std::vector<std::pair<std::string, std::string>> instruct_cases{
      {R"({"input": "x", "output": "y"})", "i.jsonl:2: instruction: missing"},
      {R"({"instruction": "x", "output": ["y"]})", "i.jsonl:2: output: expected a string, got array"},
      {R"({"instruction": "x", "input": 3, "output": "y"})", "i.jsonl:2: input: expected a string, got number"},
      {R"({"instruction": "", "output": "y"})", "i.jsonl:2: instruction: empty"},
  };
  for (const auto& [line, want] : instruct_cases) {
    const std::string e = record_error(dir, "i.jsonl", R"({"instruction": "a", "output": "b"})" "\n" + line + "\n", true);
    EXPECT_NE(e.find(want), std::string::npos) << "got: " << e << "\nwant: " << want;
  }
  EXPECT_NE(record_error(dir, "i.csv", "instruction,output\nok,fine\n\"x\",\"\xc3\x28\"\n", true)
                .find("i.csv:3: output: not valid UTF-8 (byte 0xc3 at offset 0)"),
            std::string::npos);
  EXPECT_NE(record_error(dir, "i.csv", "instruction,answer\nx,y\n", true).find("i.csv:1: no column 'output' in the header"),
            std::string::npos);
  EXPECT_NE(record_error(dir, "i.csv", "instruction,output\nx,y,z\n", true).find("i.csv:2: expected 2 fields"),
            std::string::npos);
  EXPECT_NE(record_error(dir, "c.csv", "messages\nx\n", false).find("JSONL only"), std::string::npos);
  EXPECT_NE(record_error(dir, "c.txt", kGood, false).find("cannot tell the format"), std::string::npos);
  fs::create_directories(dir / "empty");
  data::ChatFileSpec spec;
  spec.path = dir / "empty";
  EXPECT_NE(error_of([&] { data::read_chat_records(spec); }).find("no .jsonl, .csv or .tsv files"), std::string::npos);
  // The file's own field name in conversation errors.
  write(dir / "t.jsonl", R"({"turns": [{"role": "user", "content": "Hi"}]})" "\n");
  spec.path = dir / "t.jsonl";
  spec.messages_field = "turns";
  EXPECT_NE(error_of([&] { data::read_chat_records(spec); }).find("t.jsonl:1: turns: no assistant turn"), std::string::npos);
}

TEST(ChatRows, LabelsAreTheTrainedIdsAndPaddingIsNeverTrained) {
  const auto tok = qwen_like();  // no pad: eos pads
  EXPECT_EQ(data::chat_pad_id(tok), tok.eos_id());
  EXPECT_EQ(data::chat_pad_id(char_tokenizer({"<pad>", "</s>"}, "", "</s>", false, "<pad>")), 0);
  EXPECT_EQ(data::chat_pad_id(char_tokenizer({"<unk>"}, "", "")), 0);
  const auto r = data::render_chat(data::ChatTemplate::Chatml, {{"user", "Hi"}, {"assistant", "Yo"}}, tok);
  const int64_t n = static_cast<int64_t>(r.ids.size());
  const auto d = data::example_rows({r}, n + 3, data::chat_pad_id(tok));
  ASSERT_EQ(d.inputs.sizes(), (std::vector<int64_t>{1, n + 3}));
  ASSERT_EQ(d.labels.sizes(), d.inputs.sizes());
  EXPECT_FALSE(d.segments.defined());
  int64_t trained = 0;
  for (int64_t t = 0; t < n + 3; ++t) {
    const int64_t x = d.inputs[0][t].item<int64_t>(), y = d.labels[0][t].item<int64_t>();
    if (t >= n) {
      EXPECT_EQ(x, tok.eos_id());
      EXPECT_EQ(y, data::kIgnoreLabel);
      continue;
    }
    EXPECT_EQ(x, r.ids[t]);
    EXPECT_EQ(y, r.train[t] ? r.ids[t] : data::kIgnoreLabel);
    trained += y != data::kIgnoreLabel;
  }
  // "Yo" and <|im_end|> (3 tokens): the "\n" after <|im_end|>, the headers and the user's turn are not trained.
  EXPECT_EQ(trained, 3);
  EXPECT_EQ(d.labels[0][n - 2].item<int64_t>(), tok.token_id("<|im_end|>"));
}

TEST(ChatRows, TruncationKeepsTheStartAndDropsExamplesWithNoResponseLeft) {
  data::RenderedChat a{{1, 2, 3, 4, 5, 6}, {0, 0, 1, 1, 1, 1}}, b{{1, 2, 3, 4, 5, 6}, {0, 0, 0, 0, 1, 1}}, c{{7, 8}, {0, 1}};
  int64_t dropped = -1;
  auto out = data::truncate_examples({a, b, c}, 4, &dropped);
  EXPECT_EQ(dropped, 1);  // b's response starts at token 4
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].ids, (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(out[0].train, (std::vector<uint8_t>{0, 0, 1, 1}));
  EXPECT_EQ(out[1].ids, c.ids);
}

TEST(ChatRows, PackingLayout) {
  // Lengths 5, 4, 6, 10 in rows of 10: [e0 e1 pad], [e2 pad], [e3].
  std::vector<data::RenderedChat> ex;
  for (int64_t len : {5, 4, 6, 10}) {
    data::RenderedChat e;
    for (int64_t t = 0; t < len; ++t) {
      e.ids.push_back(10 * len + t);
      e.train.push_back(t >= 2 ? 1 : 0);
    }
    ex.push_back(e);
  }
  const auto d = data::packed_rows(ex, 10, 0);
  ASSERT_EQ(d.inputs.sizes(), (std::vector<int64_t>{3, 10}));
  ASSERT_TRUE(d.segments.defined());
  auto row = [](const torch::Tensor& t, int64_t r) {
    auto c = t[r].contiguous();
    return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  };
  const int64_t I = data::kIgnoreLabel;
  EXPECT_EQ(row(d.segments, 0), (std::vector<int64_t>{0, 0, 0, 0, 0, 1, 1, 1, 1, 2}));
  EXPECT_EQ(row(d.inputs, 0), (std::vector<int64_t>{50, 51, 52, 53, 54, 40, 41, 42, 43, 0}));
  EXPECT_EQ(row(d.labels, 0), (std::vector<int64_t>{I, I, 52, 53, 54, I, I, 42, 43, I}));
  EXPECT_EQ(row(d.segments, 1), (std::vector<int64_t>{0, 0, 0, 0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(row(d.labels, 1), (std::vector<int64_t>{I, I, 62, 63, 64, 65, I, I, I, I}));
  EXPECT_EQ(row(d.segments, 2), std::vector<int64_t>(10, 0));
  EXPECT_EQ(row(d.inputs, 2)[9], 109);
}

TEST(ChatData, SplitsPackingAndTheMessage) {
  testkit::TempDir dir;
  std::string train;
  for (int i = 0; i < 20; ++i)
    train += R"({"messages": [{"role": "user", "content": "question )" + std::to_string(i) +
             R"("}, {"role": "assistant", "content": "answer )" + std::to_string(i) + R"("}]})" "\n";
  // One record whose answer starts past max_seq_len: dropped, and said so.
  train += R"({"messages": [{"role": "user", "content": ")" + std::string(200, 'x') +
           R"("}, {"role": "assistant", "content": "late"}]})" "\n";
  write(dir / "train.jsonl", train);
  write(dir / "test.jsonl", kGood + "\n" + kGood + "\n");
  const auto tok = qwen_like();
  auto o = data::ChatDataOptions()
               .train_file(dir / "train.jsonl")
               .test_file(dir / "test.jsonl")
               .chat_template(data::ChatTemplate::Chatml)
               .system("S")
               .max_seq_len(120)
               .val_fraction(0.25)
               .seed(3);
  std::string msg;
  auto s = data::load_chat_data(o, tok, &msg);
  // 21 records: 5 held out (seeded), 16 for training; the long one dropped wherever it went.
  EXPECT_EQ(s.train.size() + s.val.size(), 20);
  EXPECT_EQ(s.val.size() == 5 || s.val.size() == 4, true);
  EXPECT_EQ(s.test.size(), 2);
  EXPECT_EQ(s.train.inputs.size(1), 120);
  EXPECT_NE(msg.find("dropped: no response token left"), std::string::npos) << msg;
  // The system message is put first.
  auto row0 = s.test.inputs[0];
  EXPECT_EQ(tok.decode(std::vector<int64_t>(row0.data_ptr<int64_t>(), row0.data_ptr<int64_t>() + 10)),
            "<|im_start|>system\nS<|im_end|>");
  // The same seed splits the same way; packing changes the train rows only.
  auto packed = data::load_chat_data(o.packing(true), tok, &msg);
  EXPECT_TRUE(torch::equal(packed.val.inputs, s.val.inputs));
  EXPECT_FALSE(packed.val.segments.defined());
  ASSERT_TRUE(packed.train.segments.defined());
  EXPECT_EQ(packed.train.size(), (s.train.size() + 1) / 2);  // 50-52 tokens each: two per row of 120
  // Packing keeps every trained token.
  EXPECT_EQ((packed.train.labels != data::kIgnoreLabel).sum().item<int64_t>(),
            (s.train.labels != data::kIgnoreLabel).sum().item<int64_t>());
  // A template the tokenizer cannot write is refused before anything is read.
  EXPECT_NE(error_of([&] { data::load_chat_data(o.chat_template(data::ChatTemplate::Llama3), tok); }).find("<|begin_of_text|>"),
            std::string::npos);
}

namespace {

const std::string kTextLm =
    "model: {kind: text, task: causal_lm, vocab_size: 400, max_seq_len: 64, dim: 32, depth: 1, heads: 2}\n";

std::string recipe_error(const std::string& data_yaml) {
  return error_of([&] { parse_recipe(kTextLm + data_yaml, "r.yaml"); });
}

}  // namespace

TEST(ChatRecipe, KeysAndValues) {
  const Recipe r = parse_recipe(kTextLm +
                                    "data:\n  dataset: instruct\n  train_file: t.jsonl\n  template: alpaca\n"
                                    "  system: Be brief.\n  instruction_field: q\n  input_field: ctx\n  output_field: a\n"
                                    "  max_seq_len: 48\n",
                                "r.yaml");
  EXPECT_TRUE(r.data.is_chat());
  EXPECT_EQ(r.data.chat_template, data::ChatTemplate::Alpaca);
  EXPECT_EQ(r.data.system_prompt, "Be brief.");
  EXPECT_EQ(r.data.instruction_field, "q");
  EXPECT_EQ(r.data.input_field, "ctx");
  EXPECT_EQ(r.data.output_field, "a");
  EXPECT_EQ(r.data.max_seq_len, 48);
  EXPECT_FALSE(r.data.packing);
  const Recipe c = parse_recipe(kTextLm + "data: {dataset: chat, train_file: d, template: gpt2, messages_field: turns}\n", "r.yaml");
  EXPECT_EQ(c.data.chat_template, data::ChatTemplate::Plain);
  EXPECT_EQ(c.data.messages_field, "turns");
}

TEST(ChatRecipe, ErrorsNameLineColumnAndKey) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"data:\n  dataset: chat\n  train_file: t.jsonl\n", "r.yaml: data.template: auto guesses"},  // the default
      {"data:\n  dataset: chat\n  train_file: t.jsonl\n  template: auto\n", "r.yaml:5:13: data.template: auto guesses"},
      {"data:\n  dataset: chat\n  train_file: t.jsonl\n  template: plain\n  packing: true\n",
       "r.yaml:6:12: data.packing: needs a Hugging Face family"},
      {"data:\n  dataset: chat\n  train_file: t.jsonl\n  template: plain\n  max_seq_len: 65\n",
       "r.yaml:6:16: data.max_seq_len: must be in 0..64"},
      {"data:\n  dataset: chat\n  train_file: t.jsonl\n  template: plain\n  max_seq_len: 1\n",
       "r.yaml:6:16: data.max_seq_len: must be at least 2"},
      {"data:\n  dataset: chat\n  train_file: t.csv\n  format: csv\n  template: plain\n",
       "r.yaml:5:11: data.format: chat records (a list of messages each) are read from JSONL only"},
      {"data:\n  dataset: chat\n  train_file: t.jsonl\n  text_field: body\n  template: plain\n",
       "r.yaml:5:15: data.text_field: does not apply to dataset chat"},
      {"data:\n  dataset: chat\n  train_file: t.jsonl\n  output_field: a\n  template: plain\n",
       "r.yaml:5:17: data.output_field: only applies to dataset instruct"},
      {"data:\n  dataset: instruct\n  train_file: t.jsonl\n  messages_field: m\n  template: plain\n",
       "r.yaml:5:19: data.messages_field: only applies to dataset chat"},
      {"data:\n  dataset: instruct\n  train_file: t.jsonl\n  template: chatm\n",
       "r.yaml:5:13: data.template: 'chatm' is not one of"},
      {"data:\n  dataset: instruct\n  template: plain\n", "data.train_file: dataset instruct needs data.train_file"},
      {"data:\n  dataset: instruct\n  train_file: t.jsonl\n  template: plain\n  instruction_field: ''\n",
       "r.yaml:6:22: data.instruction_field: must name a field"},
      {"data:\n  dataset: text\n  train_file: t.jsonl\n  template: plain\n",
       "r.yaml:5:13: data.template: only applies to dataset instruct or chat"},
  };
  for (const auto& [yaml, want] : cases) {
    const std::string e = recipe_error(yaml);
    EXPECT_NE(e.find(want), std::string::npos) << "got: " << e << "\nwant: " << want;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  EXPECT_NE(recipe_error("data:\n  dataset: chat\n  train_file: t.jsonl\n  template: chatm\n").find("did you mean 'chatml'"),
            std::string::npos);
  // A classifier is not a causal LM.
  const std::string e = error_of([] {
    parse_recipe("model: {kind: text, task: classify, num_classes: 2, vocab_size: 400, dim: 32, depth: 1, heads: 2}\n"
                 "data: {dataset: instruct, train_file: t.jsonl, template: plain}\n",
                 "r.yaml");
  });
  EXPECT_NE(e.find("r.yaml:2:17: data.dataset: instruct needs a causal language model"), std::string::npos) << e;
}

// The recipe's keys reach the data: field names, the template, max_seq_len 0 = model.max_seq_len,
// the split; load_data says what it read.
TEST(ChatRecipe, LoadDataReadsTheRecipesRecords) {
  testkit::TempDir dir;
  std::string train;
  for (int i = 0; i < 10; ++i) train += R"({"q": "say )" + std::to_string(i) + R"(", "a": "number )" + std::to_string(i) + "\"}\n";
  write(dir / "train.jsonl", train);
  data::TokenizerTrainOptions o;
  o.vocab_size = 400;
  const auto tok = data::Tokenizer::train(testkit::synthetic_mails(200, 1).texts, o, dir / "t.model");
  const Recipe r = parse_recipe(kTextLm + "data:\n  dataset: instruct\n  train_file: " + (dir / "train.jsonl") +
                                    "\n  template: plain\n  instruction_field: q\n  output_field: a\n  val_fraction: 0.2\n"
                                    "  tokenizer: {model: " + (dir / "t.model") + "}\n",
                                "r.yaml");
  std::string msg;
  const auto s = load_data(r, dir / "run", &tok, &msg);
  EXPECT_EQ(s.train.size(), 8);
  EXPECT_EQ(s.val.size(), 2);
  EXPECT_EQ(s.train.inputs.sizes(), (std::vector<int64_t>{8, 64}));  // model.max_seq_len
  EXPECT_EQ(msg.rfind("chat data (plain): train 8 examples; val 2 examples", 0), 0u) << msg;
  // Row 0 is "user: say N\nassistant: number N" + eos, the answer trained.
  auto row = s.train.inputs[0];
  const int64_t n = (row != data::chat_pad_id(tok)).sum().item<int64_t>();
  std::vector<int64_t> ids(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + n), trained;
  for (int64_t t = 0; t < n; ++t)
    if (s.train.labels[0][t].item<int64_t>() != data::kIgnoreLabel) trained.push_back(ids[t]);
  EXPECT_EQ(tok.decode(ids).rfind("user: say ", 0), 0u) << tok.decode(ids);
  ASSERT_FALSE(trained.empty());
  EXPECT_EQ(trained.back(), tok.eos_id());
  EXPECT_EQ(tok.decode(trained).rfind("number ", 0), 0u) << tok.decode(trained);
}
