// Max pooling of NCDHW volumes on raw device pointers, the CUDA counterpart of
// kernels/cpu/maxpool.h with the same semantics and results: PyTorch's ceil_mode windows, the
// argmax as the flat index within the plane of the first maximum in scan order (d, h, w), a NaN
// counting as the maximum (the first NaN wins); the backward sends each output's gradient to its
// argmax. Both are gathers (a thread per element written), so no atomics: the backward sums, for
// each input voxel, the gradients of the outputs whose argmax it is in output order — the order
// the CPU kernel adds them in, so the bits agree.
#pragma once
#include <cstdint>

#include "kernels/cpu/maxpool.h"
#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

using cpu::MaxPool3dShape;

// y (planes, oD, oH, oW); argmax (same shape) filled unless null.
void max_pool3d_forward(const MaxPool3dShape& s, const float* x, float* y, int32_t* argmax, cudaStream_t stream);
// dx (planes, D, H, W) from dy and the forward's argmax; overwrites dx (zero where no argmax lies).
void max_pool3d_backward(const MaxPool3dShape& s, const int32_t* argmax, const float* dy, float* dx,
                         cudaStream_t stream);

}  // namespace cpets::kernels::cuda
