// Scalar maths written in plain arithmetic so that loops calling it vectorise (libm calls do not).
// Shared by the elementwise and normalisation kernels, so SiLU means the same thing in both.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>

namespace cpets::kernels::cpu {

// exp(x): round x/ln2 to n with the 1.5·2^23 trick, reduce r = x − n·ln2 (two-part ln2), Taylor
// polynomial of degree 7 on |r| ≤ ln2/2 (truncation < 1e-8 relative), scale by 2^n through the
// exponent bits. Inputs are clamped so 2^n stays a normal float; NaN propagates.
inline float fast_exp(float x_in) {
  const float x = std::min(std::max(x_in, -87.3f), 88.3f);
  const float t = x * 1.44269504088896341f + 12582912.f;
  const float n = t - 12582912.f;
  float r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187e-06f;
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (std::bit_cast<int32_t>(t) - 0x4B400000 + 127) << 23;
  // Below the clamp the true value is under FLT_MIN: return 0 so masked (−inf) logits vanish.
  return x_in < -87.3f ? 0.f : p * std::bit_cast<float>(bits);
}

inline float fast_sigmoid(float z) { return 1.f / (1.f + fast_exp(-z)); }

// d SiLU(z) / dz = σ(z)·(1 + z·(1 − σ(z))).
inline float silu_grad(float z) {
  const float s = fast_sigmoid(z);
  return s * (1.f + z * (1.f - s));
}

}  // namespace cpets::kernels::cpu
