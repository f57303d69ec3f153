// Hugging Face tokenizers (data/hf_tokenizer.cpp, data/bpe.cpp): small tokenizer.json files written
// here with ids worked out by hand from the merge ranks, the directory files (vocab.json +
// merges.txt, tokenizer_config.json, generation_config.json), hostile files, and a tokenizer.json
// built from a trained sentencepiece BPE model that must give sentencepiece's own ids.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <tuple>

#include "data/bpe.h"
#include "data/hf_tokenizer.h"
#include "data/tokenizer.h"
#include "tests/helpers.h"
#include "util/error.h"

using namespace tunekit;
using json = nlohmann::json;
using Ids = std::vector<int64_t>;
using testkit::error_of;

namespace {

const std::string kSpace = "\xc4\xa0";  // Ġ: the byte-level character of ' '

json byte_level_pre(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json bpe_model(const json& vocab, const json& merges) {
  return {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
          {"vocab", vocab}, {"merges", merges}};
}

data::Tokenizer load_json(const testkit::TempDir& dir, const json& j, const std::string& name = "tokenizer.json") {
  std::ofstream(dir / name) << j.dump(1);
  return data::Tokenizer::load(dir / name);
}

// GPT-2's shape: the ByteLevel pre-tokenizer with its regex, byte-level vocabulary and decoder.
json gpt2_like() {
  json vocab = {{"h", 0}, {"e", 1}, {"l", 2}, {"o", 3}, {kSpace, 4}, {"w", 5}, {"r", 6}, {"d", 7}, {"he", 8},
                {"lo", 9}, {"ll", 10}, {kSpace + "w", 11}, {"or", 12}, {kSpace + "wor", 13}, {"ld", 14}, {"!", 15}};
  json merges = {"l o", "h e", "l l", kSpace + " w", "o r", kSpace + "w or", "l d"};
  return {{"version", "1.0"}, {"added_tokens", json::array()}, {"normalizer", nullptr}, {"pre_tokenizer", byte_level_pre(true)},
          {"model", bpe_model(vocab, merges)}, {"decoder", {{"type", "ByteLevel"}}}};
}

}  // namespace

TEST(HfTokenizer, ByteLevelMergesByRank) {
  testkit::TempDir dir;
  auto tok = load_json(dir, gpt2_like());
  EXPECT_EQ(tok.kind(), "bpe-byte-level");
  EXPECT_EQ(tok.vocab_size(), 16);
  // "hello": l+o (rank 0) before h+e (1); l+l (2) never applies once "lo" took the second l.
  // " world": Ġ+w, o+r, Ġw+or, l+d. "!" is its own piece (GPT-2's regex).
  EXPECT_EQ(tok.encode("hello world!"), (Ids{8, 2, 9, 13, 14, 15}));
  // Two spaces: the regex's \s+(?!\S) leaves the last space to the word.
  EXPECT_EQ(tok.encode("hello  world"), (Ids{8, 2, 9, 4, 13, 14}));
  // Characters outside the vocabulary with no unk are dropped, as Hugging Face does.
  EXPECT_EQ(tok.encode("hello?"), (Ids{8, 2, 9}));
  for (const std::string s : {"hello world!", "hello  world", "world hello", ""}) EXPECT_EQ(tok.decode(tok.encode(s)), s);
  EXPECT_EQ(tok.piece(13), kSpace + "wor");
  EXPECT_EQ(tok.token_id(kSpace + "w"), 11);
  EXPECT_EQ(tok.token_id("nope"), -1);
}

TEST(HfTokenizer, AddedTokensMatchedBeforeBpe) {
  testkit::TempDir dir;
  json j = gpt2_like();
  j["added_tokens"] = {{{"id", 16}, {"content", "<|endoftext|>"}, {"special", true}},
                       {{"id", 17}, {"content", "<|im_start|>"}, {"special", true}},
                       {{"id", 18}, {"content", "<|im"}, {"special", false}},
                       {{"id", 19}, {"content", "<L>"}, {"lstrip", true}},
                       {{"id", 20}, {"content", "<R>"}, {"rstrip", true}},
                       {{"id", 21}, {"content", "<W>"}, {"single_word", true}}};
  auto tok = load_json(dir, j);
  EXPECT_EQ(tok.vocab_size(), 22);
  EXPECT_EQ(tok.encode("<|im_start|>hello"), (Ids{17, 8, 2, 9}));  // the longest added token wins
  EXPECT_EQ(tok.encode("<|imhello"), (Ids{18, 8, 2, 9}));
  EXPECT_EQ(tok.encode("hello<|endoftext|> world"), (Ids{8, 2, 9, 16, 13, 14}));
  EXPECT_EQ(tok.encode("hello <L> world"), (Ids{8, 2, 9, 19, 13, 14}));        // lstrip takes the space before
  EXPECT_EQ(tok.encode("hello <R> world"), (Ids{8, 2, 9, 4, 20, 5, 12, 14}));  // rstrip the space after
  EXPECT_EQ(tok.encode("hello <W> world"), (Ids{8, 2, 9, 4, 21, 13, 14}));
  EXPECT_EQ(tok.encode("hello<W>"), (Ids{8, 2, 9}));  // single_word: not inside a word (its characters are unknown)
  EXPECT_TRUE(tok.is_special(16));
  EXPECT_FALSE(tok.is_special(18));
  EXPECT_FALSE(tok.is_special(8));
  EXPECT_EQ(tok.token_id("<|im_start|>"), 17);
  EXPECT_EQ(tok.piece(17), "<|im_start|>");
  EXPECT_EQ(tok.decode({17, 8, 2, 9, 16, 13, 14}), "<|im_start|>hello<|endoftext|> world");
  EXPECT_EQ(tok.decode({17, 8, 2, 9, 16, 13, 14, 18}, /*skip_special=*/true), "hello world<|im");
  EXPECT_EQ(tok.decode({8, 2, 9, 999, -1}), "hello");  // out of range: skipped
}

TEST(HfTokenizer, SplitRegexDigitsAndIgnoreMerges) {
  testkit::TempDir dir;
  json vocab = {{"1", 0}, {"2", 1}, {"3", 2}, {"4", 3}, {"5", 4}, {"34", 5}, {"12", 6}, {"123", 7}, {"45", 8}, {kSpace, 9}};
  json merges = {"3 4", "1 2", "12 3", "4 5"};
  json j = gpt2_like();
  j["model"] = bpe_model(vocab, merges);
  // No split: 3+4 (rank 0) first, then 1+2; "12"+"34" is no merge.
  j["pre_tokenizer"] = byte_level_pre(false);
  EXPECT_EQ(load_json(dir, j).encode("12345"), (Ids{6, 5, 4}));
  // Llama 3's split regex (as its tokenizer.json carries it): digits in groups of at most three.
  const std::string llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"Regex", llama3}}}, {"behavior", "Isolated"}, {"invert", false}},
                          byte_level_pre(false)}}};
  auto llama = load_json(dir, j);
  EXPECT_EQ(llama.encode("12345"), (Ids{7, 8}));
  EXPECT_EQ(llama.encode("12345 12"), (Ids{7, 8, 9, 6}));
  EXPECT_EQ(llama.decode({7, 8, 9, 6}), "12345 12");
  // Digits(individual_digits): every digit alone.
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level_pre(false)}}};
  EXPECT_EQ(load_json(dir, j).encode("12345"), (Ids{0, 1, 2, 3, 4}));
  // Split on a literal string, the match removed.
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Removed"}, {"invert", false}},
                          byte_level_pre(false)}}};
  EXPECT_EQ(load_json(dir, j).encode("12 45"), (Ids{6, 8}));
  // ignore_merges: a whole pre-token in the vocabulary is one token, whatever the merges say.
  j["pre_tokenizer"] = byte_level_pre(false);
  j["model"]["vocab"]["12345"] = 10;
  EXPECT_EQ(load_json(dir, j).encode("12345"), (Ids{6, 5, 4}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(load_json(dir, j).encode("12345"), (Ids{10}));
  EXPECT_EQ(load_json(dir, j).encode("1234"), (Ids{6, 5}));
}

namespace {

// Llama 2 / Mistral: ▁ for spaces (a normalizer, or the Metaspace pre-tokenizer), byte fallback.
json spm_like(bool metaspace) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"<0x0A>", 3}, {"<0xC3>", 4}, {"<0xA9>", 5},
                {"\xe2\x96\x81", 6}, {"a", 7}, {"b", 8}, {"\xe2\x96\x81" "a", 9}, {"ab", 10}, {"\xe2\x96\x81" "ab", 11}};
  // The pair form of merges (a list of two-element lists).
  json merges = json::array({json::array({"\xe2\x96\x81", "a"}), json::array({"a", "b"}), json::array({"\xe2\x96\x81" "a", "b"})});
  json model = bpe_model(vocab, merges);
  model["byte_fallback"] = true;
  model["unk_token"] = "<unk>";
  json added = {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
           {{"id", 1}, {"content", "<s>"}, {"special", true}},
           {{"id", 2}, {"content", "</s>"}, {"special", true}}};
  json j = {{"added_tokens", added}, {"model", model}};
  if (metaspace) {
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xe2\x96\x81"}, {"prepend_scheme", "first"}, {"split", false}};
    j["decoder"] = {{"type", "Sequence"},
                    {"decoders",
                     {{{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                      {{"type", "Metaspace"}, {"replacement", "\xe2\x96\x81"}, {"prepend_scheme", "first"}, {"split", false}}}}};
  } else {
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Prepend"}, {"prepend", "\xe2\x96\x81"}},
                         {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xe2\x96\x81"}}}}};
    j["pre_tokenizer"] = nullptr;
    j["decoder"] = {{"type", "Sequence"},
                    {"decoders",
                     {{{"type", "Replace"}, {"pattern", {{"String", "\xe2\x96\x81"}}}, {"content", " "}},
                      {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                      {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  }
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}};
  return j;
}

}  // namespace

TEST(HfTokenizer, SentencepieceStyleSpacesAndByteFallback) {
  for (bool metaspace : {false, true}) {
    SCOPED_TRACE(metaspace ? "Metaspace pre-tokenizer" : "Prepend + Replace normalizer");
    testkit::TempDir dir;
    auto tok = load_json(dir, spm_like(metaspace));
    EXPECT_EQ(tok.kind(), "bpe-sentencepiece");
    EXPECT_EQ(tok.bos_id(), 1);  // the post-processor's first special token
    EXPECT_TRUE(tok.special().add_bos);
    EXPECT_EQ(tok.eos_id(), 2);
    EXPECT_EQ(tok.unk_id(), 0);
    // "▁ab▁ab": ▁+a at both places (leftmost first), then ▁a+b.
    EXPECT_EQ(tok.encode("ab ab"), (Ids{11, 11}));
    // é is not in the vocabulary: its bytes C3 A9; the newline is <0x0A>.
    EXPECT_EQ(tok.encode("b \xc3\xa9\n"), (Ids{6, 8, 6, 4, 5, 3}));
    EXPECT_EQ(tok.decode({6, 8, 6, 4, 5, 3}), "b \xc3\xa9\n");
    EXPECT_EQ(tok.encode("ab z"), (Ids{11, 6, 0}));  // z has no byte token: unk
    EXPECT_EQ(tok.decode({11, 11}), "ab ab");
    EXPECT_EQ(tok.decode({11, 4}), "ab\xef\xbf\xbd");  // a lone lead byte: U+FFFD
    EXPECT_EQ(tok.decode({1, 11, 2}, true), "ab");
    // After an added token: the Prepend normalizer runs on every piece of text (Hugging Face's
    // legacy Llama behaviour); Metaspace's prepend_scheme "first" only at the start of the text.
    EXPECT_EQ(tok.encode("</s>ab"), metaspace ? (Ids{2, 10}) : (Ids{2, 11}));
  }
}

TEST(HfTokenizer, InvalidUtf8BecomesReplacementCharacters) {
  using data::bpe::sanitize_utf8;
  // The Unicode Standard's own example (§3.9, Table 3-8): 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64.
  EXPECT_EQ(sanitize_utf8("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD" "d");
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(sanitize_utf8("\xED\xA0\x80"), r + r + r);  // a surrogate: ED A0 is no prefix of a valid sequence
  EXPECT_EQ(sanitize_utf8("\xF0\x80\x80"), r + r + r);  // overlong
  EXPECT_EQ(sanitize_utf8("\xC0\xAF"), r + r);
  EXPECT_EQ(sanitize_utf8("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(sanitize_utf8("x\xE2\x82"), "x" + r);              // truncated at the end: one
  EXPECT_EQ(sanitize_utf8("caf\xC3\xA9 \xF0\x9F\x98\x80"), "caf\xC3\xA9 \xF0\x9F\x98\x80");
  // Through a byte-level tokenizer with every byte: decode(encode(x)) is x with those replacements.
  testkit::TempDir dir;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[data::bpe::byte_to_unicode(static_cast<unsigned char>(b))] = b;
  json j = gpt2_like();
  j["model"] = bpe_model(vocab, json::array());
  auto tok = load_json(dir, j);
  EXPECT_EQ(tok.encode("a\xff" "b"), (Ids{'a', 0xef, 0xbf, 0xbd, 'b'}));
  EXPECT_EQ(tok.decode(tok.encode("a\xff" "b\xE2\x82")), "a" + r + "b" + r);
  std::mt19937 rng(5);
  for (int i = 0; i < 50; ++i) {
    std::string s;
    for (int k = 0; k < 40; ++k) s += static_cast<char>(rng() % 128);
    s += "\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb  \t\n";
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
}

TEST(HfTokenizer, Gpt2VocabMergesDirectoryAndConfigs) {
  testkit::TempDir dir;
  json vocab = {{"h", 0}, {"e", 1}, {"l", 2}, {"o", 3}, {"he", 4}, {"ll", 5}, {"hell", 6}, {"hello", 7}, {"<|endoftext|>", 8}, {"<pad>", 9}};
  std::ofstream(dir / "vocab.json") << vocab.dump();
  std::ofstream(dir / "merges.txt") << "#version: 0.2\nh e\r\nl l\nhe ll\nhell o\n";
  auto tok = data::Tokenizer::load(dir.path());
  EXPECT_EQ(tok.kind(), "bpe-byte-level");
  EXPECT_EQ(tok.encode("hello<|endoftext|>"), (Ids{7, 8}));  // <|endoftext|>: GPT-2's special token
  EXPECT_TRUE(tok.is_special(8));
  EXPECT_EQ(tok.eos_id(), 8);
  EXPECT_EQ(tok.bos_id(), 8);  // GPT-2: bos == eos
  EXPECT_EQ(tok.files().size(), 2u);
  EXPECT_EQ(data::Tokenizer::load(dir / "vocab.json").encode("hello"), (Ids{7}));
  // The directory's configs: token names as strings or {"content": ...} objects; eos lists.
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": {"content": "<|endoftext|>", "lstrip": false}, "eos_token": "<|endoftext|>", "pad_token": "<pad>",
            "unk_token": null, "add_bos_token": true, "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"})";
  std::ofstream(dir / "generation_config.json") << R"({"bos_token_id": 8, "eos_token_id": [8, 7], "pad_token_id": null})";
  tok = data::Tokenizer::load(dir.path());
  EXPECT_EQ(tok.pad_id(), 9);
  EXPECT_EQ(tok.eos_id(), 8);
  EXPECT_EQ(tok.special().stop, (Ids{8, 7}));
  EXPECT_TRUE(tok.special().add_bos);
  EXPECT_EQ(tok.special().chat_template, "{% for m in messages %}{{ m.content }}{% endfor %}");
  EXPECT_EQ(tok.files().size(), 4u);
  // Errors name the file and the key (or line).
  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": [8, 70]})";
  auto e = error_of([&] { data::Tokenizer::load(dir.path()); });
  EXPECT_NE(e.find("generation_config.json: eos_token_id[1]: id 70 is out of range"), std::string::npos) << e;
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "</s>"})";
  e = error_of([&] { data::Tokenizer::load(dir.path()); });
  EXPECT_NE(e.find("tokenizer_config.json: eos_token: '</s>' is not in the tokenizer's vocabulary"), std::string::npos) << e;
  std::ofstream(dir / "merges.txt") << "#version: 0.2\nh e\nl l x\n";
  e = error_of([&] { data::Tokenizer::load(dir.path()); });
  EXPECT_NE(e.find("merges.txt:3: 'l l x' is not two tokens"), std::string::npos) << e;
  std::ofstream(dir / "merges.txt") << "h e\nl q\n";
  e = error_of([&] { data::Tokenizer::load(dir.path()); });
  EXPECT_NE(e.find("merges.txt:2: 'q' is not in the vocabulary"), std::string::npos) << e;
}

TEST(HfTokenizer, HostileFilesGiveOneLineErrors) {
  testkit::TempDir dir;
  const json good = gpt2_like();
  auto with = [&](const std::function<void(json&)>& edit) {
    json j = good;
    edit(j);
    return j.dump();
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {good.dump().substr(0, 200), "not valid JSON"},
      {"[1, 2]", "must be a JSON object"},
      {with([](json& j) { j.erase("model"); }), ": model: is missing"},
      {with([](json& j) { j["model"]["type"] = "Unigram"; }), "model.type: Unigram is not supported (BPE only)"},
      {with([](json& j) { j["model"]["vocab"] = json::array({"h"}); }), "model.vocab: must be an object"},
      {with([](json& j) { j["model"]["vocab"]["x"] = "3"; }), "model.vocab.x: must be an integer id, not string"},
      {with([](json& j) { j["model"]["vocab"]["x"] = 500; }), "model.vocab.x: id 500 is out of range (the file has 17 tokens)"},
      {with([](json& j) { j["model"]["vocab"]["x"] = -2; }), "model.vocab.x: id -2 is out of range"},
      {with([](json& j) { j["model"]["vocab"]["x"] = 3; }), "id 3 is given to both"},
      {with([](json& j) { j["model"]["merges"].push_back("h q"); }), "model.merges[7]: 'q' is not in the vocabulary"},
      {with([](json& j) { j["model"]["merges"].push_back("h o"); }), "model.merges[7]: 'ho' (the merged token) is not in the vocabulary"},
      {with([](json& j) { j["model"]["merges"].push_back(3); }), "model.merges[7]: must be \"a b\" or [\"a\", \"b\"]"},
      {with([](json& j) { j["model"]["merges"].push_back("hel"); }), "model.merges[7]: 'hel' is not two tokens"},
      {with([](json& j) { j["model"]["unk_token"] = "<unk>"; }), "model.unk_token: '<unk>' is not in the vocabulary"},
      {with([](json& j) { j["model"]["dropout"] = 0.1; }), "model.dropout: BPE dropout is not supported"},
      {with([](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }), "pre_tokenizer.type: Whitespace is not supported"},
      {with([](json& j) { j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}}; }),
       "pre_tokenizer.pattern.Regex: invalid regular expression at offset 2"},
      {with([](json& j) { j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Sideways"}}; }),
       "pre_tokenizer.behavior: unknown behavior 'Sideways'"},
      {with([](json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", ""}}; }), "pre_tokenizer.replacement: is empty"},
      {with([](json& j) { j["normalizer"] = {{"type", "Precompiled"}}; }), "normalizer.type: Precompiled is not supported"},
      {with([](json& j) { j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}}}}}; }),
       "normalizer.normalizers[0].prepend: is missing"},
      {with([](json& j) { j["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", "1"}, {"stop", 0}}; }),
       "decoder.start: must be an integer id"},
      {with([](json& j) { j["added_tokens"] = {{{"id", 0}, {"content", "<x>"}}}; }), "added_tokens[0].id: id 0 is 'h' in the vocabulary but '<x>' here"},
      {with([](json& j) { j["added_tokens"] = {{{"id", 16}, {"content", "he"}}}; }), "added_tokens[0].content: 'he' has id 8 in the vocabulary, not 16"},
      {with([](json& j) { j["added_tokens"] = {{{"id", 16}, {"content", "<x>"}}, {{"id", 16}, {"content", "<y>"}}}; }),
       "added_tokens[1].id: id 16 is given twice"},
      {with([](json& j) { j["added_tokens"] = {{{"id", 16}, {"content", 5}}}; }), "added_tokens[0].content: must be a string"},
      {with([](json& j) { j["added_tokens"] = {{{"id", 90}, {"content", "<x>"}}}; }), "added_tokens[0].id: id 90 is out of range"},
  };
  for (const auto& [text, expected] : cases) {
    std::ofstream(dir / "tokenizer.json", std::ios::trunc) << text;
    const std::string e = error_of([&] { data::Tokenizer::load(dir / "tokenizer.json"); });
    EXPECT_NE(e.find(dir / "tokenizer.json"), std::string::npos) << e;
    EXPECT_NE(e.find(expected), std::string::npos) << "expected: " << expected << "\n got: " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  EXPECT_NE(error_of([&] { data::Tokenizer::load(dir.path() + "/nothing/"); }).find("nothing"), std::string::npos);
}

namespace {

// Varied text: words of several scripts, digits, punctuation, runs of spaces, tabs, emoji.
std::string random_text(std::mt19937& rng, int words) {
  static const std::vector<std::string> vocabulary = {
      "the", "mail", "spam", "offer", "free", "money", "click", "here", "meeting", "tomorrow", "hello", "world",
      "café", "naïve", "Grüße", "日本語", "テスト", "🎉", "don't", "it's", "v1.2", "2024", "$100", "e-mail", "Re:",
      "Subject:", "http://example.com/x?y=1", "UNSUBSCRIBE", "wonderful", "reply", "list", "(see", "below)", "100%",
      "señor", "Ελληνικά", "русский", "—", "...", "a", "I", "x", "12345678", "3.14159"};
  static const std::vector<std::string> gaps = {" ", " ", " ", " ", "  ", ", ", ". ", "\t", " - ", "   "};
  std::string s;
  for (int i = 0; i < words; ++i) {
    if (i) s += gaps[rng() % gaps.size()];
    s += vocabulary[rng() % vocabulary.size()];
  }
  return s;
}

bool is_byte_piece(const std::string& p) { return p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>'; }

// The tokenizer.json Hugging Face's converter writes for a sentencepiece BPE model (Llama 2's
// shape): the pieces as the vocabulary; as merges, every split of a piece into two pieces, ranked
// by the merged piece's id (sentencepiece merges the highest-scoring piece first, and a BPE
// model's scores fall with the id), then by the halves' ids. Control, unknown and byte pieces are
// never merge results in sentencepiece, so they give no merges.
json tokenizer_json_from_sentencepiece(const data::Tokenizer& spm) {
  json vocab = json::object(), added = json::array();
  struct Merge {
    int64_t merged, left, right;
    std::string l, r;
  };
  std::vector<Merge> merges;
  for (int64_t id = 0; id < spm.vocab_size(); ++id) {
    const std::string p = spm.piece(id);
    vocab[p] = id;
    if (spm.is_special(id)) {
      added.push_back({{"id", id}, {"content", p}, {"special", true}, {"normalized", false}});
      continue;
    }
    if (is_byte_piece(p)) continue;
    for (size_t k = 1; k < p.size(); ++k) {
      if ((static_cast<unsigned char>(p[k]) & 0xc0) == 0x80) continue;  // not between characters
      const int64_t l = spm.token_id(p.substr(0, k)), r = spm.token_id(p.substr(k));
      if (l >= 0 && r >= 0 && !spm.is_special(l) && !spm.is_special(r)) merges.push_back({id, l, r, p.substr(0, k), p.substr(k)});
    }
  }
  std::sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    return std::tie(a.merged, a.left, a.right) < std::tie(b.merged, b.left, b.right);
  });
  json merge_list = json::array();
  for (const auto& m : merges) merge_list.push_back({m.l, m.r});
  json model = bpe_model(vocab, merge_list);
  model["byte_fallback"] = true;
  model["unk_token"] = spm.piece(spm.unk_id());
  const std::string space = "\xe2\x96\x81";
  return {{"added_tokens", added},
          {"normalizer", {{"type", "Sequence"},
                          {"normalizers", {{{"type", "Prepend"}, {"prepend", space}},
                                           {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}}}}}},
          {"pre_tokenizer", nullptr},
          {"model", model},
          {"decoder", {{"type", "Sequence"},
                       {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
                                     {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                     {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}}};
}

}  // namespace

// A tokenizer.json converted from a sentencepiece BPE model gives sentencepiece's ids. The model
// is trained with the identity normalization (sentencepiece's default nmt_nfkc also applies NFKC
// and collapses runs of spaces, which Llama 2's tokenizer.json does not do). Texts holding
// "<s>", "</s>", "<unk>" or "<pad>" are left out: Hugging Face matches them as special tokens in
// the text, sentencepiece encodes them as characters.
TEST(HfTokenizer, SentencepieceBpeEquivalence) {
  testkit::TempDir dir;
  std::mt19937 rng(11);
  std::vector<std::string> corpus;
  for (int i = 0; i < 600; ++i) corpus.push_back(random_text(rng, 5 + static_cast<int>(rng() % 30)));
  data::TokenizerTrainOptions o;
  o.type = "bpe";
  o.vocab_size = 700;
  o.normalization = "identity";
  const auto spm = data::Tokenizer::train(corpus, o, dir / "spm.model");
  ASSERT_GT(spm.vocab_size(), 400);
  std::ofstream(dir / "tokenizer.json") << tokenizer_json_from_sentencepiece(spm).dump();
  const auto hf = data::Tokenizer::load(dir / "tokenizer.json");
  EXPECT_EQ(hf.kind(), "bpe-sentencepiece");
  EXPECT_EQ(hf.vocab_size(), spm.vocab_size());
  std::vector<std::string> texts = {"", " ", "  leading spaces", "trailing  ", "tab\tand\nnew line\n", "Ωμέγα unseen",
                                    "😀😃 emoji", "ÀÉÎõü", "a  b   c    d", "x", "3.14159265358979", "日本語のテスト"};
  std::mt19937 rng2(23);
  while (texts.size() < 400) texts.push_back(random_text(rng2, 1 + static_cast<int>(rng2() % 60)));
  int same = 0, bytes_seen = 0;
  for (const auto& t : texts) {
    const Ids expected = spm.encode(t), got = hf.encode(t);
    same += expected == got;
    EXPECT_EQ(got, expected) << "text: '" << t << "'";
    EXPECT_EQ(hf.decode(got), t);
    for (auto id : got) bytes_seen += is_byte_piece(hf.piece(id));
  }
  EXPECT_EQ(same, static_cast<int>(texts.size()));
  EXPECT_GT(bytes_seen, 0);  // byte fallback was exercised
  // A directory with tokenizer.model and a tokenizer_config.json (Llama 2's files): the config's names win.
  std::filesystem::create_directories(dir / "llama");
  std::filesystem::copy_file(dir / "spm.model", dir / "llama/tokenizer.model");
  std::ofstream(dir / "llama/tokenizer_config.json") << R"({"eos_token": {"content": "<pad>"}, "add_bos_token": false})";
  const auto llama = data::Tokenizer::load(dir / "llama");
  EXPECT_EQ(llama.kind(), "sentencepiece");
  EXPECT_EQ(llama.eos_id(), 3);
  EXPECT_EQ(llama.special().stop, (Ids{3}));
  EXPECT_FALSE(llama.special().add_bos);
  EXPECT_EQ(llama.bos_id(), 1);
  EXPECT_EQ(llama.files().size(), 2u);
}
