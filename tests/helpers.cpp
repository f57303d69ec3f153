#include "tests/helpers.h"

#include "util/error.h"

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data/idx.h"

namespace fs = std::filesystem;

namespace tunekit::testkit {

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "tunekit-test-XXXXXX").string();
  char* p = mkdtemp(tmpl.data());
  if (!p) throw std::runtime_error("mkdtemp failed");
  path_ = p;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_synthetic_fmnist(const std::string& dir, int per_class_train, int per_class_test, uint64_t seed) {
  fs::create_directories(dir);
  torch::manual_seed(seed);
  // One smooth prototype per class.
  auto protos = torch::nn::functional::avg_pool2d(torch::rand({10, 1, 28, 28}),
                                                  torch::nn::functional::AvgPool2dFuncOptions(5).stride(1).padding(2));
  protos = (protos - protos.mean()) * 6 + 0.5;
  auto make = [&](int per_class, const std::string& images, const std::string& labels) {
    auto y = torch::arange(10, torch::kLong).repeat_interleave(per_class);
    auto x = protos.index_select(0, y).squeeze(1) + 0.15 * torch::randn({y.size(0), 28, 28});
    auto u8 = (x.clamp(0, 1) * 255).round().to(torch::kUInt8);
    data::write_idx(dir + "/" + images, u8);
    data::write_idx(dir + "/" + labels, y.to(torch::kUInt8));
  };
  make(per_class_train, "train-images-idx3-ubyte", "train-labels-idx1-ubyte");
  make(per_class_test, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
}

std::string tiny_recipe_yaml(const std::string& data_root, const std::string& runs_dir, const std::string& extra) {
  return fmt::format(R"(seed: 3
threads: {{torch: 1, blas: 1}}
model: {{kind: vit, patch: 7, dim: 16, depth: 2, heads: 2, mlp_ratio: 2.0, num_classes: 4}}
data: {{root: "{}", classes: [0, 1, 2, 3], val_fraction: 0.2, batch_size: 16}}
optimizer: {{lr: 3.0e-3}}
schedule: {{kind: cosine, warmup_steps: 2}}
train: {{epochs: 3, log_every: 1}}
output: {{dir: "{}", name: tiny}}
{})",
                     data_root, runs_dir, extra);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

double gradcheck(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& f,
                 std::vector<torch::Tensor> inputs, double eps) {
  for (auto& x : inputs)  // module parameters (already double leaves) are checked in place
    if (x.scalar_type() != torch::kDouble || !x.requires_grad()) x = x.detach().to(torch::kDouble).requires_grad_(true);
  auto out = f(inputs);
  auto w = torch::randn_like(out);
  auto grads = torch::autograd::grad({(out * w).sum()}, inputs);
  double worst = 0;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto flat = inputs[i].view(-1);
    auto g = grads[i].reshape(-1);
    for (int64_t j = 0; j < flat.numel(); ++j) {
      double orig = flat[j].item<double>();
      flat[j] = orig + eps;
      double plus = (f(inputs) * w).sum().item<double>();
      flat[j] = orig - eps;
      double minus = (f(inputs) * w).sum().item<double>();
      flat[j] = orig;
      double numeric = (plus - minus) / (2 * eps);
      worst = std::max(worst, std::abs(numeric - g[j].item<double>()));
    }
  }
  return worst;
}

std::vector<double> lm_loss_curve(const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                                  const std::vector<torch::Tensor>& params, int64_t vocab, int64_t batch,
                                  int64_t tokens, int steps, double lr) {
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(lr));
  torch::manual_seed(8);
  auto ids = torch::randint(0, vocab, {batch, tokens + 1}, torch::kLong);
  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) {
    opt.zero_grad();
    auto logits = forward(ids.slice(1, 0, tokens));
    auto loss = torch::cross_entropy_loss(logits.reshape({-1, vocab}), ids.slice(1, 1).reshape(-1));
    loss.backward();
    opt.step();
    losses.push_back(loss.item<double>());
  }
  return losses;
}

}  // namespace tunekit::testkit
