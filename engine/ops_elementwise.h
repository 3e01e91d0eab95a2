#pragma once
#include "engine/tensor.h"

namespace cpets {

// Binary ops broadcast like NumPy (shapes aligned on the right, size-1 dimensions stretch).
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& a, float s);
Tensor mul_scalar(const Tensor& a, float s);
Tensor neg(const Tensor& a);

Tensor silu(const Tensor& a);
Tensor gelu(const Tensor& a);  // exact, with erf
// GEGLU: x (…, 2F) → a · GELU(b) of shape (…, F), with a = first half and b = second half of the
// last dimension (the model's feed-forward gate); same values as chunk(x, 2, -1) → mul(a, gelu(b)).
Tensor geglu(const Tensor& x);
Tensor leaky_relu(const Tensor& a, float negative_slope);
Tensor relu(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor clamp(const Tensor& a, float lo, float hi);  // gradient 0 outside [lo, hi]

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, float s) { return add_scalar(a, s); }
inline Tensor operator-(const Tensor& a, float s) { return add_scalar(a, -s); }
inline Tensor operator*(const Tensor& a, float s) { return mul_scalar(a, s); }
inline Tensor operator*(float s, const Tensor& a) { return mul_scalar(a, s); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

}  // namespace cpets
