// parse_recipe: the YAML (src/recipe/yaml_reader.h) read section by section, in the recipe's own
// order, by the section parsers (src/recipe/recipe_sections.h; the lab's beside the lab).
#include "src/recipe/recipe.h"

#include <fmt/format.h>

#include <fstream>
#include <limits>
#include <sstream>

#include "src/lab/lab_recipe.h"
#include "src/recipe/recipe_sections.h"

namespace tunekit {

Recipe parse_recipe(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  yaml::Origin origin{source, {}};
  YAML::Node root = yaml::load(yaml_text, origin, overrides);

  Recipe r;
  r.source = source;
  yaml::Section top(root, "", origin);
  top.read("seed", r.seed);
  top.check_range("seed", r.seed, 0, std::numeric_limits<int64_t>::max());
  r.threads = recipe::parse_threads(top);
  r.device = recipe::parse_device(top);
  r.model = recipe::parse_model(top.section("model"));
  r.init_from = recipe::parse_init_from(top.section("init_from"));
  if (r.model.is_hf() && !r.init_from.run.empty())
    top.section("init_from").fail("run", "model.from_hf already gives the starting weights (continue a run with "
                                         "`tunekit train --resume`; start from its adapter with adapter.init_from)");
  r.adapter = recipe::parse_adapter(top.section("adapter"), r.model);
  r.data = recipe::parse_data(top.section("data"), r.model);
  recipe::check_images_fit_model(top, r.model, r.data);
  recipe::check_classes_fit_model(top, r.model, r.data);
  r.optimizer = recipe::parse_optimizer(top.section("optimizer"));
  r.schedule = recipe::parse_schedule(top.section("schedule"));
  r.train = recipe::parse_train(top.section("train"));
  if (r.train.activation_checkpointing && !r.model.is_hf_lm())
    top.section("train").fail("activation_checkpointing",
                              "needs a Hugging Face causal LM (model.from_hf or model.from_config: gpt2, llama, mistral, "
                              "qwen2); model.kind is " + to_string(r.model.kind));
  if (r.model.frozen_dtype != models::FrozenDtype::Fp32 && r.adapter.kind == adapters::AdapterKind::None)
    top.section("model").fail("frozen_dtype", "stores the frozen base compactly, but without an adapter every weight "
                                              "trains (set adapter.kind, or leave frozen_dtype at fp32)");
  if (r.model.frozen_dtype != models::FrozenDtype::Fp32 && !r.model.is_hf())
    top.section("model").fail("frozen_dtype", "needs model.from_hf: only a Hugging Face base is read again from its "
                                              "directory, so its checkpoints and exports keep the float32 base");
  r.sweep = recipe::parse_sweep(top.section("sweep"));
  r.lab = lab::parse_lab(top.section("lab"), top.has("lab"));
  r.output = recipe::parse_output(top.section("output"), source);
  top.finish();

  // The resolved recipe names its run explicitly so `tunekit eval RUN_DIR` finds it again.
  root["output"]["dir"] = r.output.dir;
  root["output"]["name"] = r.output.name;
  YAML::Emitter out;
  out << root;
  r.resolved_yaml = std::string(out.c_str()) + "\n";
  return r;
}

Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open recipe file", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_recipe(ss.str(), path, overrides);
}

}  // namespace tunekit
