// The public kernel functions of the multi-level families forward to the active level's copy
// (kernels/cpu/isa.h). One list; each entry declares the function in every level's namespace
// and defines the forwarding one in cpets::kernels::cpu, with the signature of the family's
// header. Adding a function to a family means one line here.
#include "kernels/cpu/adam.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/conv3d.h"
#include "kernels/cpu/conv3d_winograd.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/norm.h"

// (return type, name, (parameters), (arguments))
#define CPETS_ISA_KERNELS(X)                                                                                          \
  X(void, conv3d_forward, (const Conv3dShape& s, const float* x, const float* w, const float* bias, float* y),        \
    (s, x, w, bias, y))                                                                                               \
  X(void, conv3d_backward_data, (const Conv3dShape& s, const float* dy, const float* w, float* dx), (s, dy, w, dx))  \
  X(void, conv3d_backward_weight, (const Conv3dShape& s, const float* x, const float* dy, float* dw, float* dbias),   \
    (s, x, dy, dw, dbias))                                                                                            \
  X(void, conv3d_winograd_forward, (const Conv3dShape& s, const float* x, const float* w, const float* bias, float* y), \
    (s, x, w, bias, y))                                                                                               \
  X(void, conv3d_winograd_backward_data, (const Conv3dShape& s, const float* dy, const float* w, float* dx),         \
    (s, dy, w, dx))                                                                                                   \
  X(void, conv3d_winograd_backward_weight, (const Conv3dShape& s, const float* x, const float* dy, float* dw),       \
    (s, x, dy, dw))                                                                                                   \
  X(int64_t, attention_forward_scratch_floats, (const AttentionShape& s), (s))                                       \
  X(void, attention_forward,                                                                                          \
    (const AttentionShape& s, const float* q, const float* k, const float* v, float* out, float* lse, float* scratch), \
    (s, q, k, v, out, lse, scratch))                                                                                  \
  X(int64_t, attention_backward_scratch_floats, (const AttentionShape& s), (s))                                      \
  X(void, attention_backward,                                                                                         \
    (const AttentionShape& s, const float* q, const float* k, const float* v, const float* out, const float* lse,    \
     const float* dout, float* dq, float* dk, float* dv, float* scratch),                                             \
    (s, q, k, v, out, lse, dout, dq, dk, dv, scratch))                                                                \
  X(int64_t, attention_tile_floats, (const AttentionShape& s), (s))                                                  \
  X(void, segment_moments, (const float* x, int64_t A, int64_t K, int64_t L, double* mean, double* var),             \
    (x, A, K, L, mean, var))                                                                                          \
  X(void, affine_rows,                                                                                                \
    (const float* x, float* y, int64_t rows, int64_t S, const float* center, const float* scale, const float* shift, \
     bool silu),                                                                                                      \
    (x, y, rows, S, center, scale, shift, silu))                                                                      \
  X(void, row_grad_sums,                                                                                              \
    (const float* dy, const float* x, int64_t rows, int64_t S, const float* center, const float* scale,              \
     const float* shift, bool silu, double* sum_g, double* sum_gx, float* g_out),                                     \
    (dy, x, rows, S, center, scale, shift, silu, sum_g, sum_gx, g_out))                                              \
  X(void, row_grad_apply,                                                                                             \
    (const float* dy, const float* x, float* dx, int64_t rows, int64_t S, const float* center, const float* scale,   \
     const float* shift, bool silu, const float* k_dy, const float* k_x, const float* k0),                           \
    (dy, x, dx, rows, S, center, scale, shift, silu, k_dy, k_x, k0))                                                 \
  X(void, layer_norm_forward,                                                                                         \
    (const float* x, float* y, int64_t rows, int64_t D, const float* gamma, const float* beta, float eps,            \
     float* mean, float* rstd),                                                                                       \
    (x, y, rows, D, gamma, beta, eps, mean, rstd))                                                                    \
  X(void, layer_norm_backward,                                                                                        \
    (const float* dy, const float* x, int64_t rows, int64_t D, const float* gamma, const float* mean,                \
     const float* rstd, float* dx, float* dgamma, float* dbeta),                                                      \
    (dy, x, rows, D, gamma, mean, rstd, dx, dgamma, dbeta))                                                          \
  X(void, softmax_forward, (const float* x, float* y, int64_t outer, int64_t D, int64_t inner),                      \
    (x, y, outer, D, inner))                                                                                          \
  X(void, softmax_backward, (const float* y, const float* dy, float* dx, int64_t outer, int64_t D, int64_t inner),   \
    (y, dy, dx, outer, D, inner))                                                                                     \
  X(void, binary_broadcast,                                                                                           \
    (BinaryOp op, const float* a, const std::vector<int64_t>& a_shape, const float* b,                               \
     const std::vector<int64_t>& b_shape, float* out, const std::vector<int64_t>& out_shape),                        \
    (op, a, a_shape, b, b_shape, out, out_shape))                                                                     \
  X(void, broadcast_to,                                                                                               \
    (const float* x, const std::vector<int64_t>& x_shape, float* out, const std::vector<int64_t>& out_shape,         \
     float scale),                                                                                                    \
    (x, x_shape, out, out_shape, scale))                                                                              \
  X(void, unary_forward, (UnaryOp op, const float* x, float* y, int64_t n, float p0, float p1), (op, x, y, n, p0, p1)) \
  X(bool, unary_backward_uses_output, (UnaryOp op), (op))                                                            \
  X(void, unary_backward, (UnaryOp op, const float* xy, const float* dy, float* dx, int64_t n, float p0, float p1),  \
    (op, xy, dy, dx, n, p0, p1))                                                                                      \
  X(void, geglu_forward, (const float* x, float* y, int64_t rows, int64_t F), (x, y, rows, F))                       \
  X(void, geglu_backward, (const float* x, const float* dy, float* dx, int64_t rows, int64_t F), (x, dy, dx, rows, F)) \
  X(void, sgemm,                                                                                                      \
    (bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,           \
     const float* B, int64_t ldb, float beta, float* C, int64_t ldc),                                                 \
    (trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))                                                 \
  X(void, sgemm_serial,                                                                                               \
    (bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,           \
     const float* B, int64_t ldb, float beta, float* C, int64_t ldc),                                                 \
    (trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))                                                 \
  X(void, sgemm_batched,                                                                                              \
    (bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A,         \
     int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C, int64_t ldc, \
     int64_t stride_c),                                                                                               \
    (trans_a, trans_b, batch, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c))            \
  X(void, adam_step,                                                                                                  \
    (float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, const AdamScalars& s),           \
    (param, grad, exp_avg, exp_avg_sq, n, s))

#define CPETS_DECLARE(ret, name, params, args) ret name params;

// Not forwarded: conv3d_release_scratch frees every level's buffers.
#define CPETS_ISA_LEVEL_DECLS(X) CPETS_ISA_KERNELS(X) void conv3d_release_level_scratch();

namespace cpets::kernels::cpu {
namespace portable { CPETS_ISA_LEVEL_DECLS(CPETS_DECLARE) }
#if CPETS_X86_LEVELS
namespace avx2 { CPETS_ISA_LEVEL_DECLS(CPETS_DECLARE) }
namespace avx512 { CPETS_ISA_LEVEL_DECLS(CPETS_DECLARE) }
#define CPETS_FORWARD(ret, name, params, args) \
  ret name params {                            \
    switch (cpu_isa()) {                       \
      case CpuIsa::avx512: return avx512::name args; \
      case CpuIsa::avx2: return avx2::name args;     \
      case CpuIsa::portable: break;            \
    }                                          \
    return portable::name args;                \
  }
#else
#define CPETS_FORWARD(ret, name, params, args) \
  ret name params { return portable::name args; }
#endif

CPETS_ISA_KERNELS(CPETS_FORWARD)

// Every level keeps its own buffers: free them all.
void conv3d_release_scratch() {
  portable::conv3d_release_level_scratch();
#if CPETS_X86_LEVELS
  avx2::conv3d_release_level_scratch();
  avx512::conv3d_release_level_scratch();
#endif
}

}  // namespace cpets::kernels::cpu
