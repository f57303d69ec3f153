// The typed recipe: everything a run needs, parsed from YAML plus `key.path=value`
// overrides and validated up front. Past this point nothing reads YAML or strings-as-enums:
// every choice is an enum with its table of names (util/enum_table.h) next to it.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "adapters/gate_kind.h"
#include "adapters/hypernet_kind.h"
#include "adapters/kind.h"
#include "data/chat.h"
#include "models/attention_variant.h"
#include "models/precision_kind.h"
#include "models/text_task.h"
#include "src/lab/lab_recipe.h"
#include "util/enum_table.h"
#include "util/threads.h"

namespace tunekit {

// tunekit's own models (vit, text), and the Hugging Face families a `model.from_hf` directory
// holds (gpt2, llama, mistral, qwen2; vit with from_hf is Hugging Face's ViT): models/hf/.
enum class ModelKind { Vit, Text, Gpt2, Llama, Mistral, Qwen2 };
inline constexpr EnumRow<ModelKind> kModelKindRows[] = {
    {"vit", ModelKind::Vit,
     "Vision Transformer: conv patches, class token, pre-norm blocks; attention score softmax|sigmoid, "
     "gate none|sdpa_elementwise|sdpa_headwise|value, qk_norm, post_attn_norm. With model.from_hf: "
     "a Hugging Face ViT (ViTForImageClassification) directory"},
    {"text", ModelKind::Text,
     "Text Transformer over sentencepiece ids: token + position embeddings, the same blocks; task "
     "causal_lm (tied head) or classify (pooling mean|last); causal or bidirectional, padding masked"},
    {"gpt2", ModelKind::Gpt2,
     "Hugging Face GPT-2 (model.from_hf: GPT2LMHeadModel/GPT2Model directory): learned positions, "
     "LayerNorm, fused attn.c_attn, Conv1D, gelu_new, head tied to wte"},
    {"llama", ModelKind::Llama,
     "Hugging Face Llama (model.from_hf): RMSNorm, rotary, grouped-query attention, SwiGLU, tied or untied head"},
    {"mistral", ModelKind::Mistral, "Hugging Face Mistral (model.from_hf): Llama's shape; sliding window checked"},
    {"qwen2", ModelKind::Qwen2, "Hugging Face Qwen2 (model.from_hf): Llama's shape with q/k/v biases"},
};
constexpr const auto& enum_rows(ModelKind) { return kModelKindRows; }
inline std::string to_string(ModelKind k) { return enum_name(k); }

struct ModelConfig {
  ModelKind kind = ModelKind::Vit;
  // model.from_hf: a Hugging Face model directory (config.json + safetensors). Its config.json
  // gives the family (kind may only agree with it) and every size below; src/hf loads it.
  std::string from_hf;
  std::string hf_name;               // model.name: base_model_name_or_path of adapter files (default: the directory's name)
  std::vector<std::string> exclude;  // model.exclude: checkpoint tensors kept fresh (e.g. a new "classifier.*")
  // model.from_config: a Hugging Face config.json (or a directory holding one) whose family and
  // sizes build a model with random initialisation (pre-training a Hugging Face family).
  std::string from_config;
  bool is_hf() const { return !from_hf.empty(); }
  // base_model_name_or_path for adapter files: model.name, else the directory's own name (never
  // an absolute path of the training machine).
  std::string base_model_name() const {
    if (!hf_name.empty() || from_hf.empty()) return hf_name;
    std::string d = from_hf;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    return d.substr(d.find_last_of('/') == std::string::npos ? 0 : d.find_last_of('/') + 1);
  }
  bool is_hf_lm() const {
    return kind == ModelKind::Gpt2 || kind == ModelKind::Llama || kind == ModelKind::Mistral || kind == ModelKind::Qwen2;
  }
  int64_t image_size = 28, channels = 1, patch = 4, dim = 128, depth = 4, heads = 4;  // image_size..patch: vit
  // text: vocabulary (= the tokenizer's), context length, task and head.
  int64_t vocab_size = 4000, max_seq_len = 128, pad_id = 3;  // Hugging Face LMs: pad_id -1 (chunks need none)
  models::TextTask task = models::TextTask::Classify;
  models::TextPooling pooling = models::TextPooling::Mean;  // classify only
  bool causal = true;             // text attention is causal (false: bidirectional classifier)
  bool is_text() const { return kind == ModelKind::Text || is_hf_lm(); }
  bool is_lm() const { return (kind == ModelKind::Text && task == models::TextTask::CausalLm) || is_hf_lm(); }
  double mlp_ratio = 2.0;
  int64_t num_classes = 10;
  double dropout = 0.0;
  models::AttentionVariant attention;  // model.attention: score, sigmoid_bias, gate, qk_norm
  bool post_attn_norm = false;
  // model.frozen_dtype: how the frozen base weights (those the adapters leave frozen) are stored.
  models::FrozenDtype frozen_dtype = models::FrozenDtype::Fp32;
};

enum class CheckpointKind { Best, Last };
inline constexpr EnumRow<CheckpointKind> kCheckpointKindRows[] = {
    {"best", CheckpointKind::Best, "the checkpoint with the best validation score"},
    {"last", CheckpointKind::Last, "the latest checkpoint"},
};
constexpr const auto& enum_rows(CheckpointKind) { return kCheckpointKindRows; }
inline std::string to_string(CheckpointKind k) { return enum_name(k); }

struct InitFromConfig {
  std::string run;                                   // run directory to start from; empty = random init
  CheckpointKind checkpoint = CheckpointKind::Best;  // its checkpoints/best or checkpoints/last
  std::vector<std::string> exclude;  // parameter-name globs not loaded (e.g. "head.*")
};

using adapters::AdapterKind;  // adapters/kind.h: one row per kind
inline std::string to_string(AdapterKind k) { return enum_name(k); }

// adapter.hypernet's choices are the generator's own enums (adapters/hypernet_kind.h).
using HypernetShare = adapters::GeneratorShare;
using HypernetActivation = adapters::Activation;
inline std::string to_string(HypernetShare s) { return enum_name(s); }
inline std::string to_string(HypernetActivation a) { return enum_name(a); }

struct HypernetConfig {  // adapter.hypernet (docs/methods.md §8, §9)
  int64_t embed = 16;
  int64_t hidden = 0;  // d_z; 0 = adapter.r (the parser resolves it): HoRA near LoRA's budget
  HypernetActivation act = HypernetActivation::Tanh;
  HypernetShare share = HypernetShare::Parent;  // q and v of one attention, as both papers share
  bool share_seeds = true;                      // default: true for hora, false for doran
  int64_t hidden_for(int64_t r) const { return hidden > 0 ? hidden : r; }  // d_z as used
};

struct GateConfig {  // adapter.gate (prompt experts; docs/methods.md §10, §11)
  adapters::GateKind kind = adapters::GateKind::Softmax;
  int64_t top_k = 2;
  double temperature = 1.0;
  adapters::GateActivation act = adapters::GateActivation::Identity;
  double tau1 = 0.01, tau2 = 0.01, noise = 0.0;  // cosine: token's and expert's norm perturbations
  int64_t proj_dim = 8;  // cosine: the paper's token projection width; 0 = tunekit's form (input space, bias)
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
  bool rslora = false;                       // low-rank kinds: scale alpha/sqrt(r) (rsLoRA) instead of alpha/r
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

enum class TokenizerType { Unigram, Bpe };
inline constexpr EnumRow<TokenizerType> kTokenizerTypeRows[] = {
    {"unigram", TokenizerType::Unigram, "sentencepiece unigram language model"},
    {"bpe", TokenizerType::Bpe, "byte-pair encoding"},
};
constexpr const auto& enum_rows(TokenizerType) { return kTokenizerTypeRows; }
inline std::string to_string(TokenizerType t) { return enum_name(t); }

struct TokenizerConfig {  // data.tokenizer (text)
  std::string model;             // an existing sentencepiece .model; empty = train one (or init_from.run's)
  TokenizerType type = TokenizerType::Unigram;  // when training
  int64_t vocab_size = 0;        // when training; 0 = model.vocab_size
  double character_coverage = 0.9995;
};

enum class DatasetKind { FashionMnist, SpamAssassin, Text, Instruct, Chat };
inline constexpr EnumRow<DatasetKind> kDatasetKindRows[] = {
    {"fashion_mnist", DatasetKind::FashionMnist, "28x28 grey images, 10 classes"},
    {"spam_assassin", DatasetKind::SpamAssassin, "6,046 e-mails (ham/spam, 5 groups) from npm"},
    {"text", DatasetKind::Text, "your own JSONL/CSV/TSV files: data.train_file, text_field, label_field"},
    {"instruct", DatasetKind::Instruct,
     "instruction records (instruction, optional input, output: Alpaca's fields) for a causal LM; loss on the output"},
    {"chat", DatasetKind::Chat,
     "chat records (messages: [{role, content}]) for a causal LM; loss on the assistant turns"},
};
constexpr const auto& enum_rows(DatasetKind) { return kDatasetKindRows; }
inline std::string to_string(DatasetKind d) { return enum_name(d); }

enum class TextFormat { Auto, Jsonl, Csv, Tsv };
inline constexpr EnumRow<TextFormat> kTextFormatRows[] = {
    {"auto", TextFormat::Auto, "from the file's extension"},
    {"jsonl", TextFormat::Jsonl, "one JSON object per line"},
    {"csv", TextFormat::Csv, "comma-separated, with a header row"},
    {"tsv", TextFormat::Tsv, "tab-separated, with a header row"},
};
constexpr const auto& enum_rows(TextFormat) { return kTextFormatRows; }
inline std::string to_string(TextFormat f) { return enum_name(f); }

struct DataConfig {
  DatasetKind dataset = DatasetKind::FashionMnist;
  std::string root;              // default: .data/fashion-mnist if prepared, else the Debian path;
                                 // spam_assassin: .data/spam-assassin
  std::vector<int64_t> classes;  // fashion_mnist: subset of labels, remapped to 0..k-1; empty = all
  // Text files (dataset text; spam_assassin fills them in): JSONL, CSV or TSV.
  std::string train_file, val_file, test_file;  // val_file empty: val_fraction of train
  TextFormat format = TextFormat::Auto;
  std::string text_field = "text", label_field = "label", group_field;
  std::vector<std::string> labels;              // class names in order; empty = sorted training labels
  TokenizerConfig tokenizer;
  bool is_text() const { return dataset != DatasetKind::FashionMnist; }
  bool is_chat() const { return dataset == DatasetKind::Instruct || dataset == DatasetKind::Chat; }
  // instruct / chat (data/chat.h): the template, the fields, the length and packing.
  data::ChatTemplate chat_template = data::ChatTemplate::Auto;  // data.template
  std::string system_prompt;                                    // data.system: a system message first
  std::string instruction_field = "instruction", input_field = "input", output_field = "output",
              messages_field = "messages";
  int64_t max_seq_len = 0;  // data.max_seq_len: tokens per example (0 = model.max_seq_len)
  bool packing = false;     // data.packing: several examples per row, block-causal
  double val_fraction = 0.1;     // held out from train, stratified, seeded
  int64_t batch_size = 64;
  int64_t eval_batch_size = 512;
  int64_t limit_train = 0;       // 0 = all
};

enum class OptimizerKind { AdamW, SGD };
inline constexpr EnumRow<OptimizerKind> kOptimizerKindRows[] = {
    {"adamw", OptimizerKind::AdamW, "Adam with decoupled weight decay"},
    {"sgd", OptimizerKind::SGD, "stochastic gradient descent with momentum"},
};
constexpr const auto& enum_rows(OptimizerKind) { return kOptimizerKindRows; }
inline std::string to_string(OptimizerKind k) { return enum_name(k); }

struct OptimizerConfig {
  OptimizerKind name = OptimizerKind::AdamW;
  double lr = 1e-3;
  double weight_decay = 0.01;
  std::array<double, 2> betas{0.9, 0.999};
  double eps = 1e-8;
  double momentum = 0.9;  // SGD only
  bool fused = true;      // AdamW only: FusedAdamW (src/train/fused_adamw.h); false: torch::optim::AdamW
};

// `device:` where `tunekit train` runs the model: `auto` (the best device tunekit can train on
// here), `cpu`, `cuda` or `cuda:N`. Resolved when training starts (src/train/device.h), not when
// the recipe is read, so a run trained elsewhere can still be read, evaluated and exported here.
enum class DeviceKind { Auto, Cpu, Cuda };
inline constexpr EnumRow<DeviceKind> kDeviceKindRows[] = {
    {"auto", DeviceKind::Auto, "the best device tunekit can train on here (the CPU with this build)"},
    {"cpu", DeviceKind::Cpu, "the CPU, with the thread policy of `threads:`"},
    {"cuda", DeviceKind::Cuda, "a CUDA GPU (`cuda:N` picks one); needs a CUDA LibTorch, refused otherwise"},
};
constexpr const auto& enum_rows(DeviceKind) { return kDeviceKindRows; }
inline std::string to_string(DeviceKind k) { return enum_name(k); }

struct DeviceConfig {
  DeviceKind kind = DeviceKind::Auto;
  int index = -1;     // cuda:N; -1 when none was given
  std::string where;  // "file:line:col" (or the override) of the `device:` value; "" when absent
  // As the recipe writes it: "auto", "cpu", "cuda", "cuda:1".
  std::string text() const { return index >= 0 ? to_string(kind) + ":" + std::to_string(index) : to_string(kind); }
};

enum class ScheduleKind { Constant, Cosine, Linear };
inline constexpr EnumRow<ScheduleKind> kScheduleKindRows[] = {
    {"constant", ScheduleKind::Constant, "the learning rate after warm-up stays at optimizer.lr"},
    {"cosine", ScheduleKind::Cosine, "cosine decay from optimizer.lr to lr * min_lr_ratio"},
    {"linear", ScheduleKind::Linear, "linear decay from optimizer.lr to lr * min_lr_ratio"},
};
constexpr const auto& enum_rows(ScheduleKind) { return kScheduleKindRows; }
inline std::string to_string(ScheduleKind k) { return enum_name(k); }

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
  models::ComputeDtype compute_dtype = models::ComputeDtype::Fp32;  // what the matmuls run in
  bool activation_checkpointing = false;  // recompute each block's activations in backward
  int64_t val_batches = 0;  // batches of the validation split each evaluation reads; 0 = all
  // Causal LMs: tokens per chunk of the fused head + cross-entropy (models/chunked_loss.h), which
  // never holds the [tokens, vocab] logits and their gradient at once; 0 = plain logits.
  int64_t loss_chunk = 1024;
};

struct OutputConfig {
  std::string dir = "runs";
  std::string name;  // default: the recipe file's stem
};

// One entry of `sweep.variants`: a named set of overrides applied together.
struct SweepVariant {
  std::string name;    // label in tables (default: "key=value ...")
  std::string series;  // plot curve it belongs to (default: name)
  std::string budget;  // variants with one budget label must have equal trainable parameters
  std::vector<std::pair<std::string, std::string>> overrides;
};

// sweep.tune: every grid point picks its own value of `key` (a learning rate, on a log grid) by
// the mean best validation score over `seeds`; the test split is read only at the value chosen.
struct SweepTune {
  std::string key = "optimizer.lr";
  std::vector<std::string> values;  // empty: no tuning
  std::vector<int64_t> seeds;       // empty: the sweep's first seed
  bool on() const { return !values.empty(); }
};

// sweep.compare: "variant a beats variant b (by more than margin)", decided per grid point by the
// paired t-test over the seeds (src/sweep/stats.h).
struct SweepClaim {
  std::string a, b, claim;
  double margin = 0;
};

enum class PlotX { Grid, TrainableParams };
inline constexpr EnumRow<PlotX> kPlotXRows[] = {
    {"grid", PlotX::Grid, "x = the first numeric grid key"},
    {"trainable_params", PlotX::TrainableParams, "x = trainable parameters, one curve per variant series"},
};
constexpr const auto& enum_rows(PlotX) { return kPlotXRows; }
inline std::string to_string(PlotX p) { return enum_name(p); }

// `sweep:` — variants (each a set of overrides) times a grid over recipe keys (each value applied
// as an override) times seeds.
struct SweepConfig {
  std::vector<SweepVariant> variants;                                  // empty = one unnamed variant
  std::vector<std::pair<std::string, std::vector<std::string>>> grid;  // key path -> values, in file order
  std::vector<int64_t> seeds;                                         // empty = the recipe's seed
  PlotX plot_x = PlotX::Grid;
  SweepTune tune;
  double budget_tolerance = 0.05;  // relative spread allowed within a budget label
  std::vector<SweepClaim> compare;
};

struct Recipe {
  std::string source;         // file the recipe came from ("<string>" in tests)
  std::string resolved_yaml;  // the recipe with overrides applied, as written to the run dir
  int64_t seed = 0;
  ThreadPolicy threads;
  DeviceConfig device;
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

// Why a list of seeds cannot be used ("seed 3 is listed twice", "seed -1 is negative ..."), or ""
// when it can: each seed names a cell's run directory, so a repeated seed would overwrite one.
// The recipe's seed lists and the --seeds of `sweep` and `fit` all check through it.
std::string seed_list_problem(const std::vector<int64_t>& seeds);

// Reads and validates a recipe file; overrides are "key.path=value" strings.
Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides = {});
// Same, from YAML text (`source` names it in error messages).
Recipe parse_recipe(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});

}  // namespace tunekit
