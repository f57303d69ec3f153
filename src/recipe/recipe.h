// The typed recipe: everything a run needs, parsed from YAML plus `key.path=value`
// overrides and validated up front. Past this point nothing reads YAML or strings-as-enums.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "adapters/gate_kind.h"
#include "adapters/kind.h"
#include "models/attention_variant.h"
#include "util/threads.h"

namespace tunekit {

struct ModelConfig {
  std::string kind = "vit";  // vit | text
  int64_t image_size = 28, channels = 1, patch = 4, dim = 128, depth = 4, heads = 4;  // image_size..patch: vit
  // text: vocabulary (= the tokenizer's), context length, task and head.
  int64_t vocab_size = 4000, max_seq_len = 128, pad_id = 3;
  std::string task = "classify";  // classify | causal_lm
  std::string pooling = "mean";   // classify: mean | last
  bool causal = true;             // text attention is causal (false: bidirectional classifier)
  bool is_text() const { return kind == "text"; }
  bool is_lm() const { return kind == "text" && task == "causal_lm"; }
  double mlp_ratio = 2.0;
  int64_t num_classes = 10;
  double dropout = 0.0;
  models::AttentionVariant attention;  // model.attention: score, sigmoid_bias, gate, qk_norm
  bool post_attn_norm = false;
};

struct InitFromConfig {
  std::string run;                   // run directory to start from; empty = random init
  std::string checkpoint = "best";   // best | last
  std::vector<std::string> exclude;  // parameter-name globs not loaded (e.g. "head.*")
};

using adapters::AdapterKind;  // adapters/kind.h: one row per kind

// Where a HoRA/DoRAN generator's shared first layers are shared: by each target alone (across
// its heads), by all targets under one parent module (q and v of one attention), or model-wide.
enum class HypernetShare { Target, Parent, Model };
enum class HypernetActivation { Tanh, Relu, Gelu };

struct HypernetConfig {  // adapter.hypernet (METHODS.md §4, §5)
  int64_t embed = 16, hidden = 32;
  HypernetActivation act = HypernetActivation::Tanh;
  HypernetShare share = HypernetShare::Parent;  // default: parent for hora, model for doran
  bool share_seeds = true;                      // default: true for hora, false for doran
};

struct GateConfig {  // adapter.gate (prompt experts; METHODS.md §6, §7)
  adapters::GateKind kind = adapters::GateKind::Softmax;
  int64_t top_k = 2;
  double temperature = 1.0;
  adapters::GateActivation act = adapters::GateActivation::Identity;
  double tau1 = 0.01, tau2 = 0.01, noise = 0.0;
  double bias_init = -2.0;  // g ≈ 0.12 at the start: near the frozen model
  adapters::GateInput input = adapters::GateInput::Token;
};

struct AdapterConfig {
  AdapterKind kind = AdapterKind::None;
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> targets;          // module-name globs, e.g. "blocks.*.attn.q"
  std::vector<std::string> modules_to_save;  // trained in full beside the adapter, e.g. "head"
  HypernetConfig hypernet;                   // hora, doran
  double tau_init = 1e-3;                    // doran: τ at the start
  bool detach_norm = true;                   // dora, doran: norm constant in backward
  std::string init_from;                     // a saved adapter (dir with adapter_model.safetensors, or a run)
  int64_t experts = 1;                       // prompt_expert: K trainable experts
  int64_t expert_hidden = 0;                 // prompt_expert: 0 = Linear experts, > 0 = MLP width
  GateConfig gate;                           // prompt_expert
  int64_t prefix_length = 10;                // prefix: prompt tokens per attention layer
  bool prefix_reparam = false;               // prefix: generate them with a shared MLP (2410.02200)
  int64_t prefix_hidden = 64;                // prefix: that MLP's width
  bool saves_adapter_file() const { return adapters::kind_row(kind).peft_type != nullptr; }
  bool low_rank() const { return adapters::kind_row(kind).low_rank; }
};

struct TokenizerConfig {  // data.tokenizer (text)
  std::string model;             // an existing sentencepiece .model; empty = train one (or init_from.run's)
  std::string type = "unigram";  // unigram | bpe, when training
  int64_t vocab_size = 0;        // when training; 0 = model.vocab_size
  double character_coverage = 0.9995;
};

struct DataConfig {
  std::string dataset = "fashion_mnist";  // fashion_mnist | spam_assassin | text
  std::string root;              // default: .data/fashion-mnist if prepared, else the Debian path;
                                 // spam_assassin: .data/spam-assassin
  std::vector<int64_t> classes;  // fashion_mnist: subset of labels, remapped to 0..k-1; empty = all
  // Text files (dataset text; spam_assassin fills them in): JSONL, CSV or TSV.
  std::string train_file, val_file, test_file;  // val_file empty: val_fraction of train
  std::string format = "auto";                  // auto | jsonl | csv | tsv
  std::string text_field = "text", label_field = "label", group_field;
  std::vector<std::string> labels;              // class names in order; empty = sorted training labels
  TokenizerConfig tokenizer;
  bool is_text() const { return dataset != "fashion_mnist"; }
  double val_fraction = 0.1;     // held out from train, stratified, seeded
  int64_t batch_size = 64;
  int64_t eval_batch_size = 512;
  int64_t limit_train = 0;       // 0 = all
};

enum class OptimizerKind { AdamW, SGD };

struct OptimizerConfig {
  OptimizerKind name = OptimizerKind::AdamW;
  double lr = 1e-3;
  double weight_decay = 0.01;
  std::array<double, 2> betas{0.9, 0.999};
  double eps = 1e-8;
  double momentum = 0.9;  // SGD only
};

enum class ScheduleKind { Constant, Cosine, Linear };

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::Cosine;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;  // final lr = lr * min_lr_ratio
};

struct TrainConfig {
  int64_t epochs = 1;
  int64_t max_steps = 0;  // optimizer steps; 0 = run all epochs
  int64_t grad_accum = 1;
  double clip_grad_norm = 1.0;  // 0 = off
  int64_t log_every = 50;
  int64_t checkpoint_every = 0;  // optimizer steps between mid-epoch checkpoints; 0 = per epoch
};

struct OutputConfig {
  std::string dir = "runs";
  std::string name;  // default: the recipe file's stem
};

// One entry of `sweep.variants`: a named set of overrides applied together.
struct SweepVariant {
  std::string name;    // label in tables (default: "key=value ...")
  std::string series;  // plot curve it belongs to (default: name)
  std::vector<std::pair<std::string, std::string>> overrides;
};

// `sweep:` — variants (each a set of overrides) times a grid over recipe keys (each value applied
// as an override) times seeds.
struct SweepConfig {
  std::vector<SweepVariant> variants;                                  // empty = one unnamed variant
  std::vector<std::pair<std::string, std::vector<std::string>>> grid;  // key path -> values, in file order
  std::vector<int64_t> seeds;                                         // empty = the recipe's seed
  std::string plot_x = "grid";  // grid: first numeric grid key; trainable_params: x = trainable parameters
};

// `lab:` — the estimation lab (tunekit fit): a ground-truth MoE, the fit, and the experiment.
// Matrices are flat row-major lists (beta: experts x dim, a: experts x dim, or experts x classes
// x dim for multinomial).
struct LabTruthConfig {
  int64_t experts = 2, dim = 1;
  std::vector<double> beta, bias, a, c, sigma;
  std::vector<double> frozen_a;  // contaminated: the pre-trained expert a0, c0, sigma0
  double frozen_c = 0, frozen_sigma = 1;
  double approach = 0;   // contaminated: prompt = frozen + (prompt - frozen) * (n / approach_n0)^-approach
  double approach_n0 = 1000;
};

struct LabFitConfig {
  int64_t experts = 2;            // fitted experts (> truth: over-specified)
  std::string method = "gradient";  // gradient (L-BFGS) | em
  int64_t restarts = 3, iterations = 200;
  double tolerance = 1e-9;
  double bound = 10.0;              // gradient fits: |β|, |b|, |a|, |c| < bound (0 = unbounded)
};

struct LabConfig {
  bool present = false;
  std::string experiment = "rate";  // rate: loss vs n | select: choose the number of experts
  std::string family = "gaussian";  // gaussian | regression | contaminated | multinomial
  std::string gate = "softmax";     // softmax | sigmoid
  std::string expert = "linear";    // gaussian, regression: linear | relu | gelu | tanh (act(aᵀx + c))
  int64_t classes = 0;              // multinomial
  LabTruthConfig truth;
  LabFitConfig fit;
  std::vector<int64_t> n{1000, 3162, 10000, 31623, 100000};
  int64_t replications = 8;
  double theory_slope = -0.5;       // shown beside the fitted slope
  int64_t max_experts = 5;          // select: fits of 1..max_experts for AIC/BIC; the dendrogram fit uses it
};

struct Recipe {
  std::string source;         // file the recipe came from ("<string>" in tests)
  std::string resolved_yaml;  // the recipe with overrides applied, as written to the run dir
  int64_t seed = 0;
  ThreadPolicy threads;
  ModelConfig model;
  InitFromConfig init_from;
  AdapterConfig adapter;
  DataConfig data;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  TrainConfig train;
  OutputConfig output;
  SweepConfig sweep;
  LabConfig lab;

  std::string run_dir() const { return output.dir + "/" + output.name; }
};

// Reads and validates a recipe file; overrides are "key.path=value" strings.
Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides = {});
// Same, from YAML text (`source` names it in error messages).
Recipe parse_recipe(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});

std::string to_string(AdapterKind k);
std::string to_string(HypernetShare s);
std::string to_string(HypernetActivation a);
std::string to_string(ScheduleKind k);
std::string to_string(OptimizerKind k);

}  // namespace tunekit
