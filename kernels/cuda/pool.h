// Average pooling (no padding) and nearest ×2 upsampling of NCDHW volumes on raw device pointers,
// as kernels/cpu/pool.h; `planes` = B·C.
#pragma once
#include <cstdint>

#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

void avg_pool3d_forward(const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                        int64_t stride, float* y, cudaStream_t stream);
void avg_pool3d_backward(const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                         int64_t stride, float* dx, cudaStream_t stream);
void upsample_nearest2x_forward(const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, float* y,
                                cudaStream_t stream);
void upsample_nearest2x_backward(const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, float* dx,
                                 cudaStream_t stream);

}  // namespace cpets::kernels::cuda
