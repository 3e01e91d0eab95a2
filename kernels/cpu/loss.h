// Fused loss kernels: one deterministic pass for the forward sum (reduce.h's fixed chunking, so
// bitwise identical for any thread count) and one elementwise pass for the gradients. The same
// functions as kernels/cuda/loss.h (which adds the stream and the workspace): the forward writes
// the loss value itself and the backwards read the upstream gradient through a pointer, so one
// op body (engine/ops_loss.cpp) serves both devices.
#pragma once
#include <cstdint>

namespace cpets::kernels::cpu {

enum class LossTerm : uint8_t {
  AbsDiff,       // |a − b|
  SqDiff,        // (a − b)²
  SqDiffScalar,  // (a − target)², b unused
  KlTerms,       // 1 + b − a² − exp(b), a = mu, b = logvar
};

// *out = float(mul · Σ_i term_i / div), the sum in double.
void loss_sum(LossTerm term, const float* a, const float* b, float target, int64_t n, double mul, double div,
              float* out);

// The gradient scale is float(factor · *grad_out / div). Outputs may be null (not wanted).
// dp = scale·sign(p − t) (0 where p == t), dt = −dp.
void abs_diff_grad(const float* p, const float* t, int64_t n, const float* grad_out, double factor, double div,
                   float* dp, float* dt);
// dp = scale·(p − t) (t null: a constant `target`), dt = −dp.
void diff_grad(const float* p, const float* t, float target, int64_t n, const float* grad_out, double factor,
               double div, float* dp, float* dt);
// dmu = scale·mu, dlogvar = scale·½(exp(logvar) − 1).
void kl_grad(const float* mu, const float* logvar, int64_t n, const float* grad_out, double factor, double div,
             float* dmu, float* dlogvar);

}  // namespace cpets::kernels::cpu
