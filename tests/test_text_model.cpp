// The text Transformer: causal masking, padding invariance, every attention variant under every
// adapter, and TorchScript export parity (C++ and Python) for the LM and the classifier.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "adapters/attach.h"
#include "models/text.h"
#include "src/from_recipe/adapters.h"
#include "src/export/export.h"
#include "util/error.h"
#include "tests/helpers.h"

using namespace tunekit;
using models::Gate;
using models::Score;

namespace {
constexpr int64_t kVocab = 23, kMaxLen = 12;

models::TextTransformerOptions text_opts(models::TextTask task, models::AttentionVariant v = {}) {
  return models::TextTransformerOptions(kVocab, kMaxLen)
      .dim(16)
      .depth(2)
      .heads(2)
      .mlp_ratio(2.0)
      .attention(v)
      .task(task)
      .num_classes(3);
}

std::vector<models::AttentionVariant> all_variants() {
  std::vector<models::AttentionVariant> out;
  for (auto score : {Score::Softmax, Score::Sigmoid})
    for (auto gate : {Gate::None, Gate::SdpaElementwise, Gate::SdpaHeadwise, Gate::Value})
      for (bool qk : {false, true}) {
        models::AttentionVariant v;
        v.score = score;
        v.gate = gate;
        v.qk_norm = qk;
        out.push_back(v);
      }
  return out;
}

std::string name_of(const models::AttentionVariant& v) {
  return models::to_string(v.score) + "/" + models::to_string(v.gate) + (v.qk_norm ? "/qk_norm" : "");
}

// Random ids in 1..vocab-1 (0 is padding), with the last `pad` positions of row 0 padded.
torch::Tensor random_ids(int64_t B, int64_t N, int64_t pad = 0) {
  auto ids = torch::randint(1, kVocab, {B, N}, torch::kLong);
  if (pad > 0) ids[0].slice(0, N - pad, N).fill_(0);
  return ids;
}
}  // namespace

TEST(TextModel, LmLogitsOfATokenIgnoreLaterTokens) {
  for (const auto& v : all_variants()) {
    SCOPED_TRACE(name_of(v));
    torch::manual_seed(1);
    models::TextTransformer m(text_opts(models::TextTask::CausalLm, v));
    m->eval();
    auto ids = random_ids(2, 10);
    auto changed = ids.clone();
    changed.slice(1, 6, 10) = torch::randint(1, kVocab, {2, 4}, torch::kLong);
    auto a = m(ids), b = m(changed);
    EXPECT_EQ(a.sizes(), torch::IntArrayRef({2, 10, kVocab}));
    EXPECT_TRUE(torch::allclose(a.slice(1, 0, 6), b.slice(1, 0, 6), 1e-5, 1e-6));
    EXPECT_FALSE(torch::allclose(a.slice(1, 6, 10), b.slice(1, 6, 10), 1e-3, 1e-3));
  }
}

TEST(TextModel, ClassifierIgnoresPadding) {
  for (auto pooling : {models::TextPooling::Mean, models::TextPooling::Last})
    for (bool causal : {true, false})
      for (auto score : {Score::Softmax, Score::Sigmoid}) {
        SCOPED_TRACE(models::to_string(pooling) + (causal ? " causal " : " bidirectional ") + models::to_string(score));
        torch::manual_seed(2);
        models::AttentionVariant v;
        v.score = score;
        models::TextTransformer m(text_opts(models::TextTask::Classify, v).pooling(pooling).causal(causal));
        m->eval();
        auto ids = random_ids(1, 7);
        auto padded = torch::cat({ids, torch::zeros({1, 5}, torch::kLong)}, 1);
        auto a = m(ids), b = m(padded);
        // Sigmoid rows are not normalised, so padded keys must be masked out for this to hold.
        EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-6)) << a << b;
      }
}

TEST(TextModel, BadInputsAreClearErrors) {
  models::TextTransformer m(text_opts(models::TextTask::CausalLm));
  EXPECT_THROW(m(torch::zeros({2, kMaxLen + 1}, torch::kLong)), Error);
  EXPECT_THROW(m(torch::zeros({2, 4})), Error);  // float ids
  EXPECT_THROW(models::TextTransformer(models::TextTransformerOptions(10, 8).pad_id(10)), Error);
}

TEST(TextModel, EveryVariantExportsWithParityUnderEveryAdapter) {
  const std::vector<AdapterKind> kinds{AdapterKind::None, AdapterKind::Lora, AdapterKind::Dora, AdapterKind::Hora,
                                       AdapterKind::Doran};
  int64_t checked = 0;
  for (auto task : {models::TextTask::CausalLm, models::TextTask::Classify})
    for (const auto& v : all_variants())
      for (auto kind : kinds) {
        SCOPED_TRACE(models::to_string(task) + " " + name_of(v) + " " + to_string(kind));
        torch::manual_seed(3);
        models::TextTransformer m(text_opts(task, v).pooling(checked % 2 ? models::TextPooling::Last
                                                                       : models::TextPooling::Mean));
        auto ids = random_ids(3, 9, /*pad=*/3);
        m->eval();
        auto base = m(ids);
        if (kind != AdapterKind::None) {
          AdapterConfig c;
          c.kind = kind;
          c.r = 2;
          c.hypernet.embed = 4;
          c.hypernet.hidden = 4;
          c.hypernet.share = kind == AdapterKind::Doran ? HypernetShare::Model : HypernetShare::Parent;
          c.hypernet.share_seeds = kind == AdapterKind::Hora;
          c.targets = {"blocks.*.attn.q", "blocks.*.attn.v", "blocks.*.mlp.fc2"};
          if (v.gate != Gate::None) c.targets.push_back("blocks.*.attn.gate");
          auto report = adapters::attach_adapters(*m, from_recipe::attach_options(c));
          ASSERT_EQ(report.adapted.size(), v.gate != Gate::None ? 8u : 6u);
          EXPECT_TRUE(torch::allclose(m(ids), base, 1e-5, 1e-6));  // every adapter starts at the base
          torch::NoGradGuard g;
          for (auto& p : m->named_parameters())
            if (p.key().find("lora_B") != std::string::npos || p.key().find("W2_B") != std::string::npos)
              p.value().normal_(0, 0.3);
        }
        testkit::TempDir dir;
        ExportResult r = export_torchscript(*m, ids, dir / "model.pt");
        EXPECT_LE(r.max_abs_diff, kExportTolerance);
        ++checked;
      }
  EXPECT_EQ(checked, 2 * 16 * 5);
}

TEST(TextModel, ExportedClassifierLoadsInPython) {
  torch::manual_seed(4);
  models::AttentionVariant v;
  v.score = Score::Sigmoid;
  v.gate = Gate::SdpaHeadwise;
  models::TextTransformer m(text_opts(models::TextTask::Classify, v).pooling(models::TextPooling::Last));
  testkit::TempDir dir;
  ExportResult r = export_torchscript(*m, random_ids(4, 11, 4), dir / "model.pt");
  std::ofstream(dir / "check.py") << "import sys, torch\n"
                                     "m = torch.jit.load(sys.argv[1]); s = torch.jit.load(sys.argv[2])\n"
                                     "d = (m(s.input) - s.output).abs().max().item()\n"
                                     "sys.exit(0 if d <= 1e-5 else 3)\n";
  std::string cmd = std::string(TUNEKIT_PYTHON) + " " + (dir / "check.py") + " " + r.path + " " + r.sample_path;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST(TextModel, GradientsThroughMaskedSigmoidAttentionMatchFiniteDifferences) {
  torch::manual_seed(5);
  models::AttentionVariant v;
  v.score = Score::Sigmoid;
  v.gate = Gate::Value;
  models::TextTransformer m(models::TextTransformerOptions(11, 6).dim(8).depth(1).heads(2).mlp_ratio(1.0).attention(v).task(
      models::TextTask::Classify));
  m->to(torch::kDouble);
  auto ids = torch::tensor({{3, 4, 5, 0, 0}, {1, 2, 3, 4, 5}}, torch::kLong);
  auto q = m->blocks[0]->attn->q;
  double worst = testkit::gradcheck([&](const std::vector<torch::Tensor>&) { return m(ids); },
                                    {q->weight, m->pos_embed, m->token_embed->weight});
  EXPECT_LT(worst, 1e-7);
}
