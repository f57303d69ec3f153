// Shared test fixtures: temporary directories, a small synthetic Fashion-MNIST-shaped
// dataset written as IDX files, a tiny recipe, and a finite-difference gradient check.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace tunekit::testkit {

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes train/t10k IDX files (uncompressed) with `per_class` images per class for 10
// classes; each class is a distinct blurred pattern plus noise, so a tiny model can learn it.
void write_synthetic_fmnist(const std::string& dir, int per_class_train, int per_class_test, uint64_t seed = 0);

// YAML for a tiny ViT recipe reading `data_root`, writing runs under `runs_dir`.
std::string tiny_recipe_yaml(const std::string& data_root, const std::string& runs_dir, const std::string& extra = "");

// A whole file's bytes ("" when it cannot be read).
std::string read_file(const std::string& path);

// The message of the tunekit::Error `f` throws, or "" when it throws none.
std::string error_of(const std::function<void()>& f);

// Central-difference check of d(sum(f(x) * w))/dx for a random projection w, in double.
// Returns the max abs difference between analytic and numerical gradients over `inputs`.
double gradcheck(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& f,
                 std::vector<torch::Tensor> inputs, double eps = 1e-6);

// The next-token losses of `steps` AdamW steps at `lr` over `params`, on one batch of random ids
// ([batch, tokens + 1] below `vocab`, drawn after torch::manual_seed(8)); `forward` maps ids
// [batch, tokens] to logits [batch, tokens, vocab]. For comparing a fast path's loss curve with
// the plain path's.
std::vector<double> lm_loss_curve(const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                                  const std::vector<torch::Tensor>& params, int64_t vocab, int64_t batch,
                                  int64_t tokens, int steps, double lr);

}  // namespace tunekit::testkit
