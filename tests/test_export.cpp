#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/import.h>

#include <cstdlib>
#include <filesystem>

#include "adapters/attach.h"
#include "models/vit.h"
#include "src/build/adapters.h"
#include "src/export/export.h"
#include "src/train/setup.h"
#include "src/train/trainer.h"
#include "tests/helpers.h"

using namespace tunekit;

namespace {
models::ViT trained_like_vit_with_lora() {
  torch::manual_seed(4);
  models::ViT m(models::ViTOptions().image_size(28).patch(7).dim(32).depth(2).heads(4).num_classes(5));
  AdapterConfig c;
  c.kind = AdapterKind::Lora;
  c.targets = {"blocks.*.attn.q", "blocks.*.attn.v", "blocks.1.mlp.fc2"};
  c.modules_to_save = {"head"};
  adapters::attach_adapters(*m, build::attach_options(c));
  torch::NoGradGuard g;
  for (auto& p : m->named_parameters())
    if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.3);
  return m;
}
}  // namespace

TEST(Export, ReloadedTorchScriptMatchesEagerWithAdaptersFolded) {
  testkit::TempDir dir;
  auto m = trained_like_vit_with_lora();
  auto x = torch::randn({6, 1, 28, 28});
  ExportResult r = export_torchscript(*m, x, dir / "model.pt");
  EXPECT_LE(r.max_abs_diff, kExportTolerance);
  // The file holds only the merged weights: no adapter tensors.
  auto loaded = torch::jit::load(r.path);
  int64_t base_params = 0;
  for (auto& p : m->named_parameters())
    if (p.key().find(".adapter.") == std::string::npos) base_params += p.value().numel();
  EXPECT_EQ(r.parameters, base_params);
  // A different batch size than the sample works too.
  auto x2 = torch::randn({3, 1, 28, 28});
  torch::NoGradGuard g;
  m->eval();
  EXPECT_LE((loaded.forward({x2}).toTensor() - m(x2)).abs().max().item<double>(), kExportTolerance);
}

TEST(Export, LoadsInPythonWithTheSameOutputs) {
  testkit::TempDir dir;
  auto m = trained_like_vit_with_lora();
  ExportResult r = export_torchscript(*m, torch::randn({4, 1, 28, 28}), dir / "model.pt");
  std::string script = dir / "check.py";
  std::ofstream(script) << "import sys, torch\n"
                           "m = torch.jit.load(sys.argv[1]); s = torch.jit.load(sys.argv[2])\n"
                           "d = (m(s.input) - s.output).abs().max().item()\n"
                           "print('python max abs diff', d)\n"
                           "sys.exit(0 if d <= 1e-5 else 3)\n";
  std::string cmd = std::string(TUNEKIT_PYTHON) + " " + script + " " + r.path + " " + r.sample_path;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST(Export, TrainedRunExportsThroughTheCli) {
  testkit::TempDir data, runs;
  testkit::write_synthetic_fmnist(data.path(), 10, 4);
  Recipe r = parse_recipe(testkit::tiny_recipe_yaml(data.path(), runs.path()), "tiny.yaml", {"train.epochs=1"});
  train(r, {false, true, 0});
  std::string run = runs / "tiny";
  std::string log = runs / "cli.log";
  std::string cmd = std::string(TUNEKIT_CLI) + " export " + run + " --batch 4 > " + log + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  EXPECT_TRUE(std::filesystem::exists(run + "/export/model.pt"));
  EXPECT_TRUE(std::filesystem::exists(run + "/export/model.sample.pt"));
}

TEST(Cli, BadRecipeIsOneLineError) {
  testkit::TempDir dir;
  std::ofstream(dir / "bad.yaml") << "model:\n  depht: 2\n";
  std::string out = dir / "out.txt";
  std::string cmd = std::string(TUNEKIT_CLI) + " validate " + (dir / "bad.yaml") + " > " + out + " 2>&1";
  int rc = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 1);
  std::ifstream in(out);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "error: " + (dir / "bad.yaml") + ":2:3: model.depht: unknown key (did you mean 'depth'?)\n");
}
