// A chat-format instruction set built from the prepared SpamAssassin splits, for fine-tuning a
// causal LM with data.dataset chat: "Is this mail spam? ..." -> spam/ham and "Write a subject
// line for this mail." -> its subject. `tunekit prepare spam_chat` writes .data/spam-chat/.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tunekit::data {

inline constexpr const char* kPreparedSpamChat = ".data/spam-chat";
inline constexpr const char* kSpamQuestion = "Is this mail spam? Answer spam or ham.";
inline constexpr const char* kSubjectQuestion = "Write a subject line for this mail.";

struct SpamChatOptions {
  std::string source = ".data/spam-assassin";  // the prepared SpamAssassin splits (checked against their MANIFEST.json)
  std::string dest = kPreparedSpamChat;
  int64_t max_chars = 600;  // a mail in a prompt is cut to this many characters (code points)
  bool force = false;       // redo even when the files are intact and made from the same source
};

// One chat example: the user's prompt and the assistant's answer; `task` is "spam" or "subject".
struct SpamChatExample {
  std::string id, task, prompt, answer;
};

// `text` cut to at most `max_chars` code points, never inside a UTF-8 sequence (invalid bytes
// count as one character each).
std::string cut_characters(const std::string& text, int64_t max_chars);

// The examples of one prepared mail ("Subject: ...\n" + body, label ham/spam): the spam question
// on the whole mail (cut), then the subject question on the body (cut) when the mail has a
// subject and a body.
std::vector<SpamChatExample> spam_chat_examples(const std::string& id, const std::string& label,
                                                const std::string& text, int64_t max_chars);

// The JSONL line of an example: {"id", "task", "messages": [{user}, {assistant}]}.
std::string spam_chat_line(const SpamChatExample& e);

// Writes dest/{train,val,test}.jsonl (each mail's examples in its own split, so nothing leaks),
// dest/test_spam.jsonl and dest/test_subject.jsonl (the test split's two tasks apart, for
// evaluating each) and dest/MANIFEST.json (sizes, MD5s, record counts, the source's MD5s). An
// intact result made from the same source files is kept. Returns a summary.
std::string prepare_spam_chat(const SpamChatOptions& options);

// Checks dest's files against its MANIFEST.json (throws naming the file).
void check_spam_chat(const std::string& dir);

}  // namespace tunekit::data
