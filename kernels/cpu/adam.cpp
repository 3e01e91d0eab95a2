#include "kernels/cpu/adam.h"

#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"  // last: the level's target for the rest of the file

namespace cpets::kernels::cpu::CPETS_ISA_NS {

namespace {
constexpr int64_t kGrain = 1 << 14;

// Rounding follows PyTorch's vectorised CPU kernels exactly: add(alpha) and addcmul are fused
// multiply-adds there, everything else rounds per operation. Every operation used (mul, fma, sqrt,
// div, add) is correctly rounded in IEEE arithmetic, so the vector and scalar paths below give
// identical bits, on every machine, equal to torch.optim.Adam on the CPU (checked against a
// PyTorch 1.13 fixture in test_optim). With the fmas explicit, no multiply feeds an add, so
// compiler contraction cannot change anything either.
template <bool kWeightDecay>
inline void adam_scalar(float* p, const float* g, float* m, float* v, int64_t i, const AdamScalars& s) {
  const float grad = kWeightDecay ? std::fma(s.weight_decay, p[i], g[i]) : g[i];
  const float mi = std::fma(s.one_minus_beta1, grad, m[i] * s.beta1);
  const float vi = std::fma(s.one_minus_beta2 * grad, grad, v[i] * s.beta2);
  m[i] = mi;
  v[i] = vi;
  p[i] = p[i] + (-s.step_size) * mi / (std::sqrt(vi) / s.bias_correction2_sqrt + s.eps);
}

// GCC does not vectorise std::sqrt while it may set errno, so the vector path is explicit.
template <bool kWeightDecay>
void adam_range(float* p, const float* g, float* m, float* v, int64_t b, int64_t e, const AdamScalars& s) {
  int64_t i = b;
#if CPETS_ISA_LEVEL >= 1
  const __m256 beta1 = _mm256_set1_ps(s.beta1), beta2 = _mm256_set1_ps(s.beta2);
  const __m256 omb1 = _mm256_set1_ps(s.one_minus_beta1), omb2 = _mm256_set1_ps(s.one_minus_beta2);
  const __m256 neg_step = _mm256_set1_ps(-s.step_size), bc2 = _mm256_set1_ps(s.bias_correction2_sqrt);
  const __m256 eps = _mm256_set1_ps(s.eps), wd = _mm256_set1_ps(s.weight_decay);
  for (; i + 8 <= e; i += 8) {
    const __m256 pi = _mm256_loadu_ps(p + i);
    __m256 grad = _mm256_loadu_ps(g + i);
    if constexpr (kWeightDecay) grad = _mm256_fmadd_ps(wd, pi, grad);
    const __m256 mi = _mm256_fmadd_ps(omb1, grad, _mm256_mul_ps(_mm256_loadu_ps(m + i), beta1));
    const __m256 vi = _mm256_fmadd_ps(_mm256_mul_ps(omb2, grad), grad, _mm256_mul_ps(_mm256_loadu_ps(v + i), beta2));
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(p + i, _mm256_add_ps(pi, _mm256_div_ps(_mm256_mul_ps(neg_step, mi), denom)));
  }
#endif
  for (; i < e; ++i) adam_scalar<kWeightDecay>(p, g, m, v, i, s);
}
}  // namespace

void adam_step(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, const AdamScalars& s) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    if (s.weight_decay != 0.f)
      adam_range<true>(param, grad, exp_avg, exp_avg_sq, b, e, s);
    else
      adam_range<false>(param, grad, exp_avg, exp_avg_sq, b, e, s);
  });
}

}  // namespace cpets::kernels::cpu::CPETS_ISA_NS
