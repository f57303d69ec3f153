#include "data/fashion_mnist.h"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/idx.h"
#include "data/manifest.h"
#include "data/md5.h"
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

constexpr const char* kManifest = "MANIFEST.json";
constexpr const char* kLegacyManifest = "MANIFEST";  // written before checksums: lists shapes only
constexpr const char* kManifestFormat = "tunekit fashion-mnist cache";

std::string redo_hint(const std::string& root) {
  return fs::path(root) == fs::path(kPreparedFashionMnist)
             ? "run `tunekit prepare fashion_mnist` to redo it"
             : fmt::format("run `tunekit prepare fashion_mnist --dest {}` to redo it", root);
}

// A directory of the four IDX files: a prepared cache (with a MANIFEST.json, every file checked
// against its size and MD5 as it is read) or a plain directory such as Debian's (the IDX header
// and size checks only).
class ImageFiles {
 public:
  explicit ImageFiles(std::string root) : root_(std::move(root)) {
    const std::string mpath = (fs::path(root_) / kManifest).string();
    if (fs::exists(mpath)) {
      manifest_ = read_manifest(mpath);
      if (manifest_.value("format", std::string()) != kManifestFormat)
        throw Error(fmt::format("{}: not a Fashion-MNIST cache manifest (format is not \"{}\")", mpath, kManifestFormat));
      cache_ = true;
    } else if (fs::exists(fs::path(root_) / kLegacyManifest)) {
      throw Error(fmt::format("{}: prepared by an older tunekit, without checksums; {}",
                              (fs::path(root_) / kLegacyManifest).string(), redo_hint(root_)));
    }
  }
  // The file's tensor and the path it came from.
  std::pair<torch::Tensor, std::string> read(const std::string& stem) const {
    if (!cache_) {
      std::string path = locate(root_, stem);
      return {read_idx(path), path};
    }
    const std::string path = (fs::path(root_) / stem).string(), mpath = (fs::path(root_) / kManifest).string();
    auto entry = manifest_entry(manifest_, mpath, stem);
    return {parse_idx(path, read_verified(path, entry, mpath, redo_hint(root_))), path};
  }

 private:
  std::string root_;
  bool cache_ = false;
  nlohmann::json manifest_;
};

// Images [N, 28, 28] and as many labels in 0..9, or an Error naming the file.
void check_pair(const std::string& ipath, const torch::Tensor& images, const std::string& lpath,
                const torch::Tensor& labels) {
  if (images.dim() != 3 || images.size(1) != 28 || images.size(2) != 28)
    throw Error(fmt::format("{}: expected images of shape [N, 28, 28], got {}", ipath, c10::str(images.sizes())));
  if (labels.dim() != 1 || labels.size(0) != images.size(0))
    throw Error(fmt::format("{}: {} labels for {} images in {}", lpath, labels.numel(), images.size(0), ipath));
  if (labels.numel() && labels.max().item<int>() > 9) {
    const int64_t at = (labels > 9).nonzero()[0][0].item<int64_t>();
    throw Error(fmt::format("{}: label {} of item {} is outside 0..9", lpath, labels[at].item<int>(), at));
  }
}

LabelledDataset load_pair(const ImageFiles& files, const char* images_stem, const char* labels_stem) {
  auto [images, ipath] = files.read(images_stem);
  auto [labels, lpath] = files.read(labels_stem);
  check_pair(ipath, images, lpath, labels);
  auto x = images.unsqueeze(1).to(torch::kFloat).div_(255.0).sub_(kFashionMnistMean).div_(kFashionMnistStd);
  return {x, labels.to(torch::kLong), kClassNames, {}, {}};
}

// Whether `dir` is a complete prepared cache whose files match their manifest; `why` says what is wrong.
bool cache_intact(const std::string& dir, std::string* why) {
  if (!fs::exists(fs::path(dir) / kManifest)) {
    *why = fs::exists(fs::path(dir) / kLegacyManifest) ? "prepared by an older tunekit, without checksums"
                                                        : "no MANIFEST.json";
    return false;
  }
  try {
    ImageFiles files(dir);
    for (int i = 0; i < 4; i += 2) {
      auto [images, ipath] = files.read(kFiles[i]);
      auto [labels, lpath] = files.read(kFiles[i + 1]);
      check_pair(ipath, images, lpath, labels);
    }
  } catch (const Error& e) {
    *why = e.what();
    return false;
  }
  return true;
}
}  // namespace

std::string default_fashion_mnist_root() {
  // A cache prepared by an older tunekit (no MANIFEST.json) is passed over for Debian's files.
  return fs::exists(fs::path(kPreparedFashionMnist) / kManifest) ? kPreparedFashionMnist : kDebianFashionMnist;
}

ImageSplits load_fashion_mnist(const FashionMnistOptions& o, uint64_t seed) {
  std::string root = o.root().empty() ? default_fashion_mnist_root() : o.root();
  const ImageFiles files(root);
  auto train_all = select_classes(load_pair(files, kFiles[0], kFiles[1]), o.classes());
  auto test = select_classes(load_pair(files, kFiles[2], kFiles[3]), o.classes());
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
  std::string why;
  if (cache_intact(dest, &why))
    return fmt::format("Fashion-MNIST already prepared in {} (sizes and MD5 checked against {})", dest, kManifest);
  const bool redo = why != "no MANIFEST.json";
  why = why.substr(0, why.find(" (the prepared cache is damaged;"));  // redoing it is what follows
  fs::create_directories(dest);
  // The manifest goes first and comes back last: a cache interrupted while redone is incomplete.
  fs::remove(fs::path(dest) / kManifest);
  fs::remove(fs::path(dest) / kLegacyManifest);
  nlohmann::json manifest{{"format", kManifestFormat}, {"source", source}, {"files", nlohmann::json::object()}};
  int64_t counts[2] = {0, 0};
  for (int i = 0; i < 4; i += 2) {
    const std::string ipath = locate(source, kFiles[i]), lpath = locate(source, kFiles[i + 1]);
    const torch::Tensor tensors[2] = {read_idx(ipath), read_idx(lpath)};
    check_pair(ipath, tensors[0], lpath, tensors[1]);
    counts[i / 2] = tensors[0].size(0);
    for (int k = 0; k < 2; ++k) {
      const std::string bytes = idx_bytes(tensors[k]);
      write_file_atomic((fs::path(dest) / kFiles[i + k]).string(), bytes);
      manifest["files"][kFiles[i + k]] = {{"bytes", bytes.size()}, {"md5", md5_hex(bytes)},
                                          {"shape", tensors[k].sizes().vec()}, {"from", k ? lpath : ipath}};
    }
  }
  write_file_atomic((fs::path(dest) / kManifest).string(), manifest.dump(2) + "\n");
  return fmt::format("Fashion-MNIST prepared in {} ({} train + {} test images, from {}){}", dest, counts[0], counts[1],
                     source, redo ? fmt::format("; redone: {}", why) : "");
}

}  // namespace tunekit::data
