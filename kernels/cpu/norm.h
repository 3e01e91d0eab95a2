// Normalisation and softmax kernels on raw float buffers (contiguous, row-major).
//
// GroupNorm and BatchNorm share three building blocks over a (rows, S) view of the data, where a
// row is one (sample, channel) plane of S spatial elements:
//   segment_moments   mean and biased variance of sets of contiguous segments (the statistics);
//   affine_rows       y = f((x − center_r)·scale_r + shift_r), f = identity or SiLU (the forward);
//   row_grad_sums     Σ g and Σ g·(x − center_r) per row, g = dy or dy·SiLU'(z) (backward pass 1);
//   row_grad_apply    dx = k_dy_r·g + k_x_r·(x − center_r) + k0_r (backward pass 2).
// Every reduction is split into fixed chunks that do not depend on the thread count; within a
// chunk floats are summed in 32 lanes over blocks of at most 256 elements, blocks are added in
// double, and chunks are merged in index order, so results are bitwise identical for any number
// of threads and accurate for millions of elements.
#pragma once
#include <cstdint>

namespace cpets::kernels::cpu {

// Set k (0 ≤ k < K) is the A segments x[(a·K + k)·L + l], l < L. Writes its mean and biased
// variance (double), computed from per-chunk two-pass moments merged with Chan's formula.
// GroupNorm: A = 1, K = B·G, L = (C/G)·S. BatchNorm: A = B, K = C, L = S.
void segment_moments(const float* x, int64_t A, int64_t K, int64_t L, double* mean, double* var);

// y[r·S + s] = f((x[r·S + s] − center[r])·scale[r] + shift[r]); f = SiLU when `silu`.
// y may alias x.
void affine_rows(const float* x, float* y, int64_t rows, int64_t S, const float* center, const float* scale,
                 const float* shift, bool silu);

// Per row: sum_g[r] = Σ_s g, sum_gx[r] = Σ_s g·(x − center[r]), where g = dy, or, when `silu`,
// g = dy·SiLU'(z) with z = (x − center[r])·scale[r] + shift[r] recomputed from x. If g_out is not
// null, g is also written there (rows·S floats), so the second pass need not recompute SiLU'.
void row_grad_sums(const float* dy, const float* x, int64_t rows, int64_t S, const float* center, const float* scale,
                   const float* shift, bool silu, double* sum_g, double* sum_gx, float* g_out = nullptr);

// dx[r·S + s] = k_dy[r]·g + k_x[r]·(x − center[r]) + k0[r], g as in row_grad_sums. dx may alias
// dy (e.g. dy is the g_out of row_grad_sums and silu is false).
void row_grad_apply(const float* dy, const float* x, float* dx, int64_t rows, int64_t S, const float* center,
                    const float* scale, const float* shift, bool silu, const float* k_dy, const float* k_x,
                    const float* k0);

// ---- per-row coefficients from the statistics --------------------------------------------------
// The small computations between the passes above, the same functions as kernels/cuda/norm.h's
// (which run them as kernels, so a GPU step never waits for the host); plain loops in double,
// defined in norm_coefs.cpp (not per ISA level).
//
// GroupNorm (x of B·C rows; G groups of C/G channels): from the group moments, mean_out/rstd_out
// per (b, g) and the forward's per-row center, scale, shift. gamma/beta may be null (1 and 0).
void group_norm_rows(const double* mean, const double* var, float eps, const float* gamma, const float* beta,
                     int64_t B, int64_t C, int64_t G, float* mean_out, float* rstd_out, float* center, float* scale,
                     float* shift);
// Backward coefficients per row (k_dy, k_x, k0 for row_grad_apply; skipped when k_dy is null) and
// dgamma/dbeta (each skipped where null) from the row sums; S = elements per row.
void group_norm_backward_coefs(const double* sum_g, const double* sum_gx, const float* rstd, const float* gamma,
                               int64_t B, int64_t C, int64_t G, int64_t S, float* k_dy, float* k_x, float* k0,
                               float* dgamma, float* dbeta);
// BatchNorm3d (per channel c of C; n = B·S values per channel): batch statistics → center (mean)
// and rstd, updating the running statistics in place (unbiased variance, as PyTorch) when
// running_mean is not null.
void batch_norm_stats(const double* mean, const double* var, int64_t C, double n, float eps, float* center,
                      float* rstd, float* running_mean, float* running_var, float momentum);
// Eval with running statistics: center = running_mean, rstd = 1/sqrt(running_var + eps).
void batch_norm_running_stats(const float* running_mean, const float* running_var, int64_t C, float eps,
                              float* center, float* rstd);
// Per-row (b, c) forward coefficients.
void batch_norm_rows(const float* center, const float* rstd, const float* gamma, const float* beta, int64_t B,
                     int64_t C, float* row_center, float* row_scale, float* row_shift);
// k_dy, k_x, k0 are required; dgamma/dbeta may be null.
void batch_norm_backward_coefs(const double* sum_g, const double* sum_gx, const float* rstd, const float* gamma,
                               int64_t B, int64_t C, double n, bool batch_stats, float* k_dy, float* k_x, float* k0,
                               float* dgamma, float* dbeta);

// LayerNorm over rows of D contiguous elements. gamma/beta may be null (no affine). Writes the
// per-row mean and 1/sqrt(var + eps) for the backward.
void layer_norm_forward(const float* x, float* y, int64_t rows, int64_t D, const float* gamma, const float* beta,
                        float eps, float* mean, float* rstd);
// Any of dx, dgamma, dbeta may be null (not wanted); gamma may be null (no affine).
void layer_norm_backward(const float* dy, const float* x, int64_t rows, int64_t D, const float* gamma,
                         const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta);

// Softmax along the middle axis of an (outer, D, inner) array.
void softmax_forward(const float* x, float* y, int64_t outer, int64_t D, int64_t inner);
// dx = y·(dy − Σ_d dy·y).
void softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t D, int64_t inner);

}  // namespace cpets::kernels::cpu
