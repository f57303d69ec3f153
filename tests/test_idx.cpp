#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "data/dataset.h"
#include "data/fashion_mnist.h"
#include "data/idx.h"
#include "util/error.h"
#include "tests/helpers.h"

using namespace tunekit;

namespace {
void gzip_file(const std::string& in, const std::string& out) {
  std::ifstream f(in, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  gzFile g = gzopen(out.c_str(), "wb");
  gzwrite(g, bytes.data(), bytes.size());
  gzclose(g);
}
using testkit::error_of;
}  // namespace

TEST(Idx, RoundTripRawAndGzip) {
  testkit::TempDir dir;
  auto t = torch::randint(0, 256, {5, 3, 4}, torch::kLong).to(torch::kUInt8);
  data::write_idx(dir / "a", t);
  EXPECT_TRUE(torch::equal(data::read_idx(dir / "a"), t));
  gzip_file(dir / "a", dir / "a.gz");
  EXPECT_TRUE(torch::equal(data::read_idx(dir / "a.gz"), t));
}

TEST(Idx, HeaderBytesAreBigEndian) {
  testkit::TempDir dir;
  data::write_idx(dir / "l", torch::arange(300).remainder(10).to(torch::kUInt8));
  std::ifstream f(dir / "l", std::ios::binary);
  unsigned char h[8];
  f.read(reinterpret_cast<char*>(h), 8);
  EXPECT_EQ(h[2], 0x08);
  EXPECT_EQ(h[3], 1);
  EXPECT_EQ((h[6] << 8) | h[7], 300);
}

TEST(Idx, TruncatedFileIsAClearError) {
  testkit::TempDir dir;
  data::write_idx(dir / "a", torch::zeros({10, 28, 28}, torch::kUInt8));
  std::filesystem::resize_file(dir / "a", 16 + 28 * 28 * 3 + 5);
  EXPECT_EQ(error_of([&] { data::read_idx(dir / "a"); }),
            dir / "a" + ": IDX header says 10x28x28 items, the file has 2373 bytes (7856 expected: truncated)");
}

TEST(Idx, TruncatedGzipIsAClearError) {
  testkit::TempDir dir;
  data::write_idx(dir / "a", torch::randint(0, 256, {200, 28, 28}, torch::kLong).to(torch::kUInt8));
  gzip_file(dir / "a", dir / "a.gz");
  std::filesystem::resize_file(dir / "a.gz", std::filesystem::file_size(dir / "a.gz") / 2);
  std::string msg = error_of([&] { data::read_idx(dir / "a.gz"); });
  EXPECT_NE(msg.find(dir / "a.gz"), std::string::npos) << msg;
  EXPECT_TRUE(msg.find("truncated") != std::string::npos) << msg;
}

TEST(Idx, MissingAndBadMagic) {
  testkit::TempDir dir;
  EXPECT_EQ(error_of([&] { data::read_idx(dir / "nope"); }), dir / "nope" + ": not found");
  std::ofstream(dir / "bad") << "hello world";
  EXPECT_NE(error_of([&] { data::read_idx(dir / "bad"); }).find("not an IDX file"), std::string::npos);
}

TEST(FashionMnist, ClassSubsetSplitAndLimit) {
  testkit::TempDir dir;
  testkit::write_synthetic_fmnist(dir.path(), 20, 5);
  auto cfg = data::FashionMnistOptions().root(dir.path()).classes({7, 2}).val_fraction(0.25);
  auto s = data::load_fashion_mnist(cfg, 0);
  EXPECT_EQ(s.train.size(), 30);
  EXPECT_EQ(s.val.size(), 10);
  EXPECT_EQ(s.test.size(), 10);
  EXPECT_EQ(s.train.class_names, (std::vector<std::string>{"sneaker", "pullover"}));
  EXPECT_EQ((s.val.labels == 0).sum().item<int64_t>(), 5);  // stratified
  EXPECT_EQ(s.train.labels.max().item<int64_t>(), 1);
  // Same seed, same split; different seed, different split.
  auto again = data::load_fashion_mnist(cfg, 0);
  EXPECT_TRUE(torch::equal(again.val.inputs, s.val.inputs));
  auto other = data::load_fashion_mnist(cfg, 1);
  EXPECT_FALSE(torch::equal(other.val.inputs, s.val.inputs));
  cfg.limit_train(7);
  EXPECT_EQ(data::load_fashion_mnist(cfg, 0).train.size(), 7);
}

TEST(FashionMnist, MissingFileNamesIt) {
  testkit::TempDir dir;
  auto cfg = data::FashionMnistOptions().root(dir.path());
  std::string msg = error_of([&] { data::load_fashion_mnist(cfg, 0); });
  EXPECT_NE(msg.find(dir / "train-images-idx3-ubyte"), std::string::npos) << msg;
}

TEST(FashionMnist, PrepareWritesACompleteCacheOnce) {
  testkit::TempDir src, dest;
  testkit::write_synthetic_fmnist(src.path(), 3, 2);
  std::string first = data::prepare_fashion_mnist(src.path(), dest / "fm");
  EXPECT_NE(first.find("prepared in"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(dest / "fm/MANIFEST.json"));
  EXPECT_TRUE(torch::equal(data::read_idx(dest / "fm/train-labels-idx1-ubyte"),
                           data::read_idx(src / "train-labels-idx1-ubyte")));
  EXPECT_NE(data::prepare_fashion_mnist(src.path(), dest / "fm").find("already prepared"), std::string::npos);
}

TEST(Dataset, EpochPermutationIsSeeded) {
  EXPECT_TRUE(torch::equal(data::epoch_permutation(100, 5, 2), data::epoch_permutation(100, 5, 2)));
  EXPECT_FALSE(torch::equal(data::epoch_permutation(100, 5, 2), data::epoch_permutation(100, 5, 3)));
}
