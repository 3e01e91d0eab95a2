// Fused loss kernels: one deterministic pass for the forward sum (reduce.h's fixed chunking, so
// bitwise identical for any thread count) and one elementwise pass for the gradients.
#pragma once
#include <cstdint>

namespace cpets::kernels::cpu {

// Σ |p − t| and Σ (p − t)² over n elements.
double abs_diff_sum(const float* p, const float* t, int64_t n);
double sq_diff_sum(const float* p, const float* t, int64_t n);
// Σ (x − target)² over n elements.
double sq_diff_scalar_sum(const float* x, float target, int64_t n);
// Σ (1 + logvar − mu² − exp(logvar)).
double kl_terms_sum(const float* mu, const float* logvar, int64_t n);

// dp = scale · sign(p − t) (0 where p == t), dt = −dp; either output may be null (not wanted).
void abs_diff_grad(const float* p, const float* t, int64_t n, float scale, float* dp, float* dt);
// dp = scale · (p − t), dt = −dp; either output may be null. `t` null means a constant target.
void diff_grad(const float* p, const float* t, float target, int64_t n, float scale, float* dp, float* dt);
// dmu = scale · mu, dlogvar = scale · ½(exp(logvar) − 1); either output may be null.
// (The loss is −½·Σ(…)/B, so the caller passes scale = g / B.)
void kl_grad(const float* mu, const float* logvar, int64_t n, float scale, float* dmu, float* dlogvar);

}  // namespace cpets::kernels::cpu
