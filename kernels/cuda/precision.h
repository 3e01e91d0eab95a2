// Arithmetic precision of the CUDA kernels that have a tensor-core path (conv3d, the cuBLAS/cuDNN
// references). Inputs and outputs stay float32 in memory in every case; only the products differ.
#pragma once

namespace cpets::kernels::cuda {

enum class Precision {
  fp32_exact,  // FP32 FMA on the CUDA cores: the exact path, comparable to the CPU kernels
  tf32,        // tensor cores, operands rounded to TF32 (10-bit mantissa), FP32 accumulation
  bf16,        // tensor cores, operands rounded to BF16 (7-bit mantissa), FP32 accumulation
};

inline const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32_exact: return "fp32";
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
  }
  return "?";
}

}  // namespace cpets::kernels::cuda
