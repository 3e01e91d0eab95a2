// 3-D convolution on an NVIDIA GPU: the same semantics as kernels/cpu/conv3d.h (NCDHW
// activations, (Cout, Cin, kD, kH, kW) weights, zero padding, per-axis stride, PyTorch's conv3d),
// on raw device pointers, asynchronous on `stream`.
//
// All three passes are implicit GEMMs: the im2col matrix is never written to global memory; each
// thread block gathers its 128×16 operand tile straight from the activations into shared memory
// (register-prefetched, double-buffered) and multiplies 128×64 output tiles.
//   forward          M = B·oD·oH·oW voxels, N = Cout, K = Cin·taps
//   backward data    M = B·D·H·W voxels,     N = Cin,  K = Cout·taps; with stride > 1 split into
//                    one GEMM per output phase (input voxels with the same residue mod stride),
//                    each holding only the taps that land on an output voxel
//   backward weight  M = Cin·taps, N = Cout, K = B·oD·oH·oW, split over K into fixed chunks whose
//                    partial products go to the workspace and are then summed in chunk order by a
//                    second kernel: no float atomics, bitwise reproducible run to run.
// Precision::fp32_exact multiplies on the CUDA cores (FFMA); tf32 and bf16 use mma.sync tensor-core
// instructions (m16n8k8 TF32, m16n8k16 BF16) with FP32 accumulation (sm_80 and later).
// When the GEMM's N side is at most 8 (Cout for forward and weight gradient, Cin for the data
// gradient: the model's output heads and the discriminator's input) a direct kernel runs instead,
// one thread per output row, in FP32 for every precision (see conv3d_ops.h).
// Kernels up to 125 taps (5×5×5) are supported; larger ones throw.
//
// Workspaces: each call takes a caller-owned device buffer of at least the size its query returns
// (0 is valid and the pointer may then be null); nothing is allocated inside. Bad input (shapes,
// null pointers, too small a workspace) throws std::invalid_argument naming the problem and the
// shape; a failed launch throws std::runtime_error naming the kernel and the CUDA error.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/cpu/conv3d.h"
#include "kernels/cuda/precision.h"

namespace cpets::kernels::cuda {

using Conv3dShape = cpets::kernels::cpu::Conv3dShape;

// y (B, Cout, oD, oH, oW) = conv(x, w) + bias; bias may be null. Workspace: a (K, Cout) copy of w
// (none for narrow outputs).
size_t conv3d_forward_workspace_bytes(const Conv3dShape& s, Precision p);
void conv3d_forward(const Conv3dShape& s, Precision p, const float* x, const float* w, const float* bias, float* y,
                    void* workspace, size_t workspace_bytes, cudaStream_t stream);

// dx (B, Cin, D, H, W) from dy (B, Cout, oD, oH, oW); overwrites dx. Workspace: a
// (Cout·taps, Cin) copy of w (none for narrow inputs).
size_t conv3d_backward_data_workspace_bytes(const Conv3dShape& s, Precision p);
void conv3d_backward_data(const Conv3dShape& s, Precision p, const float* dy, const float* w, float* dx,
                          void* workspace, size_t workspace_bytes, cudaStream_t stream);

// dw (Cout, Cin, kD, kH, kW) and dbias (Cout), each skipped where null; overwrites them.
// Workspace: the split-K partial sums of dw (none when the plan has one split); dbias is reduced
// by one block per channel in a fixed order.
size_t conv3d_backward_weight_workspace_bytes(const Conv3dShape& s, Precision p);
void conv3d_backward_weight(const Conv3dShape& s, Precision p, const float* x, const float* dy, float* dw,
                            float* dbias, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// The number of K chunks the weight gradient is split into: a function of the shape only (never
// of the device), so results are the same on any GPU of the same architecture.
int64_t conv3d_backward_weight_splits(const Conv3dShape& s);

}  // namespace cpets::kernels::cuda
