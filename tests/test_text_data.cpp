// Language data: the sentencepiece tokeniser, the JSONL/CSV/TSV readers, SpamAssassin
// preparation (mail cleaning, checksums, de-duplication, splits, corruption detection).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "data/md5.h"
#include "data/spam_assassin.h"
#include "data/text_file.h"
#include "data/tokenizer.h"
#include "util/error.h"
#include "tests/helpers.h"
#include "tests/text_helpers.h"

using namespace tunekit;
namespace fs = std::filesystem;

using testkit::error_of;

TEST(Md5, KnownDigests) {  // RFC 1321 test suite
  EXPECT_EQ(data::md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(data::md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(data::md5_hex("12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
            "57edf4a22be3c955ac49da2e2107b67a");
}

TEST(Tokenizer, TrainEncodeDecodeRoundTrip) {
  testkit::TempDir dir;
  auto texts = testkit::synthetic_mails(200, 1).texts;
  for (const std::string type : {"unigram", "bpe"}) {
    data::TokenizerTrainOptions o;
    o.type = type;
    o.vocab_size = 400;
    auto tok = data::Tokenizer::train(texts, o, dir / (type + ".model"));
    EXPECT_LE(tok.vocab_size(), 400) << type;
    EXPECT_GT(tok.vocab_size(), 260) << type;  // 256 byte pieces + specials + learned pieces
    EXPECT_EQ(tok.unk_id(), 0);
    EXPECT_EQ(tok.bos_id(), 1);
    EXPECT_EQ(tok.eos_id(), 2);
    EXPECT_EQ(tok.pad_id(), 3);
    for (int i = 0; i < 20; ++i) {
      auto ids = tok.encode(texts[i]);
      EXPECT_FALSE(ids.empty());
      for (auto id : ids) EXPECT_TRUE(id >= 4 && id < tok.vocab_size()) << id;
      // Sentencepiece normalises blank space; the text otherwise comes back exactly.
      EXPECT_EQ(tok.decode(ids), texts[i]) << type;
    }
    // Characters never seen in training round-trip through byte fallback.
    const std::string unseen = "Grüße, naïve café — 42 ≥ 7";
    EXPECT_EQ(tok.decode(tok.encode(unseen)), unseen) << type;
    // Reloading the file gives the same ids; training again gives the same file.
    auto again = data::Tokenizer::load(dir / (type + ".model"));
    EXPECT_EQ(again.encode(texts[3]), tok.encode(texts[3]));
    data::Tokenizer::train(texts, o, dir / (type + "2.model"));
    EXPECT_EQ(testkit::read_file(dir / (type + ".model")), testkit::read_file(dir / (type + "2.model"))) << type;
  }
  EXPECT_NE(error_of([&] { data::Tokenizer::load(dir / "missing.model"); }).find("not found"), std::string::npos);
  std::ofstream(dir / "junk.model") << "not a model";
  EXPECT_NE(error_of([&] { data::Tokenizer::load(dir / "junk.model"); }).find("not a sentencepiece model"),
            std::string::npos);
}

TEST(TextFiles, JsonlCsvAndTsvReadTheSameRecords) {
  testkit::TempDir dir;
  std::ofstream(dir / "a.jsonl") << R"({"text": "hello, \"world\"", "label": "pos", "g": "x"})" << "\n\n"
                                 << R"({"text": "two\nlines", "label": 1, "g": "y"})" << "\n";
  std::ofstream(dir / "a.csv") << "g,text,label\r\nx,\"hello, \"\"world\"\"\",pos\r\ny,\"two\nlines\",1\r\n";
  std::ofstream(dir / "a.tsv") << "label\ttext\tg\npos\thello, \"world\"\tx\n1\ttwo lines\ty\n";
  for (const std::string ext : {"jsonl", "csv", "tsv"}) {
    auto recs = data::read_text_file({dir / ("a." + ext), "auto", "text", "label", "g"});
    ASSERT_EQ(recs.size(), 2u) << ext;
    EXPECT_EQ(recs[0].text, "hello, \"world\"") << ext;
    EXPECT_EQ(recs[0].label, "pos") << ext;
    EXPECT_EQ(recs[0].group, "x") << ext;
    EXPECT_EQ(recs[1].label, "1") << ext;
    EXPECT_EQ(recs[1].group, "y") << ext;
    EXPECT_EQ(recs[1].text, ext == "tsv" ? "two lines" : "two\nlines") << ext;
  }
  EXPECT_EQ(data::read_text_file({dir / "a.jsonl"})[1].line, 3);  // blank lines count
  EXPECT_EQ(data::read_text_file({dir / "a.csv", "auto", "text", "label", ""})[1].line, 3);
  // No label field asked for (language-model text).
  EXPECT_EQ(data::read_text_file({dir / "a.tsv", "auto", "text", "", ""})[0].label, "");
}

TEST(TextFiles, MalformedLinesNameTheFileAndLine) {
  testkit::TempDir dir;
  std::ofstream(dir / "bad.jsonl") << R"({"text": "ok", "label": "a"})" << "\n"
                                   << R"({"text": "ok", "label": "b"})" << "\n"
                                   << R"({"text": "broken, "label": "a"})" << "\n";
  EXPECT_NE(error_of([&] { data::read_text_file({dir / "bad.jsonl"}); }).find(dir / "bad.jsonl:3: invalid JSON"),
            std::string::npos);
  std::ofstream(dir / "nolabel.jsonl") << R"({"text": "ok", "label": "a"})" << "\n" << R"({"text": "ok"})" << "\n";
  EXPECT_NE(error_of([&] { data::read_text_file({dir / "nolabel.jsonl"}); }).find(dir / "nolabel.jsonl:2: no label field 'label'"),
            std::string::npos);
  std::ofstream(dir / "bad.csv") << "text,label\n\"a, b\",x\nc,y\nd,e,f\n";
  EXPECT_NE(error_of([&] { data::read_text_file({dir / "bad.csv"}); }).find(dir / "bad.csv:4: expected 2 fields"),
            std::string::npos);
  std::ofstream(dir / "open.csv") << "text,label\n\"never closed,x\nmore\n";
  EXPECT_NE(error_of([&] { data::read_text_file({dir / "open.csv"}); }).find(dir / "open.csv:2: quoted field is never closed"),
            std::string::npos);
  std::ofstream(dir / "bad.tsv") << "text\tlabel\na\tx\nb\n";
  EXPECT_NE(error_of([&] { data::read_text_file({dir / "bad.tsv"}); }).find(dir / "bad.tsv:3: expected 2 fields"),
            std::string::npos);
  EXPECT_NE(error_of([&] { data::read_text_file({dir / "bad.tsv", "auto", "sentence"}); }).find("no text column 'sentence'"),
            std::string::npos);
  std::ofstream(dir / "x.txt") << "x";
  EXPECT_NE(error_of([&] { data::read_text_file({dir / "x.txt"}); }).find("cannot tell the format"), std::string::npos);
}

TEST(SpamAssassin, MailKeepsSubjectAndReadableBody) {
  const std::string raw =
      "From someone@example.com  Thu Aug 22 12:36:23 2002\r\n"
      "Received: from mail (localhost [127.0.0.1])\r\n\tby host; Thu, 22 Aug 2002\r\n"
      "Subject: Cheap   offer\r\n  for you\r\n"
      "Content-Type: multipart/alternative; boundary=\"BND\"\r\n"
      "\r\n"
      "preamble\r\n"
      "--BND\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
      "Caf=E9 deals =3D great,=\r\n still.\r\n"
      "--BND\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
      "PGh0bWw+PGJvZHk+PHA+Q2xpY2sgPGI+aGVyZTwvYj4gJmFtcDsgd2luPC9wPjwvYm9keT48L2h0bWw+\r\n"  // <html><body><p>Click <b>here</b> &amp; win</p></body></html>
      "--BND\r\nContent-Type: image/gif\r\nContent-Transfer-Encoding: base64\r\n\r\nR0lGODlhAQABAAAAACw=\r\n"
      "--BND--\r\n";
  std::string text = data::mail_to_text(raw);
  EXPECT_EQ(text.rfind("Subject: Cheap offer for you\n", 0), 0u) << text;
  EXPECT_NE(text.find("Caf\xc3\xa9 deals = great, still."), std::string::npos) << text;  // Latin-1 é -> UTF-8
  EXPECT_NE(text.find("Click here & win"), std::string::npos) << text;
  EXPECT_EQ(text.find("Received"), std::string::npos) << text;
  EXPECT_EQ(text.find("R0lGOD"), std::string::npos) << text;  // the image attachment is dropped
  EXPECT_EQ(text.find("Content-Type"), std::string::npos) << text;
  // A plain message: the body as is, blank space collapsed.
  EXPECT_EQ(data::mail_to_text("Subject: hi\nX-Spam: no\n\nline  one\n\n\n\nline two\n"), "Subject: hi\nline one\n\nline two");
}

TEST(SpamAssassin, PreparesSplitsChecksChecksumsAndRedoesDamage) {
  testkit::TempDir dir;
  auto pkg = testkit::write_spam_package(dir / "src", 20);  // 5 groups x 20 mails, 2 duplicate texts
  auto corpus = data::read_spam_package(pkg + "/package/data", /*check_counts=*/false);
  EXPECT_EQ(corpus.read, 100);
  EXPECT_EQ(corpus.duplicate_texts, 2);
  EXPECT_EQ(corpus.mails.size(), 98u);
  // The pinned package's group sizes are enforced by default.
  EXPECT_NE(error_of([&] { data::read_spam_package(pkg + "/package/data"); }).find("expected 2500"), std::string::npos);

  // Through `prepare` with a tarball (no npm needed): splits stratified by group, seeded.
  std::string tgz = dir / "pkg.tgz";
  ASSERT_EQ(std::system(("tar -czf " + tgz + " -C " + pkg + " package").c_str()), 0);
  data::SpamPrepareOptions o;
  o.dest = dir / "out";
  o.cache = dir / "cache";
  o.tarball = tgz;
  o.check_counts = false;
  o.quiet = true;
  data::prepare_spam_assassin(o);
  EXPECT_TRUE(data::spam_splits_intact(o.dest));
  auto train = data::read_text_file({o.dest + "/train.jsonl", "jsonl", "text", "label", "group"});
  auto test = data::read_text_file({o.dest + "/test.jsonl", "jsonl", "text", "label", "group"});
  EXPECT_EQ(test.size(), 10u);  // 10% of each group of ~20
  std::map<std::string, int> groups;
  for (const auto& r : test) {
    ++groups[r.group];
    EXPECT_EQ(r.label, r.group.rfind("spam", 0) == 0 ? "spam" : "ham");
  }
  EXPECT_EQ(groups.size(), 5u);
  const std::string first = testkit::read_file(o.dest + "/train.jsonl");
  // Kept when intact; a damaged split file is detected and redone, identically.
  EXPECT_NE(data::prepare_spam_assassin(o).find("intact"), std::string::npos);
  {
    std::ofstream f(o.dest + "/train.jsonl", std::ios::app);
    f << "{\"truncated";
  }
  std::string why;
  EXPECT_FALSE(data::spam_splits_intact(o.dest, &why));
  EXPECT_NE(why.find("train.jsonl"), std::string::npos);
  data::prepare_spam_assassin(o);
  EXPECT_EQ(testkit::read_file(o.dest + "/train.jsonl"), first);
  // Another seed gives another split.
  o.seed = 5;
  data::prepare_spam_assassin(o);
  EXPECT_NE(testkit::read_file(o.dest + "/train.jsonl"), first);

  // A mail whose bytes do not match its checksum is named, not used.
  auto victim = *fs::directory_iterator(pkg + "/package/data/spam-1");
  fs::path txt = victim.path();
  txt.replace_extension(".txt");
  std::ofstream(txt, std::ios::app) << "tampered";
  EXPECT_NE(error_of([&] { data::read_spam_package(pkg + "/package/data", false); }).find("does not match"),
            std::string::npos);
  // A truncated archive is refused.
  std::string whole = testkit::read_file(tgz);
  std::ofstream(dir / "cut.tgz", std::ios::binary) << whole.substr(0, whole.size() / 2);
  o.tarball = dir / "cut.tgz";
  o.force = true;
  EXPECT_NE(error_of([&] { data::prepare_spam_assassin(o); }).find("cannot unpack"), std::string::npos);
}
