// Hostile data files: FIFOs, devices behind symlinks, IDX headers that overflow or lie about the
// size, damaged prepared caches (Fashion-MNIST and the SpamAssassin splits), malformed text
// records and hostile mails. Each must give one error naming the file (and record), never a hang,
// a crash or a silent accept.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>

#include "data/fashion_mnist.h"
#include "data/idx.h"
#include "data/spam_assassin.h"
#include "data/text_data.h"
#include "data/text_file.h"
#include "data/tokenizer.h"
#include "src/from_recipe/data.h"
#include "src/recipe/recipe.h"
#include "tests/helpers.h"
#include "tests/text_helpers.h"
#include "util/error.h"

using namespace tunekit;
namespace fs = std::filesystem;
using testkit::error_of;

namespace {

// The error of `f`, run on another thread: a read that blocks (a FIFO opened for reading waits
// for a writer) fails the test instead of hanging it; the FIFO is then opened for writing, which
// releases the blocked reader.
std::string error_without_hang(const std::function<void()>& f, const std::string& fifo) {
  auto result = std::async(std::launch::async, [f] { return error_of(f); });
  if (result.wait_for(std::chrono::seconds(60)) == std::future_status::ready) return result.get();
  int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
  if (fd >= 0) ::close(fd);
  result.wait();
  return "blocked reading " + fifo;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

void flip_byte(const std::string& path, int64_t offset) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(offset);
  char c = 0;
  f.get(c);
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x01));
}

std::string idx_header(std::vector<uint32_t> dims) {
  std::string h{0, 0, 0x08, static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<char>((d >> s) & 0xff));
  return h;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(DataHostile, FifoIsRefusedNotRead) {
  testkit::TempDir dir;
  const std::string fifo = dir / "train-images-idx3-ubyte";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(error_without_hang([&] { data::read_idx(fifo); }, fifo), fifo + ": not a regular file (a FIFO)");
  const std::string jsonl = dir / "train.jsonl";
  ASSERT_EQ(::mkfifo(jsonl.c_str(), 0600), 0);
  EXPECT_EQ(error_without_hang([&] { data::read_text_file({jsonl}); }, jsonl), jsonl + ": not a regular file (a FIFO)");
  const std::string model = dir / "tokenizer.model";
  ASSERT_EQ(::mkfifo(model.c_str(), 0600), 0);
  EXPECT_EQ(error_without_hang([&] { data::Tokenizer::load(model); }, model), model + ": not a regular file (a FIFO)");
  // A FIFO among the Fashion-MNIST files is named by load (no hang).
  testkit::write_synthetic_fmnist(dir / "fm", 2, 1);
  fs::remove(dir / "fm/t10k-labels-idx1-ubyte");
  const std::string labels = dir / "fm/t10k-labels-idx1-ubyte";
  ASSERT_EQ(::mkfifo(labels.c_str(), 0600), 0);
  EXPECT_EQ(error_without_hang([&] { data::load_fashion_mnist(data::FashionMnistOptions().root(dir / "fm"), 0); }, labels),
            labels + ": not a regular file (a FIFO)");
}

TEST(DataHostile, SymlinkToDevZeroIsRefused) {
  testkit::TempDir dir;
  for (const char* name : {"zero-idx", "zero.jsonl", "zero.csv", "zero.model"})
    fs::create_symlink("/dev/zero", dir / name);
  EXPECT_EQ(error_of([&] { data::read_idx(dir / "zero-idx"); }), dir / "zero-idx" + ": not a regular file (a character device)");
  EXPECT_EQ(error_of([&] { data::read_text_file({dir / "zero.jsonl"}); }),
            dir / "zero.jsonl" + ": not a regular file (a character device)");
  EXPECT_EQ(error_of([&] { data::read_text_file({dir / "zero.csv"}); }),
            dir / "zero.csv" + ": not a regular file (a character device)");
  EXPECT_EQ(error_of([&] { data::Tokenizer::load(dir / "zero.model"); }),
            dir / "zero.model" + ": not a regular file (a character device)");
  fs::create_directories(dir / "adir.jsonl");
  EXPECT_EQ(error_of([&] { data::read_text_file({dir / "adir.jsonl"}); }), dir / "adir.jsonl" + ": not a regular file (a directory)");
}

TEST(DataHostile, IdxHeaderThatOverflowsNamesTheFile) {
  testkit::TempDir dir;
  write_bytes(dir / "huge", idx_header({65536, 65536, 65536, 65536}));
  EXPECT_EQ(error_of([&] { data::read_idx(dir / "huge"); }),
            dir / "huge" + ": IDX header says 65536x65536x65536x65536 items, the file has 20 bytes (more than the "
                           "8589934592 an IDX file may hold)");
  // The same header compressed: refused before anything is allocated for it.
  gzFile g = gzopen((dir / "huge.gz").c_str(), "wb");
  const std::string h = idx_header({65536, 65536, 65536, 65536});
  gzwrite(g, h.data(), static_cast<unsigned>(h.size()));
  gzclose(g);
  std::string msg = error_of([&] { data::read_idx(dir / "huge.gz"); });
  EXPECT_TRUE(contains(msg, dir / "huge.gz: IDX header says 65536x65536x65536x65536 items")) << msg;
  // A plausible header (2^32 - 1 items) over a tiny gzip file: an error once the data runs out.
  g = gzopen((dir / "big.gz").c_str(), "wb");
  const std::string b = idx_header({0xffffffffu}) + "abc";
  gzwrite(g, b.data(), static_cast<unsigned>(b.size()));
  gzclose(g);
  EXPECT_EQ(error_of([&] { data::read_idx(dir / "big.gz"); }),
            dir / "big.gz" + ": IDX header says 4294967295 items, the file has 11 bytes decompressed (4294967303 "
                             "expected: truncated)");
}

TEST(DataHostile, IdxSizeMustMatchTheHeaderExactly) {
  testkit::TempDir dir;
  data::write_idx(dir / "a", torch::zeros({3, 28, 28}, torch::kUInt8));
  const std::string whole = testkit::read_file(dir / "a");
  write_bytes(dir / "short", whole.substr(0, whole.size() - 1));
  EXPECT_EQ(error_of([&] { data::read_idx(dir / "short"); }),
            dir / "short" + ": IDX header says 3x28x28 items, the file has 2367 bytes (2368 expected: truncated)");
  write_bytes(dir / "long", whole + "x");
  EXPECT_EQ(error_of([&] { data::read_idx(dir / "long"); }),
            dir / "long" + ": IDX header says 3x28x28 items, the file has 2369 bytes (2368 expected: 1 trailing bytes)");
  write_bytes(dir / "zero-dim", idx_header({3, 0, 28}));
  EXPECT_EQ(error_of([&] { data::read_idx(dir / "zero-dim"); }), dir / "zero-dim" + ": IDX dimension 1 is 0 (an empty file)");
  write_bytes(dir / "rank", idx_header({1, 1, 1, 1, 1}));
  EXPECT_EQ(error_of([&] { data::read_idx(dir / "rank"); }), dir / "rank" + ": unsupported IDX rank 5 (1 to 4)");
  write_bytes(dir / "half-header", idx_header({3, 28, 28}).substr(0, 10));
  EXPECT_EQ(error_of([&] { data::read_idx(dir / "half-header"); }),
            dir / "half-header" + ": truncated IDX header (10 of its 16 bytes)");
  write_bytes(dir / "float", std::string{0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0});
  EXPECT_EQ(error_of([&] { data::read_idx(dir / "float"); }),
            dir / "float" + ": unsupported IDX element type 0x0d (only uint8)");
}

TEST(DataHostile, FashionMnistLabelsMustMatchImages) {
  testkit::TempDir dir;
  testkit::write_synthetic_fmnist(dir.path(), 3, 2);
  data::write_idx(dir / "train-labels-idx1-ubyte", torch::zeros({29}, torch::kUInt8));
  EXPECT_EQ(error_of([&] { data::load_fashion_mnist(data::FashionMnistOptions().root(dir.path()), 0); }),
            dir / "train-labels-idx1-ubyte" + ": 29 labels for 30 images in " + dir / "train-images-idx3-ubyte");
  auto labels = torch::zeros({30}, torch::kUInt8);
  labels[17] = 200;
  data::write_idx(dir / "train-labels-idx1-ubyte", labels);
  EXPECT_EQ(error_of([&] { data::load_fashion_mnist(data::FashionMnistOptions().root(dir.path()), 0); }),
            dir / "train-labels-idx1-ubyte" + ": label 200 of item 17 is outside 0..9");
  EXPECT_NE(error_of([&] { data::prepare_fashion_mnist(dir.path(), dir / "out"); }).find("label 200 of item 17"),
            std::string::npos);
}

TEST(DataHostile, FashionMnistCacheWithAFlippedPixelIsRefusedAndRedone) {
  testkit::TempDir src, dir;
  testkit::write_synthetic_fmnist(src.path(), 3, 2);
  const std::string dest = dir / "fm";
  data::prepare_fashion_mnist(src.path(), dest);
  ASSERT_TRUE(fs::exists(dest + "/MANIFEST.json"));
  const auto opts = data::FashionMnistOptions().root(dest).val_fraction(0);
  const auto good = data::load_fashion_mnist(opts, 0);
  flip_byte(dest + "/train-images-idx3-ubyte", 16 + 28 * 28 + 100);  // one pixel of the second image
  EXPECT_EQ(error_of([&] { data::load_fashion_mnist(opts, 0); }),
            dest + "/train-images-idx3-ubyte: checksum mismatch with MANIFEST.json (the prepared cache is damaged; run "
                   "`tunekit prepare fashion_mnist --dest " + dest + "` to redo it)");
  // `prepare` verifies the cache instead of trusting the manifest's presence, and redoes it.
  const std::string again = data::prepare_fashion_mnist(src.path(), dest);
  EXPECT_FALSE(contains(again, "already prepared")) << again;
  EXPECT_TRUE(contains(again, "redone: " + dest + "/train-images-idx3-ubyte: checksum mismatch with MANIFEST.json")) << again;
  EXPECT_FALSE(contains(again, "to redo it")) << again;  // the hint to redo it is for readers, not for prepare
  EXPECT_TRUE(torch::equal(data::load_fashion_mnist(opts, 0).train.inputs, good.train.inputs));
  EXPECT_TRUE(contains(data::prepare_fashion_mnist(src.path(), dest), "already prepared"));
}

TEST(DataHostile, FashionMnistTruncatedOrOldCacheIsRedone) {
  testkit::TempDir src, dir;
  testkit::write_synthetic_fmnist(src.path(), 3, 2);
  const std::string dest = dir / "fm";
  data::prepare_fashion_mnist(src.path(), dest);
  const std::string labels = dest + "/t10k-labels-idx1-ubyte";
  fs::resize_file(labels, fs::file_size(labels) - 1);
  const auto opts = data::FashionMnistOptions().root(dest);
  EXPECT_TRUE(contains(error_of([&] { data::load_fashion_mnist(opts, 0); }),
                       labels + ": 27 bytes, MANIFEST.json says 28 (the prepared cache is damaged;"));
  std::string redo = data::prepare_fashion_mnist(src.path(), dest);
  EXPECT_TRUE(contains(redo, "redone: " + labels + ": 27 bytes")) << redo;
  EXPECT_EQ(fs::file_size(labels), 28u);
  // A cache written before manifests had checksums (MANIFEST, shapes only) is not trusted.
  fs::remove(dest + "/MANIFEST.json");
  write_bytes(dest + "/MANIFEST", "t10k-labels-idx1-ubyte [20] /somewhere\n");
  EXPECT_TRUE(contains(error_of([&] { data::load_fashion_mnist(opts, 0); }), dest + "/MANIFEST: prepared by an older tunekit"));
  redo = data::prepare_fashion_mnist(src.path(), dest);
  EXPECT_TRUE(contains(redo, "redone: prepared by an older tunekit")) << redo;
  EXPECT_FALSE(fs::exists(dest + "/MANIFEST"));
  EXPECT_EQ(data::load_fashion_mnist(data::FashionMnistOptions().root(dest).val_fraction(0), 0).test.size(), 20);
  // A damaged manifest is named too.
  write_bytes(dest + "/MANIFEST.json", "{\"format\": \"tunekit fashion-mnist cache\", \"files\": {\"t10k-labels-idx1-ubyte\": 3}}");
  EXPECT_TRUE(contains(error_of([&] { data::load_fashion_mnist(opts, 0); }),
                       dest + "/MANIFEST.json: files.train-images-idx3-ubyte: missing"));
}

TEST(DataHostile, SpamAssassinSplitWithAFlippedByteIsRefused) {
  testkit::TempDir dir;
  data::SpamCorpus corpus;
  for (int i = 0; i < 20; ++i)
    corpus.mails.push_back({"spam-1/" + std::to_string(i), i % 2 ? "spam-1" : "easy-ham-1", "", "Subject: mail " + std::to_string(i)});
  data::SpamPrepareOptions o;
  o.dest = dir / "spam";
  data::write_spam_splits(corpus, o);
  Recipe recipe = parse_recipe("model: {kind: text, task: classify, num_classes: 2}\ndata: {dataset: spam_assassin, root: \"" +
                                   o.dest + "\"}\n",
                               "r.yaml");
  const auto options = from_recipe::text_data_options(recipe);
  EXPECT_EQ(options.manifest(), o.dest + "/MANIFEST.json");
  EXPECT_EQ(data::read_text_records(options).train.size() + data::read_text_records(options).val.size() +
                data::read_text_records(options).test.size(),
            20u);
  flip_byte(o.dest + "/val.jsonl", 30);
  EXPECT_EQ(error_of([&] { data::read_text_records(options); }),
            o.dest + "/val.jsonl: checksum mismatch with MANIFEST.json (the prepared cache is damaged; run `tunekit "
                     "prepare spam_assassin --dest " + o.dest + "` to redo it)");
  EXPECT_FALSE(data::spam_splits_intact(o.dest));
  fs::remove(o.dest + "/MANIFEST.json");
  EXPECT_EQ(error_of([&] { data::read_text_records(options); }),
            o.dest + "/MANIFEST.json: not found (run `tunekit prepare spam_assassin --dest " + o.dest + "` to redo it)");
  EXPECT_EQ(error_of([&] { data::check_spam_splits(o.dest); }),
            o.dest + "/MANIFEST.json: not found (run `tunekit prepare spam_assassin`)");
}

TEST(DataHostile, MalformedTextRecordsNameFileLineAndField) {
  testkit::TempDir dir;
  auto err = [&](const std::string& name, const std::string& content, const std::string& group = "") {
    write_bytes(dir / name, content);
    return error_of([&] { data::read_text_file({dir / name, "auto", "text", "label", group}); });
  };
  EXPECT_EQ(err("a.jsonl", "{\"text\": \"ok\", \"label\": \"x\"}\n{\"text\": \"\", \"label\": \"x\"}\n"),
            dir / "a.jsonl:2: field 'text' is empty");
  EXPECT_EQ(err("b.jsonl", "{\"text\": \"ok\", \"label\": \"\"}\n"), dir / "b.jsonl:1: field 'label' is empty");
  EXPECT_EQ(err("c.jsonl", "\n{\"text\": 12, \"label\": \"x\"}\n"), dir / "c.jsonl:2: field 'text' is a number, not a string");
  EXPECT_EQ(err("d.jsonl", "{\"text\": \"ok\"}\n"), dir / "d.jsonl:1: no label field 'label'");
  EXPECT_EQ(err("e.csv", "text,label\nfine,a\n\"caf\xe9\",b\n"),
            dir / "e.csv:3: field 'text' is not valid UTF-8 (byte 0xe9 at offset 3)");
  EXPECT_EQ(err("f.tsv", "text\tlabel\tgroup\nfine\ta\tg\n   \tb\tg\n", "group"), dir / "f.tsv:3: field 'text' is empty");
  EXPECT_EQ(err("g.tsv", "text\tlabel\tgroup\nfine\ta\t\n", "group"), dir / "g.tsv:2: field 'group' is empty");
  EXPECT_EQ(err("h.csv", "text,label\nfine,a\nmissing\n"), dir / "h.csv:3: expected 2 fields (as in the header), got 1");
  EXPECT_TRUE(contains(err("i.jsonl", "{\"text\": \"ok\", \"label\": \"x\"}\n{\"text\": \"\xff\", \"label\": \"x\"}\n"),
                       dir / "i.jsonl:2: invalid JSON"));
  // A line over the 16 MiB a record may have is refused before it is parsed.
  EXPECT_EQ(err("j.jsonl", "{\"text\": \"ok\", \"label\": \"x\"}\n" + std::string((16 << 20) + 1, ' ') + "\n"),
            dir / "j.jsonl:2: a line of 16777217 bytes, more than the 16777216 a record may have");
  EXPECT_TRUE(contains(err("k.csv", "text,label\n\"" + std::string((16 << 20) + 1, 'a') + "\",x\n"),
                       dir / "k.csv:2: a field of 16777217 bytes"));
  // Excel's byte order mark before the header is not part of the first column's name.
  write_bytes(dir / "bom.csv", "\xEF\xBB\xBFtext,label\nhello,a\n");
  auto recs = data::read_text_file({dir / "bom.csv"});
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].text, "hello");
  EXPECT_EQ(recs[0].line, 2);
}

TEST(DataHostile, HostileMailsAreBoundedAndNamed) {
  // Multiparts nested far deeper than the decoder follows, and a flood of empty parts.
  std::string nested = "Subject: deep\nContent-Type: multipart/mixed; boundary=\"b\"\n\n";
  for (int i = 0; i < 2000; ++i) nested += "--b\nContent-Type: multipart/mixed; boundary=\"b\"\n\n";
  nested += "hello\n--b--\n";
  EXPECT_EQ(data::mail_to_text(nested).rfind("Subject: deep\n", 0), 0u);
  std::string flood = "Subject: flood\nContent-Type: multipart/mixed; boundary=x\n\n";
  for (int i = 0; i < 200000; ++i) flood += "--x\n\n";
  flood += "--x\nContent-Type: text/plain\n\nthe end\n--x--\n";
  EXPECT_EQ(data::mail_to_text(flood), "Subject: flood\nthe end");
  std::string tags = "Subject: tags\nContent-Type: text/html\n\n" + std::string(100000, '<') + "<style" + std::string(1000, '&');
  EXPECT_EQ(data::mail_to_text(tags).rfind("Subject: tags", 0), 0u);

  // Metadata whose fields have the wrong types names the file instead of crashing.
  testkit::TempDir dir;
  auto pkg = testkit::write_spam_package(dir / "src", 2);
  auto victim = *fs::directory_iterator(pkg + "/package/data/spam-2");
  fs::path json = victim.path();
  json.replace_extension(".json");
  write_bytes(json.string(), "{\"id\": 7, \"checksum\": {\"value\": \"00\"}}");
  EXPECT_EQ(error_of([&] { data::read_spam_package(pkg + "/package/data", false); }),
            json.string() + ": corrupt metadata (no string \"id\")");
  write_bytes(json.string(), "{\"id\": \"7\", \"checksum\": \"00\"}");
  EXPECT_EQ(error_of([&] { data::read_spam_package(pkg + "/package/data", false); }),
            json.string() + ": corrupt metadata (no \"checksum\": {\"value\": ...})");
  // A mail that is a FIFO is named, not waited on.
  fs::path txt = json;
  txt.replace_extension(".txt");
  write_bytes(json.string(), "{\"id\": \"7\", \"checksum\": {\"value\": \"00\"}}");
  fs::remove(txt);
  ASSERT_EQ(::mkfifo(txt.c_str(), 0600), 0);
  EXPECT_EQ(error_without_hang([&] { data::read_spam_package(pkg + "/package/data", false); }, txt.string()),
            txt.string() + ": not a regular file (a FIFO)");
}
