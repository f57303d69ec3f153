// The gating family's choices as plain enums (no LibTorch), shared by the recipe and adapters/gating.h.
#pragma once
#include <string>

namespace tunekit::adapters {

enum class GateKind { Softmax, Sigmoid, TopkSoftmax, DenseToSparse, Cosine, EuclideanSigmoid };
enum class GateActivation { Identity, Tanh, Sigmoid };
enum class GateInput { Token, Mean };  // prompt experts: gate per token, or from the mean token

std::string to_string(GateKind k);

}  // namespace tunekit::adapters
