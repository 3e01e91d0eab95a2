// cuDNN reference backend for 3-D convolution: the same contract as kernels/cuda/conv3d.h
// (NCDHW float32, (Cout, Cin, kD, kH, kW) weights, zero padding, per-axis stride, device pointers,
// asynchronous on `stream`), built on cuDNN's convolution API (cudnnConvolutionForward,
// ...BackwardData, ...BackwardFilter, ...BackwardBias).
//
// Algorithms are chosen deterministically: from cudnnGet*Algorithm_v7's heuristic list (no timed
// search, so the choice does not depend on timing noise) the first entry that succeeded, is
// CUDNN_DETERMINISTIC, uses the requested math type and needs at most 1 GiB of workspace. The
// choice is cached per shape; conv3d_cudnn_algorithms() names it (for the kernel lab's report).
// Precision::fp32_exact sets CUDNN_FMA_MATH (no tensor cores), Precision::tf32 sets
// CUDNN_TENSOR_OP_MATH (TF32 tensor cores, FP32 accumulation); bf16 is not offered here
// (std::invalid_argument). cuDNN handles are kept per host thread and device.
#pragma once
#include <cstddef>
#include <string>

#include <cuda_runtime_api.h>

#include "kernels/cuda/conv3d.h"

namespace cpets::kernels::cudnn {

using cpets::kernels::cuda::Conv3dShape;
using cpets::kernels::cuda::Precision;

size_t conv3d_forward_workspace_bytes(const Conv3dShape& s, Precision p);
void conv3d_forward(const Conv3dShape& s, Precision p, const float* x, const float* w, const float* bias, float* y,
                    void* workspace, size_t workspace_bytes, cudaStream_t stream);

size_t conv3d_backward_data_workspace_bytes(const Conv3dShape& s, Precision p);
void conv3d_backward_data(const Conv3dShape& s, Precision p, const float* dy, const float* w, float* dx,
                          void* workspace, size_t workspace_bytes, cudaStream_t stream);

size_t conv3d_backward_weight_workspace_bytes(const Conv3dShape& s, Precision p);
void conv3d_backward_weight(const Conv3dShape& s, Precision p, const float* x, const float* dy, float* dw,
                            float* dbias, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// "fwd=IMPLICIT_PRECOMP_GEMM bwd_data=ALGO_1 bwd_filter=ALGO_1" for this shape and precision.
std::string conv3d_cudnn_algorithms(const Conv3dShape& s, Precision p);

}  // namespace cpets::kernels::cudnn
