// Reference attention for comparison with the fused kernels of kernels/cuda/attention.h: the
// textbook composition of cuBLAS GEMMs and a softmax kernel, per (batch, head):
//   S = scale · Q Kᵀ (cuBLAS),  P = softmax(S) row-wise (+ lse),  O = P V (cuBLAS);
// backward  dV = Pᵀ dO,  dP = dO Vᵀ,  dS = P ∘ (dP − rowsum(dO ∘ O)),  dQ = scale · dS K,
// dK = scale · dSᵀ Q. The full Nq×Nk matrices P and dP live in the workspace (that is the point
// of the comparison: this is what flash attention avoids). Same layout and lse as
// kernels/cpu/attention.h. Precision as in gemm.h (fp32_exact or tf32).
#pragma once
#include <cstddef>

#include <cuda_runtime_api.h>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/precision.h"

namespace cpets::kernels::cudnn {

using cpets::kernels::cuda::AttentionShape;
using cpets::kernels::cuda::Precision;

// Bytes for P (B·heads·Nq·Nk floats) plus dP and the per-row terms of the backward.
size_t attention_reference_workspace_bytes(const AttentionShape& s);

// out, lse as kernels/cuda/attention_forward; leaves P at the start of the workspace for the
// backward (pass the same workspace, untouched, to attention_reference_backward).
void attention_reference_forward(const AttentionShape& s, Precision p, const float* q, const float* k, const float* v,
                                 float* out, float* lse, void* workspace, size_t workspace_bytes, cudaStream_t stream);
// dq, dk, dv (each required) from dout, using P from the forward's workspace.
void attention_reference_backward(const AttentionShape& s, Precision p, const float* q, const float* k, const float* v,
                                  const float* out, const float* dout, float* dq, float* dk, float* dv, void* workspace,
                                  size_t workspace_bytes, cudaStream_t stream);

}  // namespace cpets::kernels::cudnn
