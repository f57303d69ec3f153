#include "data/chat.h"

#include <fmt/format.h>

#include <algorithm>

#include "data/chat_data.h"
#include "util/error.h"

namespace tunekit::data {
namespace {

// A template's output before tokenisation: text, or one special token (an id), and whether the
// loss covers it.
struct Piece {
  std::string text;
  int64_t special = -1;
  bool train = false;
};
using Pieces = std::vector<Piece>;

constexpr const char* kAlpacaIntro =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";
constexpr const char* kAlpacaIntroInput =
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
    "response that appropriately completes the request.";

std::string tokenizer_name(const Tokenizer& tok) { return tok.path().empty() ? tok.kind() : tok.path(); }

// The id of a special token the template writes, or a one-line error naming it and the template.
int64_t need_token(const Tokenizer& tok, const std::string& piece, ChatTemplate t) {
  const int64_t id = tok.token_id(piece);
  if (id < 0)
    throw Error(fmt::format("chat template {}: the tokenizer ({}) has no token {} (choose another data.template)",
                            to_string(t), tokenizer_name(tok), piece));
  return id;
}

int64_t need_id(int64_t id, const char* what, const Tokenizer& tok, ChatTemplate t) {
  if (id < 0)
    throw Error(fmt::format("chat template {}: the tokenizer ({}) has no {} token (choose another data.template)",
                            to_string(t), tokenizer_name(tok), what));
  return id;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

Piece text(std::string t, bool train = false) { return {std::move(t), -1, train}; }
Piece special(int64_t id, bool train = false) { return {"", id, train}; }

// <|im_start|>role\ncontent<|im_end|>\n per message (ChatML, Qwen2's template without its default
// system message); the assistant's content and its <|im_end|> are trained.
Pieces chatml(const std::vector<ChatMessage>& ms, const Tokenizer& tok, bool prompt) {
  const int64_t start = need_token(tok, "<|im_start|>", ChatTemplate::Chatml);
  const int64_t end = need_token(tok, "<|im_end|>", ChatTemplate::Chatml);
  Pieces p;
  for (const auto& m : ms) {
    const bool a = m.role == "assistant";
    p.insert(p.end(), {special(start), text(m.role + "\n"), text(m.content, a), special(end, a), text("\n")});
  }
  if (prompt) p.insert(p.end(), {special(start), text("assistant\n")});
  return p;
}

// <|begin_of_text|> then <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> per message,
// content trimmed (Llama 3's template).
Pieces llama3(const std::vector<ChatMessage>& ms, const Tokenizer& tok, bool prompt) {
  const auto t = ChatTemplate::Llama3;
  const int64_t begin = need_token(tok, "<|begin_of_text|>", t), head = need_token(tok, "<|start_header_id|>", t),
                head_end = need_token(tok, "<|end_header_id|>", t), eot = need_token(tok, "<|eot_id|>", t);
  Pieces p{special(begin)};
  for (const auto& m : ms) {
    const bool a = m.role == "assistant";
    p.insert(p.end(), {special(head), text(m.role), special(head_end), text("\n\n"), text(trim(m.content), a),
                       special(eot, a)});
  }
  if (prompt) p.insert(p.end(), {special(head), text("assistant"), special(head_end), text("\n\n")});
  return p;
}

// <s>[INST] user [/INST] answer</s>[INST] user [/INST] answer</s> (Mistral's v1 layout, Llama 2's
// without <<SYS>>): a system message is put before the first user message, "\n\n" between. The
// space before the answer is part of the trained text (sentencepiece's ▁ of its first word).
Pieces mistral(const std::vector<ChatMessage>& ms, const Tokenizer& tok, bool prompt) {
  const auto t = ChatTemplate::Mistral;
  const int64_t bos = need_id(tok.bos_id(), "bos (<s>)", tok, t), eos = need_id(tok.eos_id(), "eos (</s>)", tok, t);
  Pieces p{special(bos)};
  std::string system;
  for (const auto& m : ms) {
    if (m.role == "system") {
      system = m.content + "\n\n";
    } else if (m.role == "user") {
      p.push_back(text("[INST] " + system + m.content + " [/INST]"));
      system.clear();
    } else {
      p.insert(p.end(), {text(" " + m.content, true), special(eos, true)});
    }
  }
  (void)prompt;  // the prompt ends at " [/INST]"; the answer follows
  return p;
}

// "role: content" lines (GPT-2 and models without a template): each answer ends with eos. The
// space after "assistant:" is part of the trained text.
Pieces plain(const std::vector<ChatMessage>& ms, const Tokenizer& tok, bool prompt) {
  const int64_t eos = need_id(tok.eos_id(), "eos", tok, ChatTemplate::Plain);
  Pieces p;
  if (tok.special().add_bos && tok.bos_id() >= 0) p.push_back(special(tok.bos_id()));
  for (size_t i = 0; i < ms.size(); ++i) {
    const bool a = ms[i].role == "assistant";
    p.push_back(text((i ? "\n" : "") + ms[i].role + ":"));
    p.push_back(text(" " + ms[i].content, a));
    if (a) p.push_back(special(eos, true));
  }
  if (prompt) p.push_back(text(std::string(ms.empty() ? "" : "\n") + "assistant:"));
  return p;
}

// Alpaca: the intro (or the system message), then "### Instruction:" / "### Input:" /
// "### Response:" sections; the response and its eos are trained. A later turn starts with
// "\n\n### Instruction:".
Pieces alpaca_pieces(const std::string& intro, const std::vector<std::pair<std::string, std::string>>& turns,
                     const std::string& input, const Tokenizer& tok, bool prompt) {
  const int64_t eos = need_id(tok.eos_id(), "eos", tok, ChatTemplate::Alpaca);
  Pieces p;
  if (tok.special().add_bos && tok.bos_id() >= 0) p.push_back(special(tok.bos_id()));
  std::string head = intro;
  for (size_t i = 0; i < turns.size(); ++i) {
    head += "\n\n### Instruction:\n" + turns[i].first;
    if (i == 0 && !input.empty()) head += "\n\n### Input:\n" + input;
    head += "\n\n### Response:\n";
    p.push_back(text(head));
    head.clear();
    if (i + 1 < turns.size() || !prompt) p.insert(p.end(), {text(turns[i].second, true), special(eos, true)});
  }
  return p;
}

Pieces alpaca(const std::vector<ChatMessage>& ms, const Tokenizer& tok, bool prompt) {
  std::string intro = kAlpacaIntro;
  std::vector<std::pair<std::string, std::string>> turns;
  for (const auto& m : ms) {
    if (m.role == "system") intro = m.content;
    else if (m.role == "user") turns.emplace_back(m.content, "");
    else turns.back().second = m.content;
  }
  return alpaca_pieces(intro, turns, "", tok, prompt);
}

Pieces layout(ChatTemplate t, const std::vector<ChatMessage>& ms, const Tokenizer& tok, bool prompt) {
  switch (t) {
    case ChatTemplate::Chatml: return chatml(ms, tok, prompt);
    case ChatTemplate::Llama3: return llama3(ms, tok, prompt);
    case ChatTemplate::Mistral: return mistral(ms, tok, prompt);
    case ChatTemplate::Plain: return plain(ms, tok, prompt);
    case ChatTemplate::Alpaca: return alpaca(ms, tok, prompt);
    case ChatTemplate::Auto: break;
  }
  throw Error("chat template auto must be resolved (guess_chat_template) before rendering");
}

size_t common_prefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// Text pieces [begin, end) between two special tokens are tokenised together, as the model's
// tokenizer reads the rendered text; where the trained flag changes inside, the boundary is where
// the ids of the text before it stop agreeing with the whole run's (a token spanning the boundary
// counts as the later part's).
void encode_run(Pieces::const_iterator begin, Pieces::const_iterator end, const Tokenizer& tok, RenderedChat& out) {
  std::string all;
  for (auto it = begin; it != end; ++it) all += it->text;
  if (all.empty()) return;
  const std::vector<int64_t> ids = tok.encode(all);
  std::vector<uint8_t> train(ids.size(), begin->train ? 1 : 0);
  std::string prefix = begin->text;
  size_t from = 0;
  for (auto it = begin + 1; it != end; prefix += it->text, ++it) {
    if (it->train == (it - 1)->train) continue;
    from = std::max(from, common_prefix(tok.encode(prefix), ids));
    std::fill(train.begin() + static_cast<std::ptrdiff_t>(from), train.end(), it->train ? 1 : 0);
  }
  out.ids.insert(out.ids.end(), ids.begin(), ids.end());
  out.train.insert(out.train.end(), train.begin(), train.end());
}

RenderedChat encode_pieces(const Pieces& p, const Tokenizer& tok) {
  RenderedChat out;
  for (auto it = p.begin(); it != p.end();) {
    if (it->special >= 0) {
      out.ids.push_back(it->special);
      out.train.push_back(it->train ? 1 : 0);
      ++it;
      continue;
    }
    auto end = std::find_if(it, p.end(), [](const Piece& x) { return x.special >= 0; });
    encode_run(it, end, tok, out);
    it = end;
  }
  return out;
}

void require_conversation(const std::vector<ChatMessage>& ms, bool prompt) {
  const std::string problem = conversation_problem(ms, prompt);
  if (!problem.empty()) throw Error(problem);
}

}  // namespace

std::string conversation_problem(const std::vector<ChatMessage>& ms, bool prompt) {
  if (ms.empty()) return "messages: no messages";
  bool assistant = false;
  size_t first = ms[0].role == "system" ? 1 : 0;
  for (size_t i = 0; i < ms.size(); ++i) {
    const std::string& r = ms[i].role;
    const std::string at = fmt::format("messages[{}]", i);
    if (r != "system" && r != "user" && r != "assistant")
      return fmt::format("{}.role: '{}' is not system, user or assistant", at, r);
    if (r == "system" && i > 0) return fmt::format("{}.role: a system message may only come first", at);
    if (i >= first) {
      const char* want = (i - first) % 2 == 0 ? "user" : "assistant";
      if (r != want)
        return fmt::format("{}.role: '{}' where the {}'s turn belongs (after an optional system message, user and "
                           "assistant turns alternate, starting with a user's)",
                           at, r, want);
    }
    if (ms[i].content.find_first_not_of(" \t\r\n") == std::string::npos)
      return fmt::format("{}.content: empty", at);
    assistant = assistant || r == "assistant";
  }
  if (prompt && ms.back().role != "user")
    return fmt::format("messages[{}].role: a prompt must end with a user message", ms.size() - 1);
  if (!prompt && !assistant) return "messages: no assistant turn (nothing to train on)";
  if (!prompt && ms.back().role != "assistant")
    return fmt::format("messages[{}].role: a conversation to train on ends with an assistant turn", ms.size() - 1);
  return "";
}

void check_chat_template(ChatTemplate t, const Tokenizer& tok) {
  layout(t, {{"user", "x"}, {"assistant", "y"}}, tok, false);
}

RenderedChat render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages, const Tokenizer& tok) {
  require_conversation(messages, false);
  return encode_pieces(layout(t, messages, tok, false), tok);
}

std::vector<int64_t> render_prompt(ChatTemplate t, const std::vector<ChatMessage>& messages, const Tokenizer& tok) {
  require_conversation(messages, true);
  return encode_pieces(layout(t, messages, tok, true), tok).ids;
}

RenderedChat render_instruction(ChatTemplate t, const std::string& system, const std::string& instruction,
                                const std::string& input, const std::string& output, const Tokenizer& tok) {
  if (t == ChatTemplate::Alpaca) {
    const std::string intro = !system.empty() ? system : input.empty() ? kAlpacaIntro : kAlpacaIntroInput;
    return encode_pieces(alpaca_pieces(intro, {{instruction, output}}, input, tok, false), tok);
  }
  std::vector<ChatMessage> ms;
  if (!system.empty()) ms.push_back({"system", system});
  ms.push_back({"user", input.empty() ? instruction : instruction + "\n\n" + input});
  ms.push_back({"assistant", output});
  return render_chat(t, ms, tok);
}

ChatTemplate guess_chat_template(const Tokenizer& tok, const std::string& model_type) {
  const std::string& jinja = tok.special().chat_template;
  auto has = [&](const char* s) { return jinja.find(s) != std::string::npos; };
  if (has("<|im_start|>")) return ChatTemplate::Chatml;
  if (has("<|start_header_id|>")) return ChatTemplate::Llama3;
  if (has("[INST]")) return ChatTemplate::Mistral;
  if (has("### Instruction")) return ChatTemplate::Alpaca;
  if (tok.token_id("<|im_start|>") >= 0 && tok.token_id("<|im_end|>") >= 0) return ChatTemplate::Chatml;
  if (tok.token_id("<|start_header_id|>") >= 0 && tok.token_id("<|eot_id|>") >= 0) return ChatTemplate::Llama3;
  if (model_type == "qwen2") return ChatTemplate::Chatml;
  if (model_type == "mistral") return ChatTemplate::Mistral;
  // Llama without Llama 3's header tokens: Llama 2's [INST] when it has bos and eos.
  if (model_type == "llama" && tok.bos_id() >= 0 && tok.eos_id() >= 0) return ChatTemplate::Mistral;
  return ChatTemplate::Plain;
}

}  // namespace tunekit::data
