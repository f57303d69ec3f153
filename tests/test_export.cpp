#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/import.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "adapters/attach.h"
#include "adapters/prefix.h"
#include "adapters/prompt_expert.h"
#include "models/text.h"
#include "models/vit.h"
#include "src/from_recipe/adapters.h"
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
  adapters::attach_adapters(*m, from_recipe::attach_options(c));
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

namespace {
// Every tensor an export holds (parameters and buffers, at every depth), by its dotted name.
std::set<std::string> exported_names(const torch::jit::Module& m) {
  std::set<std::string> out;
  for (const auto& p : m.named_parameters()) out.insert(p.name);
  for (const auto& b : m.named_buffers()) out.insert(b.name);
  return out;
}

// The eager names an export keeps: every parameter and buffer except the adapter tensors that
// fold into the base weights (under ".adapter." and a model-wide "hypernets."). A reparameterised
// prefix's generator (prefix.embedding, prefix.fc1, prefix.fc2) is folded to the tensors it
// generates, exported as prefix.prefix_k / prefix.prefix_v (the names a direct prefix has): the
// only exported names without an eager tensor of the same name. A learnable sigmoid_bias, an eager
// parameter, is exported as a buffer of the same name.
std::set<std::string> kept_eager_names(torch::nn::Module& m) {
  std::set<std::string> out;
  auto keep = [&](const std::string& key) {
    if (key.find(".adapter.") != std::string::npos || key.rfind("hypernets.", 0) == 0) return;
    const auto at = key.find(".prefix.");
    if (at != std::string::npos) {  // direct: the name itself; reparam: the folded tensors
      out.insert(key.substr(0, at) + ".prefix.prefix_k");
      out.insert(key.substr(0, at) + ".prefix.prefix_v");
      return;
    }
    out.insert(key);
  };
  for (const auto& p : m.named_parameters()) keep(p.key());
  for (const auto& b : m.named_buffers()) keep(b.key());
  return out;
}

std::shared_ptr<adapters::PromptExpertImpl> prompt_expert(int64_t in, int64_t out, int64_t hidden) {
  return std::make_shared<adapters::PromptExpertImpl>(
      adapters::PromptExpertOptions(in, out, adapters::GateOptions(in, 2)).hidden(hidden));
}

// Exports `m`, then checks the names (C++ and Python's torch.jit.load) against the eager model.
void expect_eager_names_in_export(models::Model& m, const torch::Tensor& sample) {
  testkit::TempDir dir;
  ExportResult r = export_torchscript(m, sample, dir / "model.pt");
  EXPECT_LE(r.max_abs_diff, kExportTolerance);
  const auto expected = kept_eager_names(m);
  EXPECT_EQ(exported_names(torch::jit::load(r.path)), expected);
  std::ofstream names(dir / "names.txt");
  for (const auto& n : expected) names << n << "\n";
  names.close();
  std::ofstream(dir / "names.py") << "import sys, torch\n"
                                     "m = torch.jit.load(sys.argv[1])\n"
                                     "got = {n for n, _ in m.named_parameters()} | {n for n, _ in m.named_buffers()}\n"
                                     "want = set(open(sys.argv[2]).read().split())\n"
                                     "print('only in export:', sorted(got - want), 'only in eager:', sorted(want - got))\n"
                                     "sys.exit(0 if got == want else 3)\n";
  std::string cmd = std::string(TUNEKIT_PYTHON) + " " + (dir / "names.py") + " " + r.path + " " + (dir / "names.txt");
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}
}  // namespace

TEST(ExportNames, VitWithLoraPromptExpertsAndPrefixesKeepsTheEagerNames) {
  torch::manual_seed(6);
  models::AttentionVariant v;
  v.score = models::Score::Sigmoid;
  v.bias_mode = models::SigmoidBias::Learnable;
  v.gate = models::Gate::SdpaHeadwise;
  v.qk_norm = true;
  models::ViT m(models::ViTOptions().image_size(8).patch(4).dim(16).depth(2).heads(2).num_classes(3).attention(v)
                    .post_attn_norm(true));
  AdapterConfig c;
  c.kind = AdapterKind::Lora;
  c.r = 2;
  c.targets = {"blocks.*.attn.q", "blocks.*.attn.gate", "blocks.1.mlp.fc2", "head"};
  adapters::attach_adapters(*m, from_recipe::attach_options(c));
  m->blocks[0]->attn->attach_prefix(
      std::make_shared<adapters::PrefixImpl>(adapters::PrefixOptions(16, 3).reparam(true).hidden(5)));
  m->blocks[1]->attn->attach_prefix(std::make_shared<adapters::PrefixImpl>(adapters::PrefixOptions(16, 2)));
  m->blocks[0]->attach_output(prompt_expert(16, 16, 4));
  m->blocks[1]->attach_mlp_output(prompt_expert(16, 16, 0));
  m->head->attach_output(prompt_expert(16, 3, 0));
  {
    torch::NoGradGuard g;
    for (auto& p : m->named_parameters())
      if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.3);
  }
  expect_eager_names_in_export(*m, torch::randn({3, 1, 8, 8}));
  // The names a reader looks for, spelled out.
  testkit::TempDir dir;
  auto names = exported_names(torch::jit::load(export_torchscript(*m, torch::randn({2, 1, 8, 8}), dir / "m.pt").path));
  for (const char* n : {"patch_embed.weight", "blocks.0.attn.q.weight", "blocks.1.mlp.fc2.weight", "blocks.0.attn.q_norm.weight",
                        "blocks.0.attn.sigmoid_bias", "blocks.0.attn.prefix.prefix_k", "blocks.1.attn.prefix.prefix_v",
                        "blocks.0.prompt.experts.1.fc2.weight", "blocks.1.mlp.prompt.gate.weight", "head.prompt.experts.0.fc1.bias"})
    EXPECT_EQ(names.count(n), 1u) << n;
}

TEST(ExportNames, TextModelsKeepTheEagerNames) {
  {
    SCOPED_TRACE("causal LM, DoRAN with a model-wide hypernetwork, merged");
    torch::manual_seed(7);
    models::AttentionVariant v;
    v.gate = models::Gate::Value;
    v.qk_norm = true;
    models::TextTransformer m(models::TextTransformerOptions(19, 10).dim(8).depth(2).heads(2).attention(v));
    AdapterConfig c;
    c.kind = AdapterKind::Doran;
    c.r = 2;
    c.hypernet.embed = 4;
    c.hypernet.hidden = 4;
    c.hypernet.share = HypernetShare::Model;
    c.hypernet.share_seeds = false;
    c.targets = {"blocks.*.attn.q", "blocks.*.attn.v", "blocks.*.mlp.fc1"};
    adapters::attach_adapters(*m, from_recipe::attach_options(c));
    expect_eager_names_in_export(*m, torch::randint(1, 19, {3, 7}, torch::kLong));
  }
  {
    SCOPED_TRACE("classifier, LoRA merged, prompt experts and prefixes");
    torch::manual_seed(8);
    models::TextTransformer m(
        models::TextTransformerOptions(19, 10).dim(8).depth(2).heads(2).task(models::TextTask::Classify).num_classes(3));
    AdapterConfig c;
    c.kind = AdapterKind::Lora;
    c.r = 2;
    c.targets = {"blocks.*.attn.v", "head"};
    adapters::attach_adapters(*m, from_recipe::attach_options(c));
    m->blocks[0]->attn->attach_prefix(
        std::make_shared<adapters::PrefixImpl>(adapters::PrefixOptions(8, 2).reparam(true).hidden(4)));
    m->blocks[1]->attn->attach_prefix(std::make_shared<adapters::PrefixImpl>(adapters::PrefixOptions(8, 3)));
    m->blocks[0]->attach_mlp_output(prompt_expert(8, 8, 3));
    m->head->attach_output(prompt_expert(8, 3, 0));
    auto ids = torch::randint(1, 19, {3, 7}, torch::kLong);
    ids[0].slice(0, 5, 7).fill_(0);  // padding
    expect_eager_names_in_export(*m, ids);
  }
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
