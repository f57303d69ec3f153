// The factor generator's choices (HoRA, DoRAN) as plain enums (no LibTorch), shared by the recipe,
// adapters/hypernet.h and adapters/attach.h, each with its table of names (util/enum_table.h).
#pragma once
#include <string>

#include "util/enum_table.h"

namespace tunekit::adapters {

// Where a HoRA/DoRAN generator's shared first layers are shared: by each target alone (across
// its heads), by all targets under one parent module (q and v of one attention), or model-wide.
enum class GeneratorShare { Target, Parent, Model };
// The activation between the generator's two layers.
enum class Activation { Tanh, Relu, Gelu };

inline constexpr EnumRow<GeneratorShare> kGeneratorShareRows[] = {
    {"target", GeneratorShare::Target, "one generator per target module, shared across its heads"},
    {"parent", GeneratorShare::Parent, "shared by the targets under one parent module (q and v of one attention)"},
    {"model", GeneratorShare::Model, "one generator for the whole model"},
};
inline constexpr EnumRow<Activation> kActivationRows[] = {
    {"tanh", Activation::Tanh, "tanh between the generator's layers"},
    {"relu", Activation::Relu, "relu between the generator's layers"},
    {"gelu", Activation::Gelu, "gelu between the generator's layers"},
};
constexpr const auto& enum_rows(GeneratorShare) { return kGeneratorShareRows; }
constexpr const auto& enum_rows(Activation) { return kActivationRows; }

}  // namespace tunekit::adapters
