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

float grad_scale(const float* grad_out, double factor, double div) { return float(factor * double(*grad_out) / div); }

}  // namespace

void loss_sum(LossTerm term, const float* a, const float* b, float target, int64_t n, double mul, double div,
              float* out) {
  double sum = 0;
  switch (term) {
    case LossTerm::AbsDiff: sum = chunked_sum(n, [&](int64_t i) { return std::fabs(a[i] - b[i]); }); break;
    case LossTerm::SqDiff:
      sum = chunked_sum(n, [&](int64_t i) {
        const float d = a[i] - b[i];
        return d * d;
      });
      break;
    case LossTerm::SqDiffScalar:
      sum = chunked_sum(n, [&](int64_t i) {
        const float d = a[i] - target;
        return d * d;
      });
      break;
    case LossTerm::KlTerms:  // exp is libm's (exact to an ulp); the latent tensors this sees are small
      sum = chunked_sum(n, [&](int64_t i) { return 1.f + b[i] - a[i] * a[i] - std::exp(b[i]); });
      break;
  }
  *out = float(mul * sum / div);
}

void abs_diff_grad(const float* p, const float* t, int64_t n, const float* grad_out, double factor, double div,
                   float* dp, float* dt) {
  const float scale = grad_scale(grad_out, factor, div);
  map_n(n, [&](int64_t i) {
    const float g = scale * sign_of(p[i] - t[i]);
    if (dp) dp[i] = g;
    if (dt) dt[i] = -g;
  });
}

void diff_grad(const float* p, const float* t, float target, int64_t n, const float* grad_out, double factor,
               double div, float* dp, float* dt) {
  const float scale = grad_scale(grad_out, factor, div);
  map_n(n, [&](int64_t i) {
    const float g = scale * (p[i] - (t ? t[i] : target));
    if (dp) dp[i] = g;
    if (dt) dt[i] = -g;
  });
}

void kl_grad(const float* mu, const float* logvar, int64_t n, const float* grad_out, double factor, double div,
             float* dmu, float* dlogvar) {
  const float scale = grad_scale(grad_out, factor, div);
  parallel_for(n, kChunk, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (dmu) dmu[i] = scale * mu[i];
      if (dlogvar) dlogvar[i] = scale * 0.5f * (std::exp(logvar[i]) - 1.f);
    }
  });
}

}  // namespace cpets::kernels::cpu
