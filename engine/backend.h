// Which implementation runs each op family on CUDA tensors, chosen at run time so the same
// training can run on our kernels or on the vendor libraries and be compared op by op:
//   conv3d     cuda (ours, kernels/cuda/conv3d) | cudnn (kernels/cudnn)
//   gemm       cuda (ours, kernels/cuda/gemm)   | cublas
//   attention  cuda (ours, kernels/cuda/attention, fused, FP32) | cublas (kernels/cudnn/attention:
//              cuBLAS GEMMs and a softmax with the Nq×Nk probabilities in memory, recomputed for
//              the backward because the op keeps out and lse only; its GEMMs at "precision")
//   precision  fp32 (exact, CUDA cores) | tf32 | bf16: the arithmetic of the products in conv3d
//              and GEMM, ours and the vendors' — tensor cores with operands rounded to TF32 or
//              BF16 and FP32 accumulation; storage, norms, losses, reductions and the optimizer
//              stay FP32 (the master weights are the FP32 tensors themselves). cuDNN's conv has
//              no bf16 here (kernels/cudnn/conv3d.h); our fused attention computes in FP32 in
//              every precision (its products are < 1 % of a step), the cuBLAS one at this one.
// The defaults are ours, in fp32. Environment variables CPETS_CONV_BACKEND, CPETS_GEMM_BACKEND,
// CPETS_ATTENTION_BACKEND and CPETS_PRECISION set the starting choice (read once, at the first
// query); the API below changes it afterwards — the trainer applies the config keys
// train.conv_backend, train.gemm_backend, train.attention_backend and train.precision and records
// the choice in train.jsonl. CPU tensors always use kernels/cpu in FP32, whatever is chosen here.
#pragma once
#include <string>
#include <vector>

namespace cpets {

enum class ConvBackend { Cuda, Cudnn };
enum class GemmBackend { Cuda, Cublas };
enum class AttentionBackend { Cuda, Cublas };
enum class MathPrecision { Fp32, Tf32, Bf16 };

ConvBackend conv_backend();
GemmBackend gemm_backend();
AttentionBackend attention_backend();
MathPrecision math_precision();
void set_conv_backend(ConvBackend b);
void set_gemm_backend(GemmBackend b);
void set_attention_backend(AttentionBackend b);
void set_math_precision(MathPrecision p);

// By name, as in configs and environment variables: family "conv" | "gemm" | "attention" |
// "precision", backend as listed above. Unknown names throw, listing the valid ones.
void set_backend(const std::string& family, const std::string& backend);
std::string backend_name(const std::string& family);
std::vector<std::string> backend_choices(const std::string& family);

}  // namespace cpets
