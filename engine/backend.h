// Which implementation runs each op family on CUDA tensors, chosen at run time so the same
// training can run on our kernels or on the vendor libraries and be compared op by op:
//   conv3d     cuda (ours, kernels/cuda/conv3d) | cudnn (kernels/cudnn)
//   gemm       cuda (ours, kernels/cuda/gemm)   | cublas
//   attention  cuda (ours, kernels/cuda/attention)
//   conv_precision  fp32 (exact, CUDA cores) | tf32 | bf16 (tensor cores, FP32 accumulation):
//              the arithmetic of the conv3d kernels, ours and cuDNN's (cuDNN has no bf16 here)
// The defaults are ours, in fp32. Environment variables CPETS_CONV_BACKEND, CPETS_GEMM_BACKEND,
// CPETS_ATTENTION_BACKEND and CPETS_CONV_PRECISION set the starting choice (read once, at the
// first query); the API below changes it afterwards — the trainer applies the config keys
// train.conv_backend, train.gemm_backend, train.attention_backend and train.conv_precision and
// records the choice in train.jsonl. CPU tensors always use kernels/cpu, whatever is chosen here.
#pragma once
#include <string>
#include <vector>

namespace cpets {

enum class ConvBackend { Cuda, Cudnn };
enum class GemmBackend { Cuda, Cublas };
enum class AttentionBackend { Cuda };
enum class ConvPrecision { Fp32, Tf32, Bf16 };

ConvBackend conv_backend();
GemmBackend gemm_backend();
AttentionBackend attention_backend();
ConvPrecision conv_precision();
void set_conv_backend(ConvBackend b);
void set_gemm_backend(GemmBackend b);
void set_attention_backend(AttentionBackend b);
void set_conv_precision(ConvPrecision p);

// By name, as in configs and environment variables: family "conv" | "gemm" | "attention" |
// "conv_precision",
// backend as listed above. Unknown names throw, listing the valid ones.
void set_backend(const std::string& family, const std::string& backend);
std::string backend_name(const std::string& family);
std::vector<std::string> backend_choices(const std::string& family);

}  // namespace cpets
