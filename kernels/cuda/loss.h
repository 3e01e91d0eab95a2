// Fused losses on raw device pointers, the CUDA counterparts of kernels/cpu/loss.h. The forward
// writes the loss value itself (float(mul · Σ terms / div), one deterministic two-pass sum), and
// the backwards read the incoming gradient from device memory, so a training step never waits on
// the host for a loss.
#pragma once
#include <cstdint>

#include "kernels/cpu/loss.h"
#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

using cpu::LossTerm;  // one enum for both backends

size_t loss_workspace_bytes(int64_t n);
void loss_sum(LossTerm term, const float* a, const float* b, float target, int64_t n, double mul, double div,
              float* out, Workspace ws, cudaStream_t stream);

// The gradient scale is float(factor · g / div), g = *grad_out on the device (as the CPU ops
// compute it from g.item()). Outputs may be null (not wanted).
// dp = scale·sign(p − t), dt = −dp.
void abs_diff_grad(const float* p, const float* t, int64_t n, const float* grad_out, double factor, double div,
                   float* dp, float* dt, cudaStream_t stream);
// dp = scale·(p − t) (t null: a constant `target`), dt = −dp.
void diff_grad(const float* p, const float* t, float target, int64_t n, const float* grad_out, double factor,
               double div, float* dp, float* dt, cudaStream_t stream);
// dmu = scale·mu, dlogvar = scale·½(exp(logvar) − 1).
void kl_grad(const float* mu, const float* logvar, int64_t n, const float* grad_out, double factor, double div,
             float* dmu, float* dlogvar, cudaStream_t stream);

}  // namespace cpets::kernels::cuda
