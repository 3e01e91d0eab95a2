// Kernel calls by device: each function has the arguments of its kernels/cpu counterpart plus
// the device, and runs the CPU kernel (unchanged) or the CUDA one (kernels/cuda, on the compute
// stream, with any workspace taken from the caching device allocator). The ops in ops_*.cpp call
// these instead of kernels::cpu directly, so one op body — shape checks, autograd closure — serves
// both devices. The CUDA branches exist only in CUDA builds (dispatch.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/cpu/adam.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/conv3d.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/maxpool.h"

namespace cpets::dispatch {

using kernels::cpu::BinaryOp;
using kernels::cpu::LossTerm;
using kernels::cpu::UnaryOp;

// The device of the defined tensors; throws, naming `op` and every tensor's shape and device,
// when they are not all on one device.
Device same_device(const char* op, const std::vector<Tensor>& tensors);

// ---- elementwise ----
void fill(Device d, float* out, int64_t n, float value);
void add_inplace(Device d, float* a, const float* b, int64_t n);
void binary_broadcast(Device d, BinaryOp op, const float* a, const std::vector<int64_t>& a_shape, const float* b,
                      const std::vector<int64_t>& b_shape, float* out, const std::vector<int64_t>& out_shape);
void broadcast_to(Device d, const float* x, const std::vector<int64_t>& x_shape, float* out,
                  const std::vector<int64_t>& out_shape, float scale = 1.f);
void unary_forward(Device d, UnaryOp op, const float* x, float* y, int64_t n, float p0 = 0.f, float p1 = 0.f);
void unary_backward(Device d, UnaryOp op, const float* xy, const float* dy, float* dx, int64_t n, float p0 = 0.f,
                    float p1 = 0.f);
void geglu_forward(Device d, const float* x, float* y, int64_t rows, int64_t F);
void geglu_backward(Device d, const float* x, const float* dy, float* dx, int64_t rows, int64_t F);

// ---- reductions ----
void sum_axes(Device d, const float* x, const std::vector<int64_t>& shape, const std::vector<bool>& reduce, float* out,
              double scale = 1.0);

// ---- layout ----
void permute_copy(Device d, const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& perm,
                  float* out);
void copy_rows(Device d, const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
               int64_t len);
void assemble_rows(Device d, const std::vector<const float*>& src, const std::vector<int64_t>& lens, float* dst,
                   int64_t rows);

// ---- pooling ----
void avg_pool3d_forward(Device d, const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                        int64_t stride, float* y);
void avg_pool3d_backward(Device d, const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                         int64_t stride, float* dx);
void upsample_nearest2x_forward(Device d, const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, float* y);
void upsample_nearest2x_backward(Device d, const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W,
                                 float* dx);

void max_pool3d_forward(Device d, const kernels::cpu::MaxPool3dShape& s, const float* x, float* y, int32_t* argmax);
void max_pool3d_backward(Device d, const kernels::cpu::MaxPool3dShape& s, const int32_t* argmax, const float* dy,
                         float* dx);

// ---- matrix products (CUDA: ours or cuBLAS, as engine/backend.h's "gemm" says, at its
// "precision") ----
void sgemm(Device d, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void sgemm_batched(Device d, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c);

// ---- conv3d (CUDA: ours or cuDNN, at the precision engine/backend.h says) ----
void conv3d_forward(Device d, const kernels::cpu::Conv3dShape& s, const float* x, const float* w, const float* bias,
                    float* y);
void conv3d_backward_data(Device d, const kernels::cpu::Conv3dShape& s, const float* dy, const float* w, float* dx);
void conv3d_backward_weight(Device d, const kernels::cpu::Conv3dShape& s, const float* x, const float* dy, float* dw,
                            float* dbias);

// ---- attention (CUDA: ours in FP32, or the cuBLAS composition at the precision, as
// engine/backend.h's "attention" says) ----
// The CPU path takes its scratch and the CUDA path its workspace from the allocators.
void attention_forward(Device d, const kernels::cpu::AttentionShape& s, const float* q, const float* k, const float* v,
                       float* out, float* lse);
void attention_backward(Device d, const kernels::cpu::AttentionShape& s, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const float* dout, float* dq, float* dk,
                        float* dv);

// ---- losses (kernels/cpu/loss.h: the value written to `out`, upstream gradients read through a
// pointer, so nothing waits on the host; CUDA: workspace from the device allocator) ----
void loss_sum(Device d, LossTerm term, const float* a, const float* b, float target, int64_t n, double mul, double div,
              float* out);
void abs_diff_grad(Device d, const float* p, const float* t, int64_t n, const float* grad_out, double factor,
                   double div, float* dp, float* dt);
void diff_grad(Device d, const float* p, const float* t, float target, int64_t n, const float* grad_out, double factor,
               double div, float* dp, float* dt);
void kl_grad(Device d, const float* mu, const float* logvar, int64_t n, const float* grad_out, double factor,
             double div, float* dmu, float* dlogvar);

// ---- normalisation (kernels/cpu/norm.h: GroupNorm and BatchNorm as per-row passes plus the
// small coefficient computations between them; CUDA: the same functions as kernels, workspaces
// from the device allocator) ----
void segment_moments(Device d, const float* x, int64_t A, int64_t K, int64_t L, double* mean, double* var);
void affine_rows(Device d, const float* x, float* y, int64_t rows, int64_t S, const float* center, const float* scale,
                 const float* shift, bool silu);
// Σ g and Σ g·(x − center) per row. With SiLU the CPU kernel also stores g = dy·SiLU'(z) into
// g_out when it is given, so the second pass reads g instead of recomputing an exp per element;
// returns whether it did (the CUDA kernel recomputes: false).
bool row_grad_sums(Device d, const float* dy, const float* x, int64_t rows, int64_t S, const float* center,
                   const float* scale, const float* shift, bool silu, double* sum_g, double* sum_gx, float* g_out);
void row_grad_apply(Device d, const float* dy, const float* x, float* dx, int64_t rows, int64_t S, const float* center,
                    const float* scale, const float* shift, bool silu, const float* k_dy, const float* k_x,
                    const float* k0);
void group_norm_rows(Device d, const double* mean, const double* var, float eps, const float* gamma, const float* beta,
                     int64_t B, int64_t C, int64_t G, float* mean_out, float* rstd_out, float* center, float* scale,
                     float* shift);
void group_norm_backward_coefs(Device d, const double* sum_g, const double* sum_gx, const float* rstd,
                               const float* gamma, int64_t B, int64_t C, int64_t G, int64_t S, float* k_dy, float* k_x,
                               float* k0, float* dgamma, float* dbeta);
void batch_norm_stats(Device d, const double* mean, const double* var, int64_t C, double n, float eps, float* center,
                      float* rstd, float* running_mean, float* running_var, float momentum);
void batch_norm_running_stats(Device d, const float* running_mean, const float* running_var, int64_t C, float eps,
                              float* center, float* rstd);
void batch_norm_rows(Device d, const float* center, const float* rstd, const float* gamma, const float* beta, int64_t B,
                     int64_t C, float* row_center, float* row_scale, float* row_shift);
void batch_norm_backward_coefs(Device d, const double* sum_g, const double* sum_gx, const float* rstd,
                               const float* gamma, int64_t B, int64_t C, double n, bool batch_stats, float* k_dy,
                               float* k_x, float* k0, float* dgamma, float* dbeta);
void layer_norm_forward(Device d, const float* x, float* y, int64_t rows, int64_t D, const float* gamma,
                        const float* beta, float eps, float* mean, float* rstd);
void layer_norm_backward(Device d, const float* dy, const float* x, int64_t rows, int64_t D, const float* gamma,
                         const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta);

// ---- the perceptual loss's kernels (kernels/cpu/perceptual.h) ----
void normalized_distance_forward(Device d, const float* a, const float* b, const float* w, int64_t N, int64_t C,
                                 int64_t P, float eps, float* out);
void normalized_distance_backward(Device d, const float* a, const float* b, const float* w, const float* dout,
                                  int64_t N, int64_t C, int64_t P, float eps, float* da, float* db, float* dw);
// `index` is host memory (count entries); the CUDA path copies it to the device.
void gather_axis_slices(Device d, const float* x, int64_t B, int64_t D, int64_t H, int64_t W, int axis,
                        const int64_t* index, int64_t count, float* out);
void scatter_axis_slices(Device d, const float* dout, int64_t B, int64_t D, int64_t H, int64_t W, int axis,
                         const int64_t* index, int64_t count, float* dx);

// ---- random numbers (kernels/cpu/rng.h: stream positions start … start + n − 1 of seed's stream)
void philox_uniform(Device d, uint64_t seed, uint64_t start, float* out, int64_t n);
void philox_normal(Device d, uint64_t seed, uint64_t start, float* out, int64_t n, float mean, float std);

// ---- optimiser (CUDA: every tensor in one launch) ----
void adam_multi_tensor(Device d, const std::vector<kernels::cpu::AdamTensor>& tensors);

// ---- softmax ----
void softmax_forward(Device d, const float* x, float* y, int64_t outer, int64_t D, int64_t inner);
void softmax_backward(Device d, const float* y, const float* dy, float* dx, int64_t outer, int64_t D, int64_t inner);

}  // namespace cpets::dispatch
