// Normalisation and softmax kernels on raw device pointers, the CUDA counterparts of
// kernels/cpu/norm.h, with the same (rows, S) building blocks for GroupNorm and BatchNorm — a row
// is one (sample, channel) plane of S elements:
//   segment_moments  statistics of K sets of A segments of L contiguous elements;
//   affine_rows      y = f((x − center_r)·scale_r + shift_r), f = identity or SiLU;
//   row_grad_sums    Σ g and Σ g·(x − center_r) per row, g = dy or dy·SiLU'(z);
//   row_grad_apply   dx = k_dy_r·g + k_x_r·(x − center_r) + k0_r;
// plus small kernels that turn statistics into those per-row coefficients on the device (so no
// step waits for the host). Large reductions are two-pass (per-block double partials, then a
// fixed-order combine): a group of millions of elements is spread over many blocks and still
// gives the same bits every run.
#pragma once
#include <cstdint>

#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

// ---- shared building blocks --------------------------------------------------------------------
size_t segment_moments_workspace_bytes(int64_t A, int64_t K, int64_t L);
// Set k: segments x[(a·K + k)·L …], a < A. Writes mean[k] and biased var[k] (double).
void segment_moments(const float* x, int64_t A, int64_t K, int64_t L, double* mean, double* var, Workspace ws,
                     cudaStream_t stream);
void affine_rows(const float* x, float* y, int64_t rows, int64_t S, const float* center, const float* scale,
                 const float* shift, bool silu, cudaStream_t stream);
size_t row_grad_sums_workspace_bytes(int64_t rows, int64_t S);
// scale/shift are read only when `silu`.
void row_grad_sums(const float* dy, const float* x, int64_t rows, int64_t S, const float* center, const float* scale,
                   const float* shift, bool silu, double* sum_g, double* sum_gx, Workspace ws, cudaStream_t stream);
void row_grad_apply(const float* dy, const float* x, float* dx, int64_t rows, int64_t S, const float* center,
                    const float* scale, const float* shift, bool silu, const float* k_dy, const float* k_x,
                    const float* k0, cudaStream_t stream);

// ---- GroupNorm glue (x of B·C rows; G groups of C/G channels) -------------------------------------
// From the group moments: mean_out/rstd_out per (b, g), and the forward's per-row coefficients.
// gamma/beta may be null (1 and 0).
void group_norm_rows(const double* mean, const double* var, float eps, const float* gamma, const float* beta,
                     int64_t B, int64_t C, int64_t G, float* mean_out, float* rstd_out, float* center, float* scale,
                     float* shift, cudaStream_t stream);
// Backward coefficients per row (k_dy, k_x, k0 for row_grad_apply) and dgamma/dbeta (each
// skipped where null) from the row sums; S = elements per row.
void group_norm_backward_coefs(const double* sum_g, const double* sum_gx, const float* rstd, const float* gamma,
                               int64_t B, int64_t C, int64_t G, int64_t S, float* k_dy, float* k_x, float* k0,
                               float* dgamma, float* dbeta, cudaStream_t stream);

// ---- BatchNorm3d glue (per channel c of C; n = B·S values per channel) ----------------------------
// Batch statistics → center (mean) and rstd per channel; updates the running statistics in place
// (unbiased variance, as PyTorch) when running_mean is not null.
void batch_norm_stats(const double* mean, const double* var, int64_t C, double n, float eps, float* center,
                      float* rstd, float* running_mean, float* running_var, float momentum, cudaStream_t stream);
// Eval with running statistics: center = running_mean, rstd = 1/sqrt(running_var + eps).
void batch_norm_running_stats(const float* running_mean, const float* running_var, int64_t C, float eps,
                              float* center, float* rstd, cudaStream_t stream);
// Per-row (b, c) forward coefficients.
void batch_norm_rows(const float* center, const float* rstd, const float* gamma, const float* beta, int64_t B,
                     int64_t C, float* row_center, float* row_scale, float* row_shift, cudaStream_t stream);
void batch_norm_backward_coefs(const double* sum_g, const double* sum_gx, const float* rstd, const float* gamma,
                               int64_t B, int64_t C, double n, bool batch_stats, float* k_dy, float* k_x, float* k0,
                               float* dgamma, float* dbeta, cudaStream_t stream);

// ---- LayerNorm over rows of D ---------------------------------------------------------------------
void layer_norm_forward(const float* x, float* y, int64_t rows, int64_t D, const float* gamma, const float* beta,
                        float eps, float* mean, float* rstd, cudaStream_t stream);
size_t layer_norm_backward_workspace_bytes(int64_t rows, int64_t D);
// dx, dgamma, dbeta may be null; gamma may be null.
void layer_norm_backward(const float* dy, const float* x, int64_t rows, int64_t D, const float* gamma,
                         const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta, Workspace ws,
                         cudaStream_t stream);

// ---- softmax along the middle axis of (outer, D, inner) --------------------------------------------
void softmax_forward(const float* x, float* y, int64_t outer, int64_t D, int64_t inner, cudaStream_t stream);
void softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t D, int64_t inner,
                      cudaStream_t stream);

}  // namespace cpets::kernels::cuda
