// What the text Transformer's head does (a language model or a classifier) and how a classifier
// pools the sequence: plain enums with their tables (no LibTorch), shared by the recipe and models/text.h.
#pragma once
#include <string>

#include "util/enum_table.h"

namespace tunekit::models {

enum class TextTask { CausalLm, Classify };
enum class TextPooling { Mean, Last };

inline constexpr EnumRow<TextTask> kTextTaskRows[] = {
    {"classify", TextTask::Classify, "a classification head over pooled states"},
    {"causal_lm", TextTask::CausalLm, "next-token prediction with the head tied to the token embedding"},
};
inline constexpr EnumRow<TextPooling> kTextPoolingRows[] = {
    {"mean", TextPooling::Mean, "the mean of the non-padding states"},
    {"last", TextPooling::Last, "the state of the last non-padding token"},
};
constexpr const auto& enum_rows(TextTask) { return kTextTaskRows; }
constexpr const auto& enum_rows(TextPooling) { return kTextPoolingRows; }
inline std::string to_string(TextTask t) { return enum_name(t); }
inline std::string to_string(TextPooling p) { return enum_name(p); }

}  // namespace tunekit::models
