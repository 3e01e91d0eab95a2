#pragma once
#include "engine/tensor.h"

namespace cpets {

// a (..., M, K) @ b (..., K, N); batch dims must be equal, or b may be 2-D (shared).
Tensor matmul(const Tensor& a, const Tensor& b);
// x (..., in) · weightᵀ + bias; weight (out, in), bias (out) or undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace cpets
