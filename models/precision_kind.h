// The precision choices a recipe makes (model.frozen_dtype, train.compute_dtype) as enum tables;
// what they do is models/precision.h.
#pragma once
#include "util/enum_table.h"

namespace tunekit::models {

enum class FrozenDtype { Fp32, Bf16, Int8 };
inline constexpr EnumRow<FrozenDtype> kFrozenDtypeRows[] = {
    {"fp32", FrozenDtype::Fp32, "frozen base weights kept in float32"},
    {"bf16", FrozenDtype::Bf16, "frozen base weights stored in bfloat16 (half the memory), widened per matmul"},
    {"int8", FrozenDtype::Int8,
     "frozen base weights stored as int8 with one float32 scale per output row (a quarter of the memory), widened per matmul"},
};
constexpr const auto& enum_rows(FrozenDtype) { return kFrozenDtypeRows; }
inline std::string to_string(FrozenDtype d) { return enum_name(d); }

enum class ComputeDtype { Fp32, Bf16, Auto };
inline constexpr EnumRow<ComputeDtype> kComputeDtypeRows[] = {
    {"fp32", ComputeDtype::Fp32, "matmuls in float32"},
    {"bf16", ComputeDtype::Bf16,
     "matmuls in bfloat16 (CPU autocast; weights, optimizer and loss stay float32)"},
    {"auto", ComputeDtype::Auto,
     "bf16 where the CPU has bf16 instructions (avx512_bf16 or AMX) and a bf16 GEMM measures >= 1.5x float32, else fp32"},
};
constexpr const auto& enum_rows(ComputeDtype) { return kComputeDtypeRows; }
inline std::string to_string(ComputeDtype d) { return enum_name(d); }

}  // namespace tunekit::models
