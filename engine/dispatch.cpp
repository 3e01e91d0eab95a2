#include "engine/dispatch.h"

#include <stdexcept>

#include "engine/backend.h"
#include "engine/device.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/layout.h"
#include "kernels/cpu/maxpool.h"
#include "kernels/cpu/perceptual.h"
#include "kernels/cpu/rng.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/reduce.h"

#if CPETS_HAVE_CUDA
#include "kernels/cudnn/attention.h"
#include "kernels/cudnn/conv3d.h"
#include "kernels/cudnn/gemm.h"
#include "kernels/cuda/adam.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/conv3d.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/layout.h"
#include "kernels/cuda/loss.h"
#include "kernels/cuda/maxpool.h"
#include "kernels/cuda/perceptual.h"
#include "kernels/cuda/rng.h"
#include "kernels/cuda/norm.h"
#include "kernels/cuda/pool.h"
#include "kernels/cuda/reduce.h"
#endif

namespace cpets::dispatch {

namespace kc = kernels::cpu;

// CUDA_CALL(d, call): in CUDA builds, when d is a GPU, makes it current and runs
// kernels::cuda::call with its compute stream appended, and returns from the calling function.
#if CPETS_HAVE_CUDA
namespace kg = kernels::cuda;
#define CUDA_CALL(d, fn, ...)                      \
  do {                                             \
    if ((d).is_cuda()) {                           \
      const DeviceGuard guard(d);                  \
      kg::fn(__VA_ARGS__, cuda_stream());          \
      return;                                      \
    }                                              \
  } while (0)
#else
#define CUDA_CALL(d, fn, ...) \
  do {                        \
  } while (0)
#endif

#if CPETS_HAVE_CUDA
namespace {

// The arithmetic engine/backend.h's "precision" asks of the products (conv3d, GEMM).
kernels::cuda::Precision chosen_precision() {
  switch (math_precision()) {
    case MathPrecision::Fp32: return kernels::cuda::Precision::fp32_exact;
    case MathPrecision::Tf32: return kernels::cuda::Precision::tf32;
    case MathPrecision::Bf16: return kernels::cuda::Precision::bf16;
  }
  return kernels::cuda::Precision::fp32_exact;
}

// A workspace of `bytes` on the current GPU from the caching allocator (stream-ordered, so it may
// be released as soon as the kernels using it are queued).
struct DeviceWorkspace {
  explicit DeviceWorkspace(size_t bytes)
      : holder(bytes ? Tensor::empty({int64_t((bytes + 3) / 4)}, Device::cuda(current_cuda_device())) : Tensor()),
        size(bytes) {}
  void* ptr() { return holder.defined() ? static_cast<void*>(holder.data()) : nullptr; }
  Tensor holder;
  size_t size;
};

// The cuBLAS attention composition's backward. The op keeps out and lse, not the Nq×Nk
// probabilities, so P is recomputed by the composition's forward (into throwaway out/lse); its
// backward wants every gradient, so the ones the op does not need go to scratch too.
void cublas_attention_backward(const kernels::cpu::AttentionShape& s, const float* q, const float* k, const float* v,
                               const float* out, const float* dout, float* dq, float* dk, float* dv) {
  const int64_t q_floats = s.batch * s.nq * s.channels, kv_floats = s.batch * s.nk * s.channels;
  const int64_t lse_floats = s.batch * s.heads * s.nq;
  DeviceWorkspace ws(kernels::cudnn::attention_reference_workspace_bytes(s));
  DeviceWorkspace spare(sizeof(float) * size_t(q_floats + lse_floats + (dq ? 0 : q_floats) + (dk ? 0 : 2 * kv_floats)));
  float* out_again = static_cast<float*>(spare.ptr());
  float* lse_again = out_again + q_floats;
  float* rest = lse_again + lse_floats;
  if (!dq) {
    dq = rest;
    rest += q_floats;
  }
  if (!dk) {
    dk = rest;
    dv = rest + kv_floats;
  }
  const auto p = chosen_precision();
  kernels::cudnn::attention_reference_forward(s, p, q, k, v, out_again, lse_again, ws.ptr(), ws.size, cuda_stream());
  kernels::cudnn::attention_reference_backward(s, p, q, k, v, out, dout, dq, dk, dv, ws.ptr(), ws.size, cuda_stream());
}

// Runs ours or cuDNN's, as engine/backend.h's "conv" says.
template <class Ours, class Cudnn>
void run_conv(Ours&& ours, Cudnn&& cudnn) {
  if (conv_backend() == ConvBackend::Cudnn) cudnn();
  else ours();
}

}  // namespace
#endif

Device same_device(const char* op, const std::vector<Tensor>& tensors) {
  Device dev = Device::cpu();
  bool any = false, mixed = false;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    if (any && t.device() != dev) mixed = true;
    if (!any) dev = t.device();
    any = true;
  }
  if (!mixed) return dev;
  std::string list;
  for (const Tensor& t : tensors)
    if (t.defined()) list += (list.empty() ? "" : ", ") + t.str() + " on " + t.device().str();
  throw std::invalid_argument(std::string(op) + ": inputs are on different devices (" + list +
                              "); move them to one device first, e.g. with .to(\"cuda:0\")");
}

void fill(Device d, float* out, int64_t n, float value) {
  CUDA_CALL(d, fill, out, n, value);
  for (int64_t i = 0; i < n; ++i) out[i] = value;
}

void add_inplace(Device d, float* a, const float* b, int64_t n) {
  CUDA_CALL(d, add_inplace, a, b, n);
  kc::parallel_for(n, 1 << 16, [=](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) a[i] += b[i];
  });
}

void binary_broadcast(Device d, BinaryOp op, const float* a, const std::vector<int64_t>& a_shape, const float* b,
                      const std::vector<int64_t>& b_shape, float* out, const std::vector<int64_t>& out_shape) {
  CUDA_CALL(d, binary_broadcast, op, a, a_shape, b, b_shape, out, out_shape);
  kc::binary_broadcast(op, a, a_shape, b, b_shape, out, out_shape);
}

void broadcast_to(Device d, const float* x, const std::vector<int64_t>& x_shape, float* out,
                  const std::vector<int64_t>& out_shape, float scale) {
  CUDA_CALL(d, broadcast_to, x, x_shape, out, out_shape, scale);
  kc::broadcast_to(x, x_shape, out, out_shape, scale);
}

void unary_forward(Device d, UnaryOp op, const float* x, float* y, int64_t n, float p0, float p1) {
  CUDA_CALL(d, unary_forward, op, x, y, n, p0, p1);
  kc::unary_forward(op, x, y, n, p0, p1);
}

void unary_backward(Device d, UnaryOp op, const float* xy, const float* dy, float* dx, int64_t n, float p0, float p1) {
  CUDA_CALL(d, unary_backward, op, xy, dy, dx, n, p0, p1);
  kc::unary_backward(op, xy, dy, dx, n, p0, p1);
}

void geglu_forward(Device d, const float* x, float* y, int64_t rows, int64_t F) {
  CUDA_CALL(d, geglu_forward, x, y, rows, F);
  kc::geglu_forward(x, y, rows, F);
}

void geglu_backward(Device d, const float* x, const float* dy, float* dx, int64_t rows, int64_t F) {
  CUDA_CALL(d, geglu_backward, x, dy, dx, rows, F);
  kc::geglu_backward(x, dy, dx, rows, F);
}

void sum_axes(Device d, const float* x, const std::vector<int64_t>& shape, const std::vector<bool>& reduce, float* out,
              double scale) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    // The workspace tensor is released when this returns, while the kernels may still be queued:
    // safe, because the allocator's blocks are stream-ordered (engine/device.h).
    DeviceWorkspace ws(kg::sum_axes_workspace_bytes(shape, reduce));
    kg::sum_axes(x, shape, reduce, out, scale, {ws.ptr(), ws.size}, cuda_stream());
    return;
  }
#endif
  kc::sum_axes(x, shape, reduce, out, scale);
}

void permute_copy(Device d, const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& perm,
                  float* out) {
  CUDA_CALL(d, permute_copy, x, shape, perm, out);
  kc::permute_copy(x, shape, perm, out);
}

void copy_rows(Device d, const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
               int64_t len) {
  CUDA_CALL(d, copy_rows, src, src_stride, dst, dst_stride, rows, len);
  kc::copy_rows(src, src_stride, dst, dst_stride, rows, len);
}

void assemble_rows(Device d, const std::vector<const float*>& src, const std::vector<int64_t>& lens, float* dst,
                   int64_t rows) {
  CUDA_CALL(d, assemble_rows, src, lens, dst, rows);
  kc::assemble_rows(src, lens, dst, rows);
}

void avg_pool3d_forward(Device d, const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                        int64_t stride, float* y) {
  CUDA_CALL(d, avg_pool3d_forward, x, planes, D, H, W, kernel, stride, y);
  kc::avg_pool3d_forward(x, planes, D, H, W, kernel, stride, y);
}

void avg_pool3d_backward(Device d, const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t kernel,
                         int64_t stride, float* dx) {
  CUDA_CALL(d, avg_pool3d_backward, dy, planes, D, H, W, kernel, stride, dx);
  kc::avg_pool3d_backward(dy, planes, D, H, W, kernel, stride, dx);
}

void upsample_nearest2x_forward(Device d, const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, float* y) {
  CUDA_CALL(d, upsample_nearest2x_forward, x, planes, D, H, W, y);
  kc::upsample_nearest2x_forward(x, planes, D, H, W, y);
}

void upsample_nearest2x_backward(Device d, const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W,
                                 float* dx) {
  CUDA_CALL(d, upsample_nearest2x_backward, dy, planes, D, H, W, dx);
  kc::upsample_nearest2x_backward(dy, planes, D, H, W, dx);
}

void sgemm_batched(Device d, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    const auto p = chosen_precision();
    if (gemm_backend() == GemmBackend::Cublas)
      kernels::cudnn::sgemm_batched(p, trans_a, trans_b, batch, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b,
                                    beta, C, ldc, stride_c, cuda_stream());
    else {
      DeviceWorkspace ws(kg::sgemm_workspace_bytes(batch, M, N, K));
      kg::sgemm_batched(p, trans_a, trans_b, batch, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc,
                        stride_c, {ws.ptr(), ws.size}, cuda_stream());
    }
    return;
  }
#endif
  kc::sgemm_batched(trans_a, trans_b, batch, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc,
                    stride_c);
}

void sgemm(Device d, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (d.is_cuda()) return sgemm_batched(d, trans_a, trans_b, 1, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0);
  kc::sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}


void conv3d_forward(Device d, const kernels::cpu::Conv3dShape& s, const float* x, const float* w, const float* bias,
                    float* y) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    const auto p = chosen_precision();
    run_conv(
        [&] {
          DeviceWorkspace ws(kg::conv3d_forward_workspace_bytes(s, p));
          kg::conv3d_forward(s, p, x, w, bias, y, ws.ptr(), ws.size, cuda_stream());
        },
        [&] {
          DeviceWorkspace ws(kernels::cudnn::conv3d_forward_workspace_bytes(s, p));
          kernels::cudnn::conv3d_forward(s, p, x, w, bias, y, ws.ptr(), ws.size, cuda_stream());
        });
    return;
  }
#endif
  kc::conv3d_forward(s, x, w, bias, y);
}

void conv3d_backward_data(Device d, const kernels::cpu::Conv3dShape& s, const float* dy, const float* w, float* dx) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    const auto p = chosen_precision();
    run_conv(
        [&] {
          DeviceWorkspace ws(kg::conv3d_backward_data_workspace_bytes(s, p));
          kg::conv3d_backward_data(s, p, dy, w, dx, ws.ptr(), ws.size, cuda_stream());
        },
        [&] {
          DeviceWorkspace ws(kernels::cudnn::conv3d_backward_data_workspace_bytes(s, p));
          kernels::cudnn::conv3d_backward_data(s, p, dy, w, dx, ws.ptr(), ws.size, cuda_stream());
        });
    return;
  }
#endif
  kc::conv3d_backward_data(s, dy, w, dx);
}

void conv3d_backward_weight(Device d, const kernels::cpu::Conv3dShape& s, const float* x, const float* dy, float* dw,
                            float* dbias) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    const auto p = chosen_precision();
    run_conv(
        [&] {
          DeviceWorkspace ws(kg::conv3d_backward_weight_workspace_bytes(s, p));
          kg::conv3d_backward_weight(s, p, x, dy, dw, dbias, ws.ptr(), ws.size, cuda_stream());
        },
        [&] {
          DeviceWorkspace ws(kernels::cudnn::conv3d_backward_weight_workspace_bytes(s, p));
          kernels::cudnn::conv3d_backward_weight(s, p, x, dy, dw, dbias, ws.ptr(), ws.size, cuda_stream());
        });
    return;
  }
#endif
  kc::conv3d_backward_weight(s, x, dy, dw, dbias);
}

void attention_forward(Device d, const kernels::cpu::AttentionShape& s, const float* q, const float* k, const float* v,
                       float* out, float* lse) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    if (attention_backend() == AttentionBackend::Cublas) {
      DeviceWorkspace ws(kernels::cudnn::attention_reference_workspace_bytes(s));
      kernels::cudnn::attention_reference_forward(s, chosen_precision(), q, k, v, out, lse, ws.ptr(), ws.size,
                                                  cuda_stream());
    } else {
      kg::attention_forward(s, q, k, v, out, lse, cuda_stream());
    }
    return;
  }
#endif
  Tensor scratch = Tensor::empty({kc::attention_forward_scratch_floats(s)});
  kc::attention_forward(s, q, k, v, out, lse, scratch.data());
}

void attention_backward(Device d, const kernels::cpu::AttentionShape& s, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const float* dout, float* dq, float* dk,
                        float* dv) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    if (attention_backend() == AttentionBackend::Cublas) {
      cublas_attention_backward(s, q, k, v, out, dout, dq, dk, dv);
    } else {
      DeviceWorkspace ws(kg::attention_backward_workspace_bytes(s));
      kg::attention_backward(s, q, k, v, out, lse, dout, dq, dk, dv, ws.ptr(), ws.size, cuda_stream());
    }
    return;
  }
#endif
  Tensor scratch = Tensor::empty({kc::attention_backward_scratch_floats(s)});
  kc::attention_backward(s, q, k, v, out, lse, dout, dq, dk, dv, scratch.data());
}

void softmax_forward(Device d, const float* x, float* y, int64_t outer, int64_t D, int64_t inner) {
  CUDA_CALL(d, softmax_forward, x, y, outer, D, inner);
  kc::softmax_forward(x, y, outer, D, inner);
}

void softmax_backward(Device d, const float* y, const float* dy, float* dx, int64_t outer, int64_t D, int64_t inner) {
  CUDA_CALL(d, softmax_backward, y, dy, dx, outer, D, inner);
  kc::softmax_backward(y, dy, dx, outer, D, inner);
}

void loss_sum(Device d, LossTerm term, const float* a, const float* b, float target, int64_t n, double mul, double div,
              float* out) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    DeviceWorkspace ws(kg::loss_workspace_bytes(n));
    kg::loss_sum(term, a, b, target, n, mul, div, out, {ws.ptr(), ws.size}, cuda_stream());
    return;
  }
#endif
  kc::loss_sum(term, a, b, target, n, mul, div, out);
}

void abs_diff_grad(Device d, const float* p, const float* t, int64_t n, const float* grad_out, double factor,
                   double div, float* dp, float* dt) {
  CUDA_CALL(d, abs_diff_grad, p, t, n, grad_out, factor, div, dp, dt);
  kc::abs_diff_grad(p, t, n, grad_out, factor, div, dp, dt);
}

void diff_grad(Device d, const float* p, const float* t, float target, int64_t n, const float* grad_out, double factor,
               double div, float* dp, float* dt) {
  CUDA_CALL(d, diff_grad, p, t, target, n, grad_out, factor, div, dp, dt);
  kc::diff_grad(p, t, target, n, grad_out, factor, div, dp, dt);
}

void kl_grad(Device d, const float* mu, const float* logvar, int64_t n, const float* grad_out, double factor,
             double div, float* dmu, float* dlogvar) {
  CUDA_CALL(d, kl_grad, mu, logvar, n, grad_out, factor, div, dmu, dlogvar);
  kc::kl_grad(mu, logvar, n, grad_out, factor, div, dmu, dlogvar);
}

void segment_moments(Device d, const float* x, int64_t A, int64_t K, int64_t L, double* mean, double* var) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    DeviceWorkspace ws(kg::segment_moments_workspace_bytes(A, K, L));
    kg::segment_moments(x, A, K, L, mean, var, {ws.ptr(), ws.size}, cuda_stream());
    return;
  }
#endif
  kc::segment_moments(x, A, K, L, mean, var);
}

void affine_rows(Device d, const float* x, float* y, int64_t rows, int64_t S, const float* center, const float* scale,
                 const float* shift, bool silu) {
  CUDA_CALL(d, affine_rows, x, y, rows, S, center, scale, shift, silu);
  kc::affine_rows(x, y, rows, S, center, scale, shift, silu);
}

bool row_grad_sums(Device d, const float* dy, const float* x, int64_t rows, int64_t S, const float* center,
                   const float* scale, const float* shift, bool silu, double* sum_g, double* sum_gx, float* g_out) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    DeviceWorkspace ws(kg::row_grad_sums_workspace_bytes(rows, S));
    kg::row_grad_sums(dy, x, rows, S, center, scale, shift, silu, sum_g, sum_gx, {ws.ptr(), ws.size}, cuda_stream());
    return false;
  }
#endif
  kc::row_grad_sums(dy, x, rows, S, center, scale, shift, silu, sum_g, sum_gx, g_out);
  return g_out != nullptr;
}

void row_grad_apply(Device d, const float* dy, const float* x, float* dx, int64_t rows, int64_t S, const float* center,
                    const float* scale, const float* shift, bool silu, const float* k_dy, const float* k_x,
                    const float* k0) {
  CUDA_CALL(d, row_grad_apply, dy, x, dx, rows, S, center, scale, shift, silu, k_dy, k_x, k0);
  kc::row_grad_apply(dy, x, dx, rows, S, center, scale, shift, silu, k_dy, k_x, k0);
}

void group_norm_rows(Device d, const double* mean, const double* var, float eps, const float* gamma, const float* beta,
                     int64_t B, int64_t C, int64_t G, float* mean_out, float* rstd_out, float* center, float* scale,
                     float* shift) {
  CUDA_CALL(d, group_norm_rows, mean, var, eps, gamma, beta, B, C, G, mean_out, rstd_out, center, scale, shift);
  kc::group_norm_rows(mean, var, eps, gamma, beta, B, C, G, mean_out, rstd_out, center, scale, shift);
}

void group_norm_backward_coefs(Device d, const double* sum_g, const double* sum_gx, const float* rstd,
                               const float* gamma, int64_t B, int64_t C, int64_t G, int64_t S, float* k_dy, float* k_x,
                               float* k0, float* dgamma, float* dbeta) {
  CUDA_CALL(d, group_norm_backward_coefs, sum_g, sum_gx, rstd, gamma, B, C, G, S, k_dy, k_x, k0, dgamma, dbeta);
  kc::group_norm_backward_coefs(sum_g, sum_gx, rstd, gamma, B, C, G, S, k_dy, k_x, k0, dgamma, dbeta);
}

void batch_norm_stats(Device d, const double* mean, const double* var, int64_t C, double n, float eps, float* center,
                      float* rstd, float* running_mean, float* running_var, float momentum) {
  CUDA_CALL(d, batch_norm_stats, mean, var, C, n, eps, center, rstd, running_mean, running_var, momentum);
  kc::batch_norm_stats(mean, var, C, n, eps, center, rstd, running_mean, running_var, momentum);
}

void batch_norm_running_stats(Device d, const float* running_mean, const float* running_var, int64_t C, float eps,
                              float* center, float* rstd) {
  CUDA_CALL(d, batch_norm_running_stats, running_mean, running_var, C, eps, center, rstd);
  kc::batch_norm_running_stats(running_mean, running_var, C, eps, center, rstd);
}

void batch_norm_rows(Device d, const float* center, const float* rstd, const float* gamma, const float* beta, int64_t B,
                     int64_t C, float* row_center, float* row_scale, float* row_shift) {
  CUDA_CALL(d, batch_norm_rows, center, rstd, gamma, beta, B, C, row_center, row_scale, row_shift);
  kc::batch_norm_rows(center, rstd, gamma, beta, B, C, row_center, row_scale, row_shift);
}

void batch_norm_backward_coefs(Device d, const double* sum_g, const double* sum_gx, const float* rstd,
                               const float* gamma, int64_t B, int64_t C, double n, bool batch_stats, float* k_dy,
                               float* k_x, float* k0, float* dgamma, float* dbeta) {
  CUDA_CALL(d, batch_norm_backward_coefs, sum_g, sum_gx, rstd, gamma, B, C, n, batch_stats, k_dy, k_x, k0, dgamma,
            dbeta);
  kc::batch_norm_backward_coefs(sum_g, sum_gx, rstd, gamma, B, C, n, batch_stats, k_dy, k_x, k0, dgamma, dbeta);
}

void layer_norm_forward(Device d, const float* x, float* y, int64_t rows, int64_t D, const float* gamma,
                        const float* beta, float eps, float* mean, float* rstd) {
  CUDA_CALL(d, layer_norm_forward, x, y, rows, D, gamma, beta, eps, mean, rstd);
  kc::layer_norm_forward(x, y, rows, D, gamma, beta, eps, mean, rstd);
}

void layer_norm_backward(Device d, const float* dy, const float* x, int64_t rows, int64_t D, const float* gamma,
                         const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    DeviceWorkspace ws(kg::layer_norm_backward_workspace_bytes(rows, D));
    kg::layer_norm_backward(dy, x, rows, D, gamma, mean, rstd, dx, dgamma, dbeta, {ws.ptr(), ws.size}, cuda_stream());
    return;
  }
#endif
  kc::layer_norm_backward(dy, x, rows, D, gamma, mean, rstd, dx, dgamma, dbeta);
}

void adam_multi_tensor(Device d, const std::vector<kernels::cpu::AdamTensor>& tensors) {
  if (tensors.empty()) return;
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    DeviceWorkspace ws(kg::adam_workspace_bytes(tensors.size()));
    kg::adam_multi_tensor(tensors, {ws.ptr(), ws.size}, cuda_stream());
    return;
  }
#endif
  kc::adam_multi_tensor(tensors);
}

void max_pool3d_forward(Device d, const kernels::cpu::MaxPool3dShape& s, const float* x, float* y, int32_t* argmax) {
  CUDA_CALL(d, max_pool3d_forward, s, x, y, argmax);
  kc::max_pool3d_forward(s, x, y, argmax);
}

void max_pool3d_backward(Device d, const kernels::cpu::MaxPool3dShape& s, const int32_t* argmax, const float* dy,
                         float* dx) {
  CUDA_CALL(d, max_pool3d_backward, s, argmax, dy, dx);
  kc::max_pool3d_backward(s, argmax, dy, dx);
}

void normalized_distance_forward(Device d, const float* a, const float* b, const float* w, int64_t N, int64_t C,
                                 int64_t P, float eps, float* out) {
  CUDA_CALL(d, normalized_distance_forward, a, b, w, N, C, P, eps, out);
  kc::normalized_distance_forward(a, b, w, N, C, P, eps, out);
}

void normalized_distance_backward(Device d, const float* a, const float* b, const float* w, const float* dout,
                                  int64_t N, int64_t C, int64_t P, float eps, float* da, float* db, float* dw) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    DeviceWorkspace ws(dw ? kg::normalized_distance_backward_workspace_bytes(N, P) : 0);
    kg::normalized_distance_backward(a, b, w, dout, N, C, P, eps, da, db, dw, {ws.ptr(), ws.size}, cuda_stream());
    return;
  }
#endif
  kc::normalized_distance_backward(a, b, w, dout, N, C, P, eps, da, db, dw);
}

#if CPETS_HAVE_CUDA
namespace {
// A host index list copied into a device workspace (stream-ordered, like every copy).
struct DeviceIndex {
  DeviceIndex(const int64_t* index, int64_t count) : ws(size_t(count) * sizeof(int64_t)) {
    if (count > 0) copy_host_to_device(ws.ptr(), index, ws.size);
  }
  const int64_t* get() { return static_cast<const int64_t*>(ws.ptr()); }
  DeviceWorkspace ws;
};
}  // namespace
#endif

void gather_axis_slices(Device d, const float* x, int64_t B, int64_t D, int64_t H, int64_t W, int axis,
                        const int64_t* index, int64_t count, float* out) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    DeviceIndex idx(index, count);
    kg::gather_axis_slices(x, B, D, H, W, axis, idx.get(), count, out, cuda_stream());
    return;
  }
#endif
  kc::gather_axis_slices(x, B, D, H, W, axis, index, count, out);
}

void scatter_axis_slices(Device d, const float* dout, int64_t B, int64_t D, int64_t H, int64_t W, int axis,
                         const int64_t* index, int64_t count, float* dx) {
#if CPETS_HAVE_CUDA
  if (d.is_cuda()) {
    const DeviceGuard guard(d);
    DeviceIndex idx(index, count);
    kg::scatter_axis_slices(dout, B, D, H, W, axis, idx.get(), count, dx, cuda_stream());
    return;
  }
#endif
  kc::scatter_axis_slices(dout, B, D, H, W, axis, index, count, dx);
}

void philox_uniform(Device d, uint64_t seed, uint64_t start, float* out, int64_t n) {
  CUDA_CALL(d, philox_uniform, seed, start, out, n);
  kc::philox_uniform(seed, start, out, n);
}

void philox_normal(Device d, uint64_t seed, uint64_t start, float* out, int64_t n, float mean, float std) {
  CUDA_CALL(d, philox_normal, seed, start, out, n, mean, std);
  kc::philox_normal(seed, start, out, n, mean, std);
}

}  // namespace cpets::dispatch
