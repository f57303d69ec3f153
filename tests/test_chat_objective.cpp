// The response-token objective (src/train/chat_objective.h): the masked, shifted loss against a
// loss computed here by hand (log-softmax, explicit loops); packed vs unpacked loss; exact match of
// greedy answers on a table model whose answers are certain and on a tiny Llama trained here.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "models/hf/families.h"
#include "models/hf/llama.h"
#include "models/lm.h"
#include "src/sweep/sweep.h"
#include "src/train/chat_objective.h"
#include "src/train/objective.h"
#include "src/train/setup.h"
#include "src/train/trainer.h"
#include "tests/eval_parts.h"
#include "tests/helpers.h"
#include "tests/tiny_hf.h"
#include "tests/text_helpers.h"
#include "util/error.h"

using namespace tunekit;

namespace {

constexpr int64_t X = kNotTrained;

models::hf::LlamaOptions tiny_llama(int64_t vocab = 24) {
  return testkit::tiny_llama_options(vocab, 32).rms_norm_eps(1e-6).rope_theta(500.0);
}

// The loss by its definition: for each row b and position t whose next label y = labels[b][t+1]
// is trained, −log softmax(logits[b][t])[y], in double, averaged over those positions.
double loss_by_hand(const torch::Tensor& logits, const torch::Tensor& labels) {
  auto lg = logits.to(torch::kDouble);
  double sum = 0;
  int64_t count = 0;
  for (int64_t b = 0; b < labels.size(0); ++b)
    for (int64_t t = 0; t + 1 < labels.size(1); ++t) {
      const int64_t y = labels[b][t + 1].item<int64_t>();
      if (y == X) continue;
      double max = lg[b][t].max().item<double>(), z = 0;
      for (int64_t v = 0; v < lg.size(2); ++v) z += std::exp(lg[b][t][v].item<double>() - max);
      sum += -(lg[b][t][y].item<double>() - max - std::log(z));
      ++count;
    }
  return sum / double(count);
}

torch::Tensor vec(const std::vector<int64_t>& v) { return torch::tensor(v, torch::kLong); }
torch::Tensor mat(const std::vector<std::vector<int64_t>>& rows) {
  std::vector<torch::Tensor> t;
  for (const auto& r : rows) t.push_back(vec(r));
  return torch::stack(t);
}

data::LabelledDataset rows_of(const std::vector<std::vector<int64_t>>& ids, const std::vector<std::vector<int64_t>>& labels) {
  data::LabelledDataset d;
  d.inputs = mat(ids);
  d.labels = mat(labels);
  return d;
}

// A model whose next token depends only on the current one, by a table: its greedy answers are certain.
class TableLm : public models::Model {
 public:
  explicit TableLm(int64_t vocab) : table_(register_buffer("table", torch::zeros({vocab, vocab}))) {}
  void set_next(int64_t from, int64_t to) { table_[from].fill_(0)[to] = 10.0; }
  torch::Tensor forward(const torch::Tensor& x) override {
    return table_.index_select(0, x.reshape({-1})).reshape({x.size(0), x.size(1), table_.size(1)});
  }
  torch::jit::Module to_script(const models::ScriptUnit&) const override { throw Error("TableLm: no script"); }
  double flops_per_sample() const override { return 0; }
  std::string describe() const override { return "table LM"; }

 private:
  torch::Tensor table_;
};

// The same table behind models::CausalLm: it records how many tokens each forward_lm call fed,
// so a test sees the prompt run once and then one token per step over the cache.
class CachedTableLm : public TableLm, public models::CausalLm {
 public:
  using TableLm::TableLm;
  torch::Tensor forward_lm(const models::LmInputs& in) override {
    if (in.cache) {
      fed.push_back(in.ids.size(1));
      in.cache->length += in.ids.size(1);
    }
    return forward(in.ids);
  }
  int64_t context_length() const override { return 6; }
  std::vector<int64_t> fed;
};

// A tokenizer over single characters ("A".."Z", "a".."z", " ") with ids in that order; id 53 is a
// special end-of-turn token.
class CharBackend : public data::TokenizerBackend {
 public:
  static std::string chars() { return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz "; }
  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> out;
    for (char c : text) out.push_back(int64_t(chars().find(c)));
    return out;
  }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
    std::string out;
    for (int64_t id : ids)
      if (id >= 0 && id < 53) out += chars()[id];
      else if (id == 53 && !skip_special) out += "<end>";
    return out;
  }
  std::string piece(int64_t id) const override { return decode({id}, false); }
  int64_t token_id(const std::string& p) const override { return p == "<end>" ? 53 : int64_t(chars().find(p)); }
  int64_t vocab_size() const override { return 54; }
  bool is_special(int64_t id) const override { return id == 53; }
};

data::Tokenizer char_tokenizer(int64_t eos) {
  data::SpecialTokens special;
  special.eos = eos;
  special.stop = {eos};
  return data::Tokenizer(std::make_shared<CharBackend>(), special, "test-chars", "", {});
}

}  // namespace

TEST(ChatObjective, MaskedLossEqualsTheLossComputedByHand) {
  torch::manual_seed(0);
  auto model = models::hf::make_llama(tiny_llama());
  auto ids = torch::randint(0, 24, {3, 9}, torch::kLong);
  auto trained = torch::rand({3, 9}).lt(0.5);
  trained.select(1, 0).fill_(true);  // position 0 is never a target, trained or not
  auto labels = torch::where(trained, ids, torch::full_like(ids, X));
  auto logits = model->forward(ids);
  const double expected = loss_by_hand(logits, labels);
  EXPECT_NEAR(response_loss(logits, labels).item<double>(), expected, 1e-5);

  // Through the objective's batch loss on a split, rows picked by index.
  data::LabelledDataset split;
  split.inputs = ids;
  split.labels = labels;
  ResponseObjective objective;
  auto idx = vec({2, 0});
  EXPECT_NEAR(objective.batch_loss(*model, split, idx).item<double>(),
              loss_by_hand(logits.index_select(0, idx), labels.index_select(0, idx)), 1e-5);

  // Evaluation: the mean over every trained token of the split, batch size irrelevant.
  EvalResult ev = objective.evaluate(*model, split, 2);
  EXPECT_NEAR(ev.loss, expected, 1e-5);
  EXPECT_NEAR(ev.perplexity, std::exp(expected), 1e-4);
  EXPECT_EQ(ev.tokens, labels.slice(1, 1).ne(X).sum().item<int64_t>());
  EXPECT_EQ(ev.positions, 27);
}

TEST(ChatObjective, OneTrainedTokenAmongIgnoredOnes) {
  torch::manual_seed(1);
  auto model = models::hf::make_llama(tiny_llama());
  auto ids = torch::randint(0, 24, {2, 7}, torch::kLong);
  auto labels = torch::full_like(ids, X);
  labels[1][4] = ids[1][4];  // predicted by the logits at position 3 of row 1
  auto logits = model->forward(ids);
  const double expected = -torch::log_softmax(logits[1][3].to(torch::kDouble), 0)[ids[1][4]].item<double>();
  EXPECT_NEAR(response_loss(logits, labels).item<double>(), expected, 1e-5);

  // Token accuracy counts that one token: right when its argmax is the label.
  ResponseObjective objective;
  data::LabelledDataset split;
  split.inputs = ids;
  split.labels = labels;
  EvalResult ev = objective.evaluate(*model, split, 8);
  EXPECT_EQ(ev.tokens, 1);
  EXPECT_EQ(ev.accuracy, logits[1][3].argmax().item<int64_t>() == ids[1][4].item<int64_t>() ? 1.0 : 0.0);

  // Nothing trained: a zero loss that still back-propagates (zeros), never NaN.
  auto none = response_loss(logits, torch::full_like(ids, X));
  EXPECT_EQ(none.item<double>(), 0.0);
  none.backward();
  for (const auto& p : model->parameters())
    if (p.grad().defined()) EXPECT_EQ(p.grad().abs().sum().item<double>(), 0.0);
  // ... and a split with no trained token is refused by the evaluation, not reported as loss 0.
  split.labels = torch::full_like(ids, X);
  const std::string empty = testkit::error_of([&] { objective.evaluate(*model, split, 8); });
  EXPECT_NE(empty.find("has a trained (response) token"), std::string::npos) << empty;
}

TEST(ChatObjective, TargetsInAnotherSegmentAreNotTrained) {
  // Row: segment 0 = positions 0..2, segment 1 = 3..5. Label at 3 is set (the first token of
  // segment 1): the logits at 2 (segment 0) must not learn it.
  auto logits = torch::randn({1, 6, 5}, torch::kDouble);
  auto labels = mat({{X, 1, 2, 3, 4, X}});
  auto segments = mat({{0, 0, 0, 1, 1, 1}});
  auto masked = labels.clone();
  masked[0][3] = X;
  EXPECT_NEAR(response_loss(logits, labels, segments).item<double>(), loss_by_hand(logits, masked), 1e-12);
  EXPECT_GT(std::abs(response_loss(logits, labels).item<double>() - loss_by_hand(logits, masked)), 1e-6);
}

TEST(ChatObjective, BadLabelsAndPackedRowsWithoutForwardLmAreOneLineErrors) {
  auto logits = torch::randn({1, 4, 5});
  const std::string bad = testkit::error_of([&] { response_loss(logits, mat({{X, 1, 7, X}})); });
  EXPECT_NE(bad.find("token id 7 is outside the model's vocabulary of 5"), std::string::npos) << bad;
  EXPECT_EQ(bad.find('\n'), std::string::npos);

  TableLm table(6);
  data::LabelledDataset split = rows_of({{1, 2, 3, 4}}, {{X, X, 3, 4}});
  split.segments = mat({{0, 0, 1, 1}});
  ResponseObjective objective;
  const std::string packed = testkit::error_of([&] { objective.batch_loss(table, split, vec({0})); });
  EXPECT_NE(packed.find("packed rows (data.packing: true) need a model with block-causal attention"), std::string::npos)
      << packed;

  data::LabelledDataset classes;
  classes.inputs = torch::zeros({2, 4}, torch::kLong);
  classes.labels = torch::zeros({2}, torch::kLong);
  EXPECT_NE(testkit::error_of([&] { objective.evaluate(table, classes, 2); }).find("labels must be token ids [N, L]"),
            std::string::npos);
}

TEST(ChatObjective, PackedLossEqualsUnpackedLoss) {
  torch::manual_seed(2);
  auto model = models::hf::make_llama(tiny_llama());
  if (!models::as_causal_lm(*model)) GTEST_SKIP() << "the Llama family has no forward_lm yet (models/lm.h)";
  // Three examples of lengths 5, 4 and 6 (prompt + trained answer); unpacked: one per row,
  // right-padded to 6 with label -100; packed: [ex0 ex1 | pad pad pad] and [ex2].
  std::vector<std::vector<int64_t>> ex_ids{{1, 5, 6, 7, 8}, {1, 9, 10, 11}, {1, 12, 13, 14, 15, 16}};
  std::vector<std::vector<int64_t>> ex_lab{{X, X, 6, 7, 8}, {X, X, X, 11}, {X, X, X, 14, 15, 16}};
  std::vector<std::vector<int64_t>> ids, lab;
  for (size_t e = 0; e < 3; ++e) {
    auto i = ex_ids[e], l = ex_lab[e];
    i.resize(6, 0);
    l.resize(6, X);
    ids.push_back(i);
    lab.push_back(l);
  }
  data::LabelledDataset unpacked = rows_of(ids, lab);
  std::vector<int64_t> row0 = ex_ids[0], lab0 = ex_lab[0], seg0(5, 0);
  row0.insert(row0.end(), ex_ids[1].begin(), ex_ids[1].end());
  lab0.insert(lab0.end(), ex_lab[1].begin(), ex_lab[1].end());
  seg0.insert(seg0.end(), 4, 1);
  row0.resize(12, 0);
  lab0.resize(12, X);
  seg0.resize(12, 2);
  std::vector<int64_t> row1 = ex_ids[2], lab1 = ex_lab[2], seg1(6, 0);
  row1.resize(12, 0);
  lab1.resize(12, X);
  seg1.resize(12, 1);
  data::LabelledDataset packed = rows_of({row0, row1}, {lab0, lab1});
  packed.segments = mat({seg0, seg1});

  ResponseObjective objective;
  const double a = objective.batch_loss(*model, unpacked, torch::arange(3)).item<double>();
  const double b = objective.batch_loss(*model, packed, torch::arange(2)).item<double>();
  EXPECT_NEAR(a, b, 1e-5);
  EXPECT_NEAR(a, loss_by_hand(model->forward(unpacked.inputs), unpacked.labels), 1e-5);
  EXPECT_NEAR(objective.evaluate(*model, packed, 1).loss, a, 1e-5);
}

TEST(ChatObjective, LastTrainedRunIsTheAnswer) {
  auto span = last_trained_run(vec({X, 4, 5, X, X, 7, 8, 9, X, X}));
  ASSERT_TRUE(span.has_value());
  EXPECT_EQ(span->start, 5);
  EXPECT_EQ(span->end, 8);
  EXPECT_EQ(span->answer_tokens(), 2);  // 7 8, then 9 ends the turn
  EXPECT_FALSE(last_trained_run(vec({X, X, X})).has_value());
}

TEST(ChatObjective, ExactMatchOnAModelWhoseAnswersAreCertain) {
  // Vocabulary: the 54 ids of the character tokenizer; 53 ends a turn. Prompts "Q?" with a
  // question letter; the table answers A -> "Yes", B -> "no", C -> "yes" then ends; D loops.
  const int64_t END = 53;
  auto enc = [](const std::string& s) { return CharBackend().encode(s); };
  TableLm table(54);
  // A table conditions on the current token only: give each question its own letter, answered
  // through distinct letters so chains do not collide.
  table.set_next(0, 24);   // A -> Y
  table.set_next(24, 30);  // Y -> e
  table.set_next(30, 44);  // e -> s
  table.set_next(44, END); // s -> end
  table.set_next(1, 39);   // B -> n
  table.set_next(39, 40);  // n -> o
  table.set_next(40, END); // o -> end
  table.set_next(3, 3);    // D -> D -> D ... never ends
  // Rows: [prompt letter, answer..., END, pad]; labels mark the answer and END.
  auto row = [&](const std::string& prompt, const std::string& answer, int64_t len) {
    std::vector<int64_t> ids = enc(prompt), lab(ids.size(), X);
    for (int64_t id : enc(answer)) {
      ids.push_back(id);
      lab.push_back(id);
    }
    ids.push_back(END);
    lab.push_back(END);
    ids.resize(len, 52);
    lab.resize(len, X);
    return std::make_pair(ids, lab);
  };
  std::vector<std::pair<std::string, std::string>> cases{
      {"A", "Yes"},  // match
      {"B", "no"},   // match
      {"A", "yes"},  // ids differ (Y vs y); the text match ignores case
      {"B", "No "},  // ids differ; text match (case, trailing space)
      {"B", "nope"}, // mismatch: the model ends after "no"
      {"D", "DD"},   // mismatch: never ends (stops at len + 8 tokens)
      {"A", "Ye"},   // mismatch: the model goes on with "s"
  };
  std::vector<std::vector<int64_t>> ids, lab;
  for (const auto& [p, a] : cases) {
    auto [i, l] = row(p, a, 8);
    ids.push_back(i);
    lab.push_back(l);
  }
  data::LabelledDataset split = rows_of(ids, lab);
  const data::Tokenizer tok = char_tokenizer(END);
  ExactMatchOptions options;
  options.tokenizer = &tok;
  ExactMatchResult r = exact_match(table, split, options);
  ASSERT_TRUE(r.measured) << r.why_not;
  EXPECT_EQ(r.rows, 7);
  EXPECT_EQ(r.matched, 2);
  EXPECT_EQ(r.text_matched, 4);
  EXPECT_EQ(r.generated_tokens, 3 + 2 + 3 + 2 + 2 + 10 + 3);

  // Over a cache: the prompt once, then one token per step; the same answers (a context of 6
  // tokens cuts the never-ending row at 5 new tokens).
  CachedTableLm cached(54);
  for (int64_t from = 0; from < 54; ++from)
    cached.set_next(from, table.forward(vec({from}).view({1, 1}))[0][0].argmax().item<int64_t>());
  ExactMatchResult c = exact_match(cached, split, options);
  EXPECT_EQ(c.matched, 2);
  EXPECT_EQ(c.text_matched, 4);
  EXPECT_EQ(c.generated_tokens, 3 + 2 + 3 + 2 + 2 + 5 + 3);
  std::vector<int64_t> first_row(cached.fed.begin(), cached.fed.begin() + 4);
  EXPECT_EQ(first_row, (std::vector<int64_t>{1, 1, 1, 1}));  // prompt "A" (1 token), then Y, e, s; the end not fed
  EXPECT_EQ(int64_t(cached.fed.size()), c.generated_tokens + c.rows - 1);  // every row but the cut one ends by a fed step

  // Without a tokenizer: the row's own turn-ending token stops generation; ids only.
  r = exact_match(table, split, {});
  EXPECT_EQ(r.matched, 2);
  EXPECT_EQ(r.text_matched, 0);
  // The first rows only.
  options.max_rows = 3;
  EXPECT_EQ(exact_match(table, split, options).rows, 3);

  // Through the objective: exact match is the score, reported in the fields and the line.
  ResponseObjective objective(0);
  objective.set_tokenizer(tok);
  EvalResult ev = objective.evaluate(table, split, 4);
  EXPECT_DOUBLE_EQ(ev.exact_match, 2.0 / 7.0);
  EXPECT_DOUBLE_EQ(ev.text_match, 4.0 / 7.0);
  EXPECT_DOUBLE_EQ(objective.score(ev), 2.0 / 7.0);
  EXPECT_EQ(objective.eval_fields(ev)["exact_match_rows"], 7);
  EXPECT_NE(objective.eval_text(ev).find("exact match 0.2857 (7 rows)"), std::string::npos) << objective.eval_text(ev);
  EXPECT_NE(ev.report().find("exact match 0.2857"), std::string::npos) << ev.report();

  // Split among ranks (data parallel): the parts summed are the whole split's evaluation, with
  // every answer row generated once (all of them, or the first three).
  for (int64_t max_rows : {0, 3}) {
    ResponseObjective o(max_rows);
    o.set_tokenizer(tok);
    const EvalResult whole = o.evaluate(table, split, 4);
    for (int parts : {2, 3, 9}) {
      const EvalResult m = testkit::evaluate_in_parts(o, table, split, 4, parts);
      EXPECT_EQ(m.n, whole.n);
      EXPECT_EQ(m.tokens, whole.tokens);
      EXPECT_EQ(m.positions, whole.positions);
      EXPECT_NEAR(m.loss, whole.loss, 1e-6 * std::abs(whole.loss));  // float32 sums over other batches
      EXPECT_NEAR(m.perplexity, whole.perplexity, 1e-5 * whole.perplexity);
      EXPECT_DOUBLE_EQ(m.accuracy, whole.accuracy);
      EXPECT_EQ(m.answer_rows, max_rows ? 3 : 7) << parts;
      EXPECT_DOUBLE_EQ(m.exact_match, whole.exact_match) << parts;
      EXPECT_DOUBLE_EQ(m.text_match, whole.text_match) << parts;
      EXPECT_EQ(m.generated_tokens, whole.generated_tokens) << parts;
      EXPECT_EQ(m.long_answers, whole.long_answers) << parts;
    }
  }
}

TEST(ChatObjective, LongAnswersTurnExactMatchOff) {
  TableLm table(40);
  auto make = [&](int64_t answer_len, int64_t n_rows) {
    std::vector<std::vector<int64_t>> ids, lab;
    for (int64_t r = 0; r < n_rows; ++r) {
      std::vector<int64_t> i{1, 2}, l{X, X};
      for (int64_t k = 0; k < answer_len; ++k) {
        i.push_back(5);
        l.push_back(5);
      }
      i.push_back(3);
      l.push_back(3);
      ids.push_back(i);
      lab.push_back(l);
    }
    return rows_of(ids, lab);
  };
  ExactMatchResult r = exact_match(table, make(kMaxAnswerTokens + 1, 2), {});
  EXPECT_FALSE(r.measured);
  EXPECT_EQ(r.long_answers, 2);
  EXPECT_NE(r.why_not.find("2 of 2 rows have no answer of at most 32 tokens"), std::string::npos) << r.why_not;
  EXPECT_TRUE(exact_match(table, make(kMaxAnswerTokens, 2), {}).measured);

  // Not measured: the score is −loss and no exact-match field is written.
  ResponseObjective objective;
  EvalResult ev = objective.evaluate(table, make(kMaxAnswerTokens + 1, 2), 2);
  EXPECT_LT(ev.exact_match, 0);
  EXPECT_DOUBLE_EQ(objective.score(ev), -ev.loss);
  EXPECT_FALSE(objective.eval_fields(ev).contains("exact_match"));
}

TEST(ChatObjective, ExactMatchOfATinyLlamaTrainedOnAMapping) {
  // Six questions, each [bos, q] -> a two-token answer then END; trained with the response loss
  // only. Its greedy answers must then match on all six, and a row whose reference differs from
  // what it learnt must not.
  torch::manual_seed(3);
  auto model = models::hf::make_llama(tiny_llama(24));
  const int64_t BOS = 1, END = 2, PAD = 0;
  std::vector<std::vector<int64_t>> ids, lab;
  for (int64_t k = 0; k < 6; ++k) {
    const int64_t qk = 4 + k, a1 = 10 + (k * 5) % 12, a2 = 10 + (k * 7 + 3) % 12;
    ids.push_back({BOS, 3, qk, a1, a2, END, PAD, PAD});
    lab.push_back({X, X, X, a1, a2, END, X, X});
  }
  data::LabelledDataset train = rows_of(ids, lab);
  ResponseObjective objective;
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-2));
  model->train();
  double loss = 0;
  for (int step = 0; step < 150; ++step) {
    opt.zero_grad();
    auto l = objective.batch_loss(*model, train, torch::arange(6));
    l.backward();
    opt.step();
    loss = l.item<double>();
  }
  ASSERT_LT(loss, 0.05);
  EvalResult ev = objective.evaluate(*model, train, 6);
  EXPECT_DOUBLE_EQ(ev.exact_match, 1.0);
  EXPECT_DOUBLE_EQ(ev.accuracy, 1.0);

  // A mismatch: the first question's reference changed to another answer.
  data::LabelledDataset wrong = train;
  wrong.inputs = train.inputs.clone();
  wrong.labels = train.labels.clone();
  const int64_t other = 22;  // no question's answer
  wrong.inputs[0][3] = other;
  wrong.labels[0][3] = other;
  EvalResult ev2 = objective.evaluate(*model, wrong, 6);
  EXPECT_DOUBLE_EQ(ev2.exact_match, 5.0 / 6.0);
  EXPECT_GT(objective.score(ev), objective.score(ev2));
}

TEST(ChatObjective, ChosenForChatDataAndReportsTheBest) {
  Recipe recipe;
  recipe.data.dataset = DatasetKind::Chat;
  EXPECT_EQ(make_objective(recipe)->name(), "response");
  recipe.data.dataset = DatasetKind::Instruct;
  EXPECT_EQ(make_objective(recipe)->name(), "response");

  ResponseObjective objective;
  io::TrainState state;
  TrainResult r;
  state.best_epoch = 2;
  state.best_metric = 0.75;  // an exact match
  objective.report_best(state, r);
  EXPECT_FALSE(r.lm);
  EXPECT_DOUBLE_EQ(r.best_val_accuracy, 0.75);
  state.best_metric = -1.25;  // −loss
  objective.report_best(state, r);
  EXPECT_TRUE(r.lm);
  EXPECT_DOUBLE_EQ(r.best_val_loss, 1.25);
  state.best_metric = objective.score(EvalResult{});  // a zero loss, no exact match: −0.0
  objective.report_best(state, r);
  EXPECT_TRUE(r.lm);

  data::LabelledDataset train = rows_of({{1, 2, 3, 4}, {1, 2, 3, 4}}, {{X, X, 3, 4}, {X, 2, 3, X}});
  EXPECT_EQ(objective.describe_samples(train, true), "examples of 4 tokens, 2.0 trained (response) tokens per row");
  const Throughput t = objective.throughput(10, 4);
  EXPECT_DOUBLE_EQ(t.per_second, 40);
  EXPECT_EQ(t.unit, "tokens/s (20 trained)");
}

namespace {

// Instruction records whose answer is decided by one word: "red" mails are spam, "blue" ones ham.
std::string labelling_records(int n, unsigned seed) {
  const std::vector<std::string> words{"offer", "meeting", "invoice", "party", "report", "prize", "notes", "trip"};
  std::string out;
  std::srand(seed);
  for (int i = 0; i < n; ++i) {
    const bool red = std::rand() % 2 == 0;
    out += fmt::format(R"({{"instruction": "Label the {} {} mail.", "output": "{}"}})", words[std::rand() % words.size()],
                       red ? "red" : "blue", red ? "spam" : "ham") +
           "\n";
  }
  return out;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// The labelling task in `data` (train/val/test records and a tokenizer that knows their words),
// and the head of a tiny instruct recipe on it; `rest` (train:, output:, ...) follows it.
std::string labelling_recipe(const testkit::TempDir& data, const std::string& rest) {
  write_text(data / "train.jsonl", labelling_records(160, 1));
  write_text(data / "val.jsonl", labelling_records(30, 2));
  write_text(data / "test.jsonl", labelling_records(30, 3));
  data::TokenizerTrainOptions t;
  t.vocab_size = 400;
  auto texts = testkit::synthetic_mails(200, 1).texts;
  texts.push_back("Label the red mail. spam Label the blue mail. ham");
  data::Tokenizer::train(texts, t, data / "tok.model");
  return fmt::format(R"(seed: 4
threads: {{torch: 1, blas: 1}}
model: {{kind: text, task: causal_lm, vocab_size: 400, max_seq_len: 64, dim: 32, depth: 2, heads: 2, mlp_ratio: 2.0}}
data:
  dataset: instruct
  train_file: "{0}/train.jsonl"
  val_file: "{0}/val.jsonl"
  test_file: "{0}/test.jsonl"
  template: plain
  tokenizer: {{model: "{0}/tok.model"}}
  batch_size: 16
  eval_batch_size: 32
optimizer: {{lr: 3.0e-3}}
)", data.path()) + rest;
}

}  // namespace

TEST(ChatObjective, InstructRunTrainsOnResponsesAndEvalReportsExactMatch) {
  testkit::TempDir data, runs;
  const std::string yaml = labelling_recipe(data,
                                            "schedule: {kind: cosine, warmup_steps: 5}\n"
                                            "train: {epochs: 10, log_every: 5}\n"
                                            "output: {dir: \"" + runs.path() + "\", name: chat}\n");
  const Recipe recipe = parse_recipe(yaml, "chat.yaml");
  TrainResult r = train(recipe, {false, true, 0});
  EXPECT_FALSE(r.lm);  // exact match picked the best checkpoint
  EXPECT_GE(r.best_val_accuracy, 0.9);

  // metrics.jsonl: every eval line carries the response loss and the exact match of all 30 rows.
  std::istringstream lines(testkit::read_file(runs / "chat/metrics.jsonl"));
  std::string line;
  int evals = 0;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == "eval") {
      ++evals;
      EXPECT_EQ(j["exact_match_rows"], 30) << line;
      EXPECT_TRUE(j.contains("perplexity") && j.contains("text_match")) << line;
    }
    if (j["type"] == "summary") EXPECT_TRUE(j.contains("best_val_exact_match") && j.contains("trained_tokens_per_second"));
  }
  EXPECT_EQ(evals, 10);

  // `tunekit eval` on the test split: all rows, printed and written.
  const std::string log = runs / "eval.log";
  ASSERT_EQ(WEXITSTATUS(std::system((std::string(TUNEKIT_CLI) + " eval " + (runs / "chat") + " > " + log + " 2>&1").c_str())), 0)
      << testkit::read_file(log);
  const std::string out = testkit::read_file(log);
  EXPECT_NE(out.find("response loss"), std::string::npos) << out;
  EXPECT_NE(out.find("exact match"), std::string::npos) << out;
  EXPECT_NE(out.find("(30 rows; text match"), std::string::npos) << out;
  auto ev = nlohmann::json::parse(testkit::read_file(runs / "chat/eval_test.json"));
  EXPECT_EQ(ev["exact_match_rows"], 30);
  EXPECT_GE(ev["exact_match"].get<double>(), 0.9) << ev.dump();
  EXPECT_LT(ev["loss"].get<double>(), 2.0) << ev.dump();
}

// A sweep over chat / instruction data scores its test cells by what chose their checkpoints: the
// exact match of the generated answers (the token accuracy kept beside it), and says so.
TEST(ChatObjective, SweepScoresInstructCellsByExactMatch) {
  testkit::TempDir data, runs;
  const std::string recipe = runs / "chat.yaml";
  write_text(recipe, labelling_recipe(data,
                                      "train: {epochs: 2}\n"
                                      "output: {dir: \"" + runs.path() + "\"}\n"
                                      "sweep: {seeds: [4], grid: {optimizer.lr: [3e-3]}}\n"));
  SweepOptions o;
  o.recipe_path = recipe;
  o.dir = runs / "sweeps";
  const SweepResult res = run_sweep(o);
  const std::string cell = runs / "sweeps/chat/cells/optimizer.lr-3e-3__seed-4";
  const auto j = nlohmann::json::parse(testkit::read_file(cell + "/result.json"));
  EXPECT_EQ(j["test_metric"], "exact match of the generated answers");
  ASSERT_TRUE(j.contains("test_token_accuracy"));
  // the cell's best checkpoint evaluated again here
  LoadedRun run = load_run(cell, "best");
  const auto splits = load_data(run.recipe, cell);
  const EvalResult ev = evaluate(*run.run.model, splits.test, run.recipe);
  ASSERT_GE(ev.exact_match, 0.0);
  EXPECT_DOUBLE_EQ(j["test_accuracy"].get<double>(), ev.exact_match);
  EXPECT_DOUBLE_EQ(j["test_token_accuracy"].get<double>(), ev.accuracy);
  EXPECT_NE(testkit::read_file(res.summary).find("metric: exact match of the generated answers on the test split"),
            std::string::npos)
      << testkit::read_file(res.summary);

  // A cell tested before the metric was named (token accuracy, no test_metric) is read again.
  auto old = j;
  old.erase("test_metric");
  old.erase("test_token_accuracy");
  old["test_accuracy"] = -1.0;
  write_text(cell + "/result.json", old.dump(2));
  const SweepResult again = run_sweep(o);
  EXPECT_EQ(again.ran, 0);
  EXPECT_EQ(again.tested_from_tuning, 1);
  const auto j2 = nlohmann::json::parse(testkit::read_file(cell + "/result.json"));
  EXPECT_EQ(j2["test_metric"], "exact match of the generated answers");
  EXPECT_DOUBLE_EQ(j2["test_accuracy"].get<double>(), ev.exact_match);
}
