#include "data/fashion_mnist.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "data/idx.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace tunekit::data {

namespace {
const std::vector<std::string> kClassNames{"t-shirt/top", "trouser", "pullover", "dress", "coat",
                                           "sandal",      "shirt",   "sneaker",  "bag",   "ankle boot"};
const char* kFiles[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                         "t10k-labels-idx1-ubyte"};

// The file as given, or with ".gz" added.
std::string locate(const std::string& root, const std::string& stem) {
  for (const auto& name : {stem, stem + ".gz"})
    if (fs::exists(fs::path(root) / name)) return (fs::path(root) / name).string();
  throw Error(fmt::format("{}: Fashion-MNIST file not found (looked for {} and {}.gz; install "
                          "Debian's dataset-fashion-mnist or set data.root)",
                          (fs::path(root) / stem).string(), stem, stem));
}

LabelledDataset load_pair(const std::string& root, const char* images_stem, const char* labels_stem) {
  std::string ipath = locate(root, images_stem), lpath = locate(root, labels_stem);
  auto images = read_idx(ipath), labels = read_idx(lpath);
  if (images.dim() != 3 || images.size(1) != 28 || images.size(2) != 28)
    throw Error(fmt::format("{}: expected images of shape [N, 28, 28], got {}", ipath, c10::str(images.sizes())));
  if (labels.dim() != 1 || labels.size(0) != images.size(0))
    throw Error(fmt::format("{}: {} labels for {} images in {}", lpath, labels.numel(), images.size(0), ipath));
  if (labels.numel() && labels.max().item<int>() > 9)
    throw Error(fmt::format("{}: label {} is outside 0..9", lpath, labels.max().item<int>()));
  auto x = images.unsqueeze(1).to(torch::kFloat).div_(255.0).sub_(kFashionMnistMean).div_(kFashionMnistStd);
  return {x, labels.to(torch::kLong), kClassNames, {}, {}};
}

bool prepared_complete(const std::string& dir) {
  return fs::exists(fs::path(dir) / "MANIFEST");
}
}  // namespace

std::string default_fashion_mnist_root() {
  return prepared_complete(kPreparedFashionMnist) ? kPreparedFashionMnist : kDebianFashionMnist;
}

ImageSplits load_fashion_mnist(const FashionMnistOptions& o, uint64_t seed) {
  std::string root = o.root().empty() ? default_fashion_mnist_root() : o.root();
  auto train_all = select_classes(load_pair(root, kFiles[0], kFiles[1]), o.classes());
  auto test = select_classes(load_pair(root, kFiles[2], kFiles[3]), o.classes());
  ImageSplits s;
  if (o.val_fraction() > 0) {
    auto [train, val] = stratified_split(train_all, o.val_fraction(), seed);
    s.train = std::move(train);
    s.val = std::move(val);
  } else {
    s.train = train_all;
  }
  if (o.limit_train() > 0 && o.limit_train() < s.train.size()) {
    auto gen = seeded_generator(seed + 17);
    auto idx = std::get<0>(torch::randperm(s.train.size(), gen, torch::kLong).slice(0, 0, o.limit_train()).sort());
    s.train = s.train.subset(idx);
  }
  s.test = std::move(test);
  return s;
}

std::string prepare_fashion_mnist(const std::string& source, const std::string& dest) {
  if (prepared_complete(dest)) return fmt::format("Fashion-MNIST already prepared in {}", dest);
  fs::create_directories(dest);
  std::string manifest;
  for (const char* stem : kFiles) {
    std::string src = locate(source, stem);
    auto t = read_idx(src);
    if (std::string(stem).find("labels") != std::string::npos && t.numel() && t.max().item<int>() > 9)
      throw Error(fmt::format("{}: label outside 0..9", src));
    write_idx((fs::path(dest) / stem).string(), t);
    manifest += fmt::format("{} {} {}\n", stem, c10::str(t.sizes()), src);
  }
  // The manifest is written last: its presence marks a complete cache.
  std::string tmp = (fs::path(dest) / "MANIFEST.tmp").string();
  std::ofstream(tmp) << manifest;
  fs::rename(tmp, fs::path(dest) / "MANIFEST");
  return fmt::format("Fashion-MNIST prepared in {} (60,000 train + 10,000 test images, from {})", dest, source);
}

}  // namespace tunekit::data
