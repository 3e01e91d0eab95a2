// Scalar maths written in plain arithmetic so that loops calling it vectorise (libm calls do not).
// Shared by the elementwise and normalisation kernels, so SiLU means the same thing in both.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace cpets::kernels::cpu {

// exp(x): round x/ln2 to n with the 1.5·2^23 trick, reduce r = x − n·ln2 (two-part ln2), Taylor
// polynomial of degree 7 on |r| ≤ ln2/2 (truncation < 1e-8 relative), scale by 2^n through the
// exponent bits. Inputs are clamped so 2^n stays a normal float; NaN propagates.
inline float fast_exp(float x_in) {
  const float x = x_in < -87.3f ? -87.3f : x_in > 88.3f ? 88.3f : x_in;  // values, not std::min's references
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
  // An integer mask, not a branch: GCC will not if-convert a branch around a float multiply
  // (it could trap) without AVX-512's masked instructions, and the AVX2 loops stayed scalar.
  const int32_t keep = -int32_t(!(x_in < -87.3f));  // all ones, or 0 below the clamp (NaN kept)
  return std::bit_cast<float>(std::bit_cast<int32_t>(p * std::bit_cast<float>(bits)) & keep);
}

inline float fast_sigmoid(float z) { return 1.f / (1.f + fast_exp(-z)); }

// d SiLU(z) / dz = σ(z)·(1 + z·(1 − σ(z))).
inline float silu_grad(float z) {
  const float s = fast_sigmoid(z);
  return s * (1.f + z * (1.f - s));
}

// exp(y) in double, vectorisable: as fast_exp, with the 1.5·2^52 rounding trick and a degree-12
// Taylor polynomial on |r| ≤ ln2/2 (truncation < 1e-15 relative). Clamped to [−708, 709] so 2^n
// stays a normal double; callers needing exact underflow handle it themselves.
inline double fast_exp_d(double y_in) {
  const double y = std::min(std::max(y_in, -708.0), 709.0);
  const double t = y * 1.4426950408889634 + 6755399441055744.0;
  const double n = t - 6755399441055744.0;
  double r = y - n * 0.693147180369123816490;  // ln2 in two parts; the first has 32 bits, so
  r = r - n * 1.90821492927058770002e-10;       // n · it is exact for |n| < 2^20
  double p = 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t bits = (std::bit_cast<int64_t>(t) - std::bit_cast<int64_t>(6755399441055744.0) + 1023) << 52;
  return p * std::bit_cast<double>(bits);
}

// The standard normal CDF Φ(x) and density φ(x) for a float x, in double and vectorisable (no
// libm), for GELU and its gradient. With a = |x| and z = a/√2:
//   a ≤ 3: erf(z) = z·S(z²),                  S fitted on z² ∈ [0, 4.5]
//   a > 3: erfc(z) = e^(−z²)/(z√π) · T(1/z²), T fitted on 1/z² ∈ (0, 1/4.5]
// S and T are degree-12 least-squares Chebyshev fits (weighted for relative error) to erf and the
// scaled erfc computed with mpmath, converted to monomials; both are within 5e-11 relative over
// their range, far below float's 6e-8. Then Φ(x) = ½·erfc(−x/√2) is taken from erfc for x < 0
// (keeping full relative precision in the left tail, where GELU(x) = x·Φ(x) is tiny) and as
// 1 − ½·erfc(z) for x ≥ 0. x² is exact in double, so e^(−x²/2) is not hurt by rounding x/√2.
// tools/fit_normal_cdf.py reproduces the coefficients.

// Φ(x) for |x| ≤ 3 (the erf polynomial; no exponential).
inline double normal_cdf_near(float x_f) {
  const double x = x_f, a = std::abs(x), half_x2 = 0.5 * x * x;
  double s = 1.242645230956293e-11;
  s = s * half_x2 - 5.065348580049144e-10;
  s = s * half_x2 + 1.0316205336393183e-08;
  s = s * half_x2 - 1.4395896378433392e-07;
  s = s * half_x2 + 1.5848633246485388e-06;
  s = s * half_x2 - 1.4790064218612074e-05;
  s = s * half_x2 + 0.00012034282850159069;
  s = s * half_x2 - 0.0008546083211762187;
  s = s * half_x2 + 0.005223819883345636;
  s = s * half_x2 - 0.02686610225358454;
  s = s * half_x2 + 0.11283790041804899;
  s = s * half_x2 - 0.37612638732573594;
  s = s * half_x2 + 1.1283791670509298;
  const double half_erfc = 0.5 * (1.0 - a * 0.70710678118654752 * s);  // ½·erfc(|x|/√2)
  return x < 0.0 ? half_erfc : 1.0 - half_erfc;
}

// Φ(x) for |x| > 3, given gauss = e^(−x²/2) (a clamped so that a lane where |x| ≤ 3 stays finite).
inline double normal_cdf_far(float x_f, double gauss) {
  const double x = x_f, at = std::max(std::abs(x), 3.0), inv_a = 1.0 / at, u = 2.0 * inv_a * inv_a;
  double t = 17277.509753104725;
  t = t * u - 27299.571890018633;
  t = t * u + 19765.197063533327;
  t = t * u - 8793.938829953646;
  t = t * u + 2748.652135197948;
  t = t * u - 666.5860634887057;
  t = t * u + 139.38775353001648;
  t = t * u - 28.529627061466996;
  t = t * u + 6.532593215062356;
  t = t * u - 1.8744362648888744;
  t = t * u + 0.7499940907539826;
  t = t * u - 0.4999999726768236;
  t = t * u + 0.9999999999686802;
  const double half_erfc = 0.5 * (gauss * t * (0.79788456080286536 * inv_a));  // 1/(z√π) = √(2/π)/a
  return x < 0.0 ? half_erfc : 1.0 - half_erfc;
}

inline double normal_pdf(double gauss) { return 0.39894228040143268 * gauss; }

struct NormalCdfPdf {
  double cdf, pdf;
};
inline NormalCdfPdf normal_cdf_pdf(float x) {
  const double gauss = fast_exp_d(-0.5 * double(x) * double(x));  // e^(−x²/2); x² exact in double
  const double cdf = std::abs(x) <= 3.f ? normal_cdf_near(x) : normal_cdf_far(x, gauss);
  return {cdf, normal_pdf(gauss)};
}

// GELU(x) = x·Φ(x) and its derivative Φ(x) + x·φ(x), exact-erf semantics. The _near versions
// are the same expressions for |x| ≤ 3 without the tail terms (bitwise the same results there),
// for blocks of inputs that all lie in that range.
inline float gelu_exact(float x) { return float(double(x) * normal_cdf_pdf(x).cdf); }
inline float gelu_exact_grad(float x) {
  const NormalCdfPdf n = normal_cdf_pdf(x);
  return float(n.cdf + double(x) * n.pdf);
}
inline float gelu_near(float x) { return float(double(x) * normal_cdf_near(x)); }
inline float gelu_grad_near(float x) {
  return float(normal_cdf_near(x) + double(x) * normal_pdf(fast_exp_d(-0.5 * double(x) * double(x))));
}

}  // namespace cpets::kernels::cpu
