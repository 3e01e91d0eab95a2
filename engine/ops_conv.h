#pragma once
#include <array>

#include "engine/tensor.h"

namespace cpets {

using Int3 = std::array<int64_t, 3>;  // (D, H, W)

// x (B, Cin, D, H, W), weight (Cout, Cin, kD, kH, kW), bias (Cout) or undefined; zero padding.
Tensor conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias, Int3 stride, Int3 padding);
inline Tensor conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding) {
  return conv3d(x, weight, bias, {stride, stride, stride}, {padding, padding, padding});
}
// The transpose (adjoint) of conv3d, as PyTorch's conv_transpose3d without output padding:
// x (B, Cin, d, h, w), weight (Cin, Cout, kD, kH, kW), bias (Cout) or undefined; the output is
// (B, Cout, (d − 1)·stride − 2·padding + kD, …). Runs conv3d's own kernels with the roles
// swapped (forward = conv3d's input gradient), so every device that has conv3d has this.
Tensor conv_transpose3d(const Tensor& x, const Tensor& weight, const Tensor& bias, Int3 stride, Int3 padding);
inline Tensor conv_transpose3d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
                               int64_t padding) {
  return conv_transpose3d(x, weight, bias, {stride, stride, stride}, {padding, padding, padding});
}
Tensor avg_pool3d(const Tensor& x, int64_t kernel = 2, int64_t stride = 2);  // no padding
// Max over kernel windows `stride` apart, no padding; ceil_mode as PyTorch's (engine/ops_pool.cpp).
Tensor max_pool3d(const Tensor& x, Int3 kernel, Int3 stride, bool ceil_mode = false);
Tensor upsample_nearest2x(const Tensor& x);                                  // (B,C,2D,2H,2W)

}  // namespace cpets
