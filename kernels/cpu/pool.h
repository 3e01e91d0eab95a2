// Average pooling (no padding) and nearest-neighbour ×2 upsampling of NCDHW volumes, forward
// and backward. Channels of all batch items are flattened into `planes` = B·C. Every output
// element is written by one thread with a fixed summation order (deterministic).
#pragma once
#include <cstdint>

namespace cpets::kernels::cpu {

inline int64_t pool_out_size(int64_t in, int64_t kernel, int64_t stride) { return (in - kernel) / stride + 1; }

// y (planes, oD, oH, oW) = mean of each kernel³ window, windows `stride` apart.
void avg_pool3d_forward(const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                        int64_t stride, float* y);
// dx (planes, D, H, W) from dy (planes, oD, oH, oW); overwrites dx (zeros where no window reaches).
void avg_pool3d_backward(const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                         int64_t stride, float* dx);

// y (planes, 2D, 2H, 2W): every voxel copied into its 2×2×2 block.
void upsample_nearest2x_forward(const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, float* y);
// dx (planes, D, H, W) = sum of dy over each 2×2×2 block.
void upsample_nearest2x_backward(const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, float* dx);

}  // namespace cpets::kernels::cpu
