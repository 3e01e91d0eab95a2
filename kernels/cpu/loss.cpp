#include "kernels/cpu/loss.h"

#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/reduce.h"

namespace cpets::kernels::cpu {
namespace {

constexpr int64_t kChunk = 16384;

template <class F>
void map_n(int64_t n, F&& f) {
  parallel_for(n, kChunk, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) f(i);
  });
}

inline float sign_of(float d) { return d > 0.f ? 1.f : (d < 0.f ? -1.f : 0.f); }

}  // namespace

double abs_diff_sum(const float* p, const float* t, int64_t n) {
  return chunked_sum(n, [&](int64_t i) { return std::fabs(p[i] - t[i]); });
}

double sq_diff_sum(const float* p, const float* t, int64_t n) {
  return chunked_sum(n, [&](int64_t i) {
    const float d = p[i] - t[i];
    return d * d;
  });
}

double sq_diff_scalar_sum(const float* x, float target, int64_t n) {
  return chunked_sum(n, [&](int64_t i) {
    const float d = x[i] - target;
    return d * d;
  });
}

double kl_terms_sum(const float* mu, const float* logvar, int64_t n) {
  // exp is libm's (exact to an ulp); the latent tensors this sees are small.
  return chunked_sum(n, [&](int64_t i) { return 1.f + logvar[i] - mu[i] * mu[i] - std::exp(logvar[i]); });
}

void abs_diff_grad(const float* p, const float* t, int64_t n, float scale, float* dp, float* dt) {
  map_n(n, [&](int64_t i) {
    const float g = scale * sign_of(p[i] - t[i]);
    if (dp) dp[i] = g;
    if (dt) dt[i] = -g;
  });
}

void diff_grad(const float* p, const float* t, float target, int64_t n, float scale, float* dp, float* dt) {
  map_n(n, [&](int64_t i) {
    const float g = scale * (p[i] - (t ? t[i] : target));
    if (dp) dp[i] = g;
    if (dt) dt[i] = -g;
  });
}

void kl_grad(const float* mu, const float* logvar, int64_t n, float scale, float* dmu, float* dlogvar) {
  parallel_for(n, kChunk, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (dmu) dmu[i] = scale * mu[i];
      if (dlogvar) dlogvar[i] = scale * 0.5f * (std::exp(logvar[i]) - 1.f);
    }
  });
}

}  // namespace cpets::kernels::cpu
