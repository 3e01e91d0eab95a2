// Normalisation kernels.
//
// Parallel decomposition of the big reductions (GroupNorm groups reach millions of elements at
// 96×128×96): the data is cut into chunks of kChunk elements *inside* each row/segment, one block
// of 256 threads per chunk. A block sums its chunk (thread-strided, float4 loads where the rows
// allow, accumulation in double) and writes one double partial per quantity; a second kernel adds
// each row's partials in chunk order. Thousands of blocks keep every SM streaming, and because
// chunk boundaries depend only on the shape, the result is the same bits on every run.
// Elementwise passes (forward apply, backward apply) are one thread per element (4 with float4),
// reading their row's coefficients from small per-row arrays that stay in L1/L2.
// The glue kernels (statistics → coefficients) are tiny: one thread per group or channel, with
// the CPU's double formulas.
#include <algorithm>
#include <stdexcept>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/norm.h"

namespace cpets::kernels::cuda {
namespace {

constexpr int64_t kChunk = 8192;  // elements per block in the two-pass reductions (multiple of 4)

inline int64_t chunks_per(int64_t len) { return len <= 0 ? 1 : ceil_div(len, kChunk); }

// Σ f(v) over [b, e) of p (thread-strided within the block), f applied per element index.
template <class F>
__device__ __forceinline__ void strided_accumulate(int64_t b, int64_t e, bool vec, F&& f) {
  if (vec) {  // b, e multiples of 4, base 16-byte aligned (checked by the launcher)
    for (int64_t i = b + 4 * int64_t(threadIdx.x); i < e; i += 4 * int64_t(blockDim.x)) {
      f(i, 4);
    }
  } else {
    for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) f(i, 1);
  }
}

// ---- segment moments -----------------------------------------------------------------------------

// Block (k, a, p): chunk p of segment (a, k). Partials laid out [k][a·P + p] (sum, sum of squares).
__global__ void moments_partial_kernel(const float* __restrict__ x, int64_t A, int64_t K, int64_t L, int64_t P,
                                       bool vec, double* __restrict__ part_s, double* __restrict__ part_ss) {
  const int64_t k = blockIdx.x, ap = blockIdx.y, a = ap / P, p = ap - a * P;
  const float* seg = x + (a * K + k) * L;
  const int64_t b = p * kChunk, e = min(L, b + kChunk);
  double s = 0.0, ss = 0.0;
  strided_accumulate(b, e, vec, [&](int64_t i, int w) {
    if (w == 4) {
      const float4 v = *reinterpret_cast<const float4*>(seg + i);
      s += double(v.x) + double(v.y) + double(v.z) + double(v.w);
      ss += double(v.x) * v.x + double(v.y) * v.y + double(v.z) * v.z + double(v.w) * v.w;
    } else {
      const double v = seg[i];
      s += v;
      ss += v * v;
    }
  });
  const Double2 r = block_sum2(s, ss);
  if (threadIdx.x == 0) {
    part_s[k * A * P + ap] = r.a;
    part_ss[k * A * P + ap] = r.b;
  }
}

__global__ void moments_finish_kernel(const double* __restrict__ part_s, const double* __restrict__ part_ss, int64_t K,
                                      int64_t parts, double count, double* __restrict__ mean, double* __restrict__ var) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= K) return;
  double s = 0.0, ss = 0.0;
  for (int64_t i = 0; i < parts; ++i) {
    s += part_s[k * parts + i];
    ss += part_ss[k * parts + i];
  }
  const double m = s / count;
  mean[k] = m;
  var[k] = fmax(ss / count - m * m, 0.0);
}

// ---- forward apply -----------------------------------------------------------------------------

template <bool kSilu>
__device__ __forceinline__ float affine(float x, float c, float sc, float sh) {
  const float z = (x - c) * sc + sh;
  return kSilu ? silu(z) : z;
}

// The elementwise passes run on a 2-D grid — y over rows, x over the row's elements — so no
// thread divides an element index by S (64-bit division would cost about as much as the memory
// traffic at full bandwidth); the row's coefficients are loaded once per thread and row.
inline dim3 rows_grid(int64_t rows, int64_t per_row) {
  return dim3(unsigned(std::min<int64_t>(ceil_div(per_row, kBlock), 4096)), unsigned(std::min<int64_t>(rows, 65535)));
}

template <bool kSilu, bool kVec>
__global__ void affine_rows_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t rows, int64_t S,
                                   const float* __restrict__ center, const float* __restrict__ scale,
                                   const float* __restrict__ shift) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x, first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const float c = center[r], sc = scale[r], sh = shift[r];
    const float* xr = x + r * S;
    float* yr = y + r * S;
    if (kVec) {
      for (int64_t i = first; i < S / 4; i += step) {
        const float4 v = reinterpret_cast<const float4*>(xr)[i];
        reinterpret_cast<float4*>(yr)[i] = {affine<kSilu>(v.x, c, sc, sh), affine<kSilu>(v.y, c, sc, sh),
                                            affine<kSilu>(v.z, c, sc, sh), affine<kSilu>(v.w, c, sc, sh)};
      }
    } else {
      for (int64_t i = first; i < S; i += step) yr[i] = affine<kSilu>(xr[i], c, sc, sh);
    }
  }
}

// ---- backward ------------------------------------------------------------------------------------

// g = dy, or dy·SiLU'(z) with z recomputed from x.
template <bool kSilu>
__device__ __forceinline__ float grad_in(float dy, float x, float c, float sc, float sh) {
  return kSilu ? dy * silu_grad((x - c) * sc + sh) : dy;
}

template <bool kSilu>
__global__ void row_sums_partial_kernel(const float* __restrict__ dy, const float* __restrict__ x, int64_t S, int64_t P,
                                        bool vec, const float* __restrict__ center, const float* __restrict__ scale,
                                        const float* __restrict__ shift, double* __restrict__ part_g,
                                        double* __restrict__ part_gx) {
  const int64_t r = blockIdx.x / P, p = blockIdx.x - r * P;
  const float c = center[r], sc = kSilu ? scale[r] : 0.f, sh = kSilu ? shift[r] : 0.f;
  const float* xr = x + r * S;
  const float* gr = dy + r * S;
  const int64_t b = p * kChunk, e = min(S, b + kChunk);
  double sg = 0.0, sgx = 0.0;
  strided_accumulate(b, e, vec, [&](int64_t i, int w) {
    if (w == 4) {
      const float4 xv = *reinterpret_cast<const float4*>(xr + i), gv = *reinterpret_cast<const float4*>(gr + i);
      const float g0 = grad_in<kSilu>(gv.x, xv.x, c, sc, sh), g1 = grad_in<kSilu>(gv.y, xv.y, c, sc, sh);
      const float g2 = grad_in<kSilu>(gv.z, xv.z, c, sc, sh), g3 = grad_in<kSilu>(gv.w, xv.w, c, sc, sh);
      sg += double(g0) + double(g1) + double(g2) + double(g3);
      sgx += double(g0 * (xv.x - c)) + double(g1 * (xv.y - c)) + double(g2 * (xv.z - c)) + double(g3 * (xv.w - c));
    } else {
      const float g = grad_in<kSilu>(gr[i], xr[i], c, sc, sh);
      sg += g;
      sgx += double(g * (xr[i] - c));
    }
  });
  const Double2 t = block_sum2(sg, sgx);
  if (threadIdx.x == 0) {
    part_g[blockIdx.x] = t.a;
    part_gx[blockIdx.x] = t.b;
  }
}

__global__ void row_sums_finish_kernel(const double* __restrict__ part_g, const double* __restrict__ part_gx,
                                       int64_t rows, int64_t P, double* __restrict__ sum_g,
                                       double* __restrict__ sum_gx) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  double a = 0.0, b = 0.0;
  for (int64_t p = 0; p < P; ++p) {
    a += part_g[r * P + p];
    b += part_gx[r * P + p];
  }
  sum_g[r] = a;
  sum_gx[r] = b;
}

template <bool kSilu>
struct ApplyRow {
  float c, sc, sh, a, b, d;  // center, scale, shift (SiLU only), k_dy, k_x, k0
  __device__ __forceinline__ float operator()(float g, float x) const {
    return a * grad_in<kSilu>(g, x, c, sc, sh) + b * (x - c) + d;
  }
};

template <bool kSilu, bool kVec>
__global__ void row_apply_kernel(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ dx,
                                 int64_t rows, int64_t S, const float* __restrict__ center,
                                 const float* __restrict__ scale, const float* __restrict__ shift,
                                 const float* __restrict__ k_dy, const float* __restrict__ k_x,
                                 const float* __restrict__ k0) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x, first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const ApplyRow<kSilu> f{center[r], kSilu ? scale[r] : 0.f, kSilu ? shift[r] : 0.f, k_dy[r], k_x[r], k0[r]};
    const float* gr = dy + r * S;
    const float* xr = x + r * S;
    float* dr = dx + r * S;
    if (kVec) {
      for (int64_t i = first; i < S / 4; i += step) {
        const float4 g = reinterpret_cast<const float4*>(gr)[i], v = reinterpret_cast<const float4*>(xr)[i];
        reinterpret_cast<float4*>(dr)[i] = {f(g.x, v.x), f(g.y, v.y), f(g.z, v.z), f(g.w, v.w)};
      }
    } else {
      for (int64_t i = first; i < S; i += step) dr[i] = f(gr[i], xr[i]);
    }
  }
}

// ---- GroupNorm / BatchNorm glue ----------------------------------------------------------------------

__device__ __forceinline__ float param_or(const float* p, int64_t c, float dflt) { return p ? p[c] : dflt; }

__global__ void group_norm_rows_kernel(const double* __restrict__ mean, const double* __restrict__ var, float eps,
                                       const float* gamma, const float* beta, int64_t B, int64_t C, int64_t G,
                                       float* mean_out, float* rstd_out, float* center, float* scale, float* shift) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= B * C) return;
  const int64_t b = row / C, c = row - b * C, bg = b * G + c / (C / G);
  const float m = float(mean[bg]), rs = float(1.0 / sqrt(var[bg] + double(eps)));
  if (c % (C / G) == 0) {
    mean_out[bg] = m;
    rstd_out[bg] = rs;
  }
  center[row] = m;
  scale[row] = rs * param_or(gamma, c, 1.f);
  shift[row] = param_or(beta, c, 0.f);
}

// One thread per (b, g): dx = r·(γ·g − mean_group(γ·g) − x̂·mean_group(γ·g·x̂)).
__global__ void group_norm_coefs_kernel(const double* __restrict__ sum_g, const double* __restrict__ sum_gx,
                                        const float* __restrict__ rstd, const float* gamma, int64_t B, int64_t C,
                                        int64_t G, int64_t S, float* k_dy, float* k_x, float* k0) {
  const int64_t bg = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bg >= B * G) return;
  const int64_t b = bg / G, g = bg - b * G, Cg = C / G;
  const double r = rstd[bg], n = double(Cg * S);
  double m1 = 0, m2 = 0;
  for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
    const double gm = param_or(gamma, c, 1.f);
    m1 += gm * sum_g[b * C + c];
    m2 += gm * r * sum_gx[b * C + c];
  }
  m1 /= n;
  m2 /= n;
  for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
    const int64_t row = b * C + c;
    k_dy[row] = float(r * param_or(gamma, c, 1.f));
    k_x[row] = float(-r * r * m2);
    k0[row] = float(-r * m1);
  }
}

// One thread per channel: parameter gradients summed over the batch in order.
__global__ void group_norm_params_kernel(const double* __restrict__ sum_g, const double* __restrict__ sum_gx,
                                         const float* __restrict__ rstd, int64_t B, int64_t C, int64_t G,
                                         float* dgamma, float* dbeta) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double ag = 0, ab = 0;
  for (int64_t b = 0; b < B; ++b) {
    ag += double(rstd[b * G + c / (C / G)]) * sum_gx[b * C + c];
    ab += sum_g[b * C + c];
  }
  if (dgamma) dgamma[c] = float(ag);
  if (dbeta) dbeta[c] = float(ab);
}

__global__ void batch_norm_stats_kernel(const double* __restrict__ mean, const double* __restrict__ var, int64_t C,
                                        double n, float eps, float* center, float* rstd, float* running_mean,
                                        float* running_var, float momentum) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  center[c] = float(mean[c]);
  rstd[c] = float(1.0 / sqrt(var[c] + double(eps)));
  if (running_mean) {
    const double unbias = n / (n - 1.0);
    running_mean[c] = float((1.0 - momentum) * running_mean[c] + double(momentum) * mean[c]);
    running_var[c] = float((1.0 - momentum) * running_var[c] + double(momentum) * var[c] * unbias);
  }
}

__global__ void batch_norm_running_kernel(const float* __restrict__ rm, const float* __restrict__ rv, int64_t C,
                                          float eps, float* center, float* rstd) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  center[c] = rm[c];
  rstd[c] = float(1.0 / sqrt(double(rv[c]) + double(eps)));
}

__global__ void batch_norm_rows_kernel(const float* __restrict__ center, const float* __restrict__ rstd,
                                       const float* gamma, const float* beta, int64_t B, int64_t C, float* row_center,
                                       float* row_scale, float* row_shift) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= B * C) return;
  const int64_t c = row % C;
  row_center[row] = center[c];
  row_scale[row] = rstd[c] * param_or(gamma, c, 1.f);
  row_shift[row] = param_or(beta, c, 0.f);
}

// Batch statistics: dx = rγ·(dy − mean(dy) − x̂·mean(dy·x̂)); running ones: dx = rγ·dy.
__global__ void batch_norm_coefs_kernel(const double* __restrict__ sum_g, const double* __restrict__ sum_gx,
                                        const float* __restrict__ rstd, const float* gamma, int64_t B, int64_t C,
                                        double n, bool batch_stats, float* k_dy, float* k_x, float* k0, float* dgamma,
                                        float* dbeta) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double s1 = 0, s2 = 0;
  for (int64_t b = 0; b < B; ++b) {
    s1 += sum_g[b * C + c];
    s2 += sum_gx[b * C + c];
  }
  const double r = rstd[c], rg = r * param_or(gamma, c, 1.f);
  if (dgamma) dgamma[c] = float(r * s2);
  if (dbeta) dbeta[c] = float(s1);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t row = b * C + c;
    k_dy[row] = float(rg);
    k_x[row] = batch_stats ? float(-rg * r * r * s2 / n) : 0.f;
    k0[row] = batch_stats ? float(-rg * s1 / n) : 0.f;
  }
}

// ---- LayerNorm: one warp per row, 8 rows per block ----------------------------------------------------

constexpr int kLnWarps = 8;
constexpr int64_t kLnRowChunk = 256;  // rows per partial in the parameter-gradient reduction

__global__ void layer_norm_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t rows, int64_t D,
                                          const float* gamma, const float* beta, float eps, float* mean, float* rstd) {
  const int64_t r = int64_t(blockIdx.x) * kLnWarps + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;  // whole warps leave together
  const float* xr = x + r * D;
  double s = 0;
  for (int64_t d = lane; d < D; d += 32) s += xr[d];
  s = __shfl_sync(0xffffffffu, warp_sum(s), 0);
  const float m = float(s / double(D));
  double v = 0;
  for (int64_t d = lane; d < D; d += 32) {
    const double t = double(xr[d]) - double(m);
    v += t * t;
  }
  v = __shfl_sync(0xffffffffu, warp_sum(v), 0);
  const float rs = float(1.0 / sqrt(v / double(D) + double(eps)));
  float* yr = y + r * D;
  for (int64_t d = lane; d < D; d += 32)
    yr[d] = gamma ? (xr[d] - m) * rs * gamma[d] + beta[d] : (xr[d] - m) * rs;
  if (lane == 0) {
    mean[r] = m;
    rstd[r] = rs;
  }
}

// dx = r·(g' − mean(g') − x̂·mean(g'·x̂)), g' = dy·γ.
__global__ void layer_norm_dx_kernel(const float* __restrict__ dy, const float* __restrict__ x, int64_t rows, int64_t D,
                                     const float* gamma, const float* __restrict__ mean,
                                     const float* __restrict__ rstd, float* __restrict__ dx) {
  const int64_t r = int64_t(blockIdx.x) * kLnWarps + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const float* xr = x + r * D;
  const float* gr = dy + r * D;
  const float m = mean[r], rs = rstd[r];
  double sg = 0, sgx = 0;
  for (int64_t d = lane; d < D; d += 32) {
    const float g = gamma ? gr[d] * gamma[d] : gr[d];
    sg += g;
    sgx += double(g) * double((xr[d] - m) * rs);
  }
  sg = __shfl_sync(0xffffffffu, warp_sum(sg), 0);
  sgx = __shfl_sync(0xffffffffu, warp_sum(sgx), 0);
  const float a = float(sg / double(D)), b = float(sgx / double(D));
  float* dr = dx + r * D;
  for (int64_t d = lane; d < D; d += 32) {
    const float g = gamma ? gr[d] * gamma[d] : gr[d];
    dr[d] = rs * (g - a - (xr[d] - m) * rs * b);
  }
}

// Thread per column d, block row (blockIdx.y) = chunk of kLnRowChunk rows: partial Σ dy·x̂, Σ dy.
__global__ void layer_norm_params_partial_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                                 int64_t rows, int64_t D, const float* __restrict__ mean,
                                                 const float* __restrict__ rstd, double* __restrict__ part_gamma,
                                                 double* __restrict__ part_beta) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= D) return;
  const int64_t b = int64_t(blockIdx.y) * kLnRowChunk, e = min(rows, b + kLnRowChunk);
  double pg = 0, pb = 0;
  for (int64_t r = b; r < e; ++r) {
    const float g = dy[r * D + d];
    pg += double(g * ((x[r * D + d] - mean[r]) * rstd[r]));
    pb += g;
  }
  part_gamma[int64_t(blockIdx.y) * D + d] = pg;
  part_beta[int64_t(blockIdx.y) * D + d] = pb;
}

__global__ void layer_norm_params_finish_kernel(const double* __restrict__ part_gamma,
                                                const double* __restrict__ part_beta, int64_t D, int64_t P,
                                                float* dgamma, float* dbeta) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= D) return;
  double g = 0, b = 0;
  for (int64_t p = 0; p < P; ++p) {
    g += part_gamma[p * D + d];
    b += part_beta[p * D + d];
  }
  if (dgamma) dgamma[d] = float(g);
  if (dbeta) dbeta[d] = float(b);
}

// ---- softmax: one thread per (outer, inner) line; consecutive threads take consecutive inner ---------

__global__ void softmax_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t outer, int64_t D,
                                       int64_t inner) {
  const int64_t n = outer * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n; t += step) {
    const int64_t o = t / inner, i = t - o * inner;
    const float* xl = x + o * D * inner + i;
    float* yl = y + o * D * inner + i;
    float mx = -INFINITY;
    for (int64_t d = 0; d < D; ++d) mx = fmaxf(mx, xl[d * inner]);
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += expf(xl[d * inner] - mx);
    const float inv = float(1.0 / s);
    for (int64_t d = 0; d < D; ++d) yl[d * inner] = expf(xl[d * inner] - mx) * inv;
  }
}

__global__ void softmax_backward_kernel(const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx,
                                        int64_t outer, int64_t D, int64_t inner) {
  const int64_t n = outer * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n; t += step) {
    const int64_t o = t / inner, i = t - o * inner, base = o * D * inner + i;
    double dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += double(dy[base + d * inner]) * y[base + d * inner];
    const float fd = float(dot);
    for (int64_t d = 0; d < D; ++d) dx[base + d * inner] = y[base + d * inner] * (dy[base + d * inner] - fd);
  }
}

unsigned blocks(int64_t n) { return unsigned(ceil_div(n, kBlock)); }

}  // namespace

size_t segment_moments_workspace_bytes(int64_t A, int64_t K, int64_t L) {
  return size_t(2 * K * A * chunks_per(L)) * sizeof(double);
}

void segment_moments(const float* x, int64_t A, int64_t K, int64_t L, double* mean, double* var, Workspace ws,
                     cudaStream_t stream) {
  if (K <= 0) return;
  const int64_t P = chunks_per(L), parts = A * P;
  if (ws.bytes < segment_moments_workspace_bytes(A, K, L)) throw std::invalid_argument("segment_moments: workspace");
  if (A * P > 65535) throw std::invalid_argument("segment_moments: too many segments per set for the grid");
  double* part_s = static_cast<double*>(ws.ptr);
  double* part_ss = part_s + K * parts;
  const bool vec = L % 4 == 0 && aligned16(x);
  moments_partial_kernel<<<dim3(unsigned(K), unsigned(parts)), kBlock, 0, stream>>>(x, A, K, L, P, vec, part_s,
                                                                                     part_ss);
  CPETS_CHECK_LAUNCH("moments_partial_kernel");
  moments_finish_kernel<<<blocks(K), kBlock, 0, stream>>>(part_s, part_ss, K, parts, double(A * L), mean, var);
  CPETS_CHECK_LAUNCH("moments_finish_kernel");
}

void affine_rows(const float* x, float* y, int64_t rows, int64_t S, const float* center, const float* scale,
                 const float* shift, bool silu, cudaStream_t stream) {
  if (rows * S == 0) return;
  const bool vec = S % 4 == 0 && aligned16(x) && aligned16(y);
  const dim3 grid = rows_grid(rows, vec ? S / 4 : S);
  auto go = [&](auto kernel) { kernel<<<grid, kBlock, 0, stream>>>(x, y, rows, S, center, scale, shift); };
  if (silu) vec ? go(affine_rows_kernel<true, true>) : go(affine_rows_kernel<true, false>);
  else vec ? go(affine_rows_kernel<false, true>) : go(affine_rows_kernel<false, false>);
  CPETS_CHECK_LAUNCH("affine_rows_kernel");
}

size_t row_grad_sums_workspace_bytes(int64_t rows, int64_t S) { return size_t(2 * rows * chunks_per(S)) * sizeof(double); }

void row_grad_sums(const float* dy, const float* x, int64_t rows, int64_t S, const float* center, const float* scale,
                   const float* shift, bool silu, double* sum_g, double* sum_gx, Workspace ws, cudaStream_t stream) {
  if (rows <= 0) return;
  const int64_t P = chunks_per(S);
  if (ws.bytes < row_grad_sums_workspace_bytes(rows, S)) throw std::invalid_argument("row_grad_sums: workspace");
  double* part_g = static_cast<double*>(ws.ptr);
  double* part_gx = part_g + rows * P;
  const bool vec = S % 4 == 0 && aligned16(x) && aligned16(dy);
  if (silu)
    row_sums_partial_kernel<true><<<unsigned(rows * P), kBlock, 0, stream>>>(dy, x, S, P, vec, center, scale, shift,
                                                                            part_g, part_gx);
  else
    row_sums_partial_kernel<false><<<unsigned(rows * P), kBlock, 0, stream>>>(dy, x, S, P, vec, center, scale, shift,
                                                                             part_g, part_gx);
  CPETS_CHECK_LAUNCH("row_sums_partial_kernel");
  row_sums_finish_kernel<<<blocks(rows), kBlock, 0, stream>>>(part_g, part_gx, rows, P, sum_g, sum_gx);
  CPETS_CHECK_LAUNCH("row_sums_finish_kernel");
}

void row_grad_apply(const float* dy, const float* x, float* dx, int64_t rows, int64_t S, const float* center,
                    const float* scale, const float* shift, bool silu, const float* k_dy, const float* k_x,
                    const float* k0, cudaStream_t stream) {
  if (rows * S == 0) return;
  const bool vec = S % 4 == 0 && aligned16(x) && aligned16(dy) && aligned16(dx);
  const dim3 grid = rows_grid(rows, vec ? S / 4 : S);
  auto go = [&](auto kernel) {
    kernel<<<grid, kBlock, 0, stream>>>(dy, x, dx, rows, S, center, scale, shift, k_dy, k_x, k0);
  };
  if (silu) vec ? go(row_apply_kernel<true, true>) : go(row_apply_kernel<true, false>);
  else vec ? go(row_apply_kernel<false, true>) : go(row_apply_kernel<false, false>);
  CPETS_CHECK_LAUNCH("row_apply_kernel");
}

void group_norm_rows(const double* mean, const double* var, float eps, const float* gamma, const float* beta,
                     int64_t B, int64_t C, int64_t G, float* mean_out, float* rstd_out, float* center, float* scale,
                     float* shift, cudaStream_t stream) {
  if (B * C == 0) return;
  group_norm_rows_kernel<<<blocks(B * C), kBlock, 0, stream>>>(mean, var, eps, gamma, beta, B, C, G, mean_out,
                                                               rstd_out, center, scale, shift);
  CPETS_CHECK_LAUNCH("group_norm_rows_kernel");
}

void group_norm_backward_coefs(const double* sum_g, const double* sum_gx, const float* rstd, const float* gamma,
                               int64_t B, int64_t C, int64_t G, int64_t S, float* k_dy, float* k_x, float* k0,
                               float* dgamma, float* dbeta, cudaStream_t stream) {
  if (B * C == 0) return;
  if (k_dy) {
    group_norm_coefs_kernel<<<blocks(B * G), kBlock, 0, stream>>>(sum_g, sum_gx, rstd, gamma, B, C, G, S, k_dy, k_x,
                                                                  k0);
    CPETS_CHECK_LAUNCH("group_norm_coefs_kernel");
  }
  if (dgamma || dbeta) {
    group_norm_params_kernel<<<blocks(C), kBlock, 0, stream>>>(sum_g, sum_gx, rstd, B, C, G, dgamma, dbeta);
    CPETS_CHECK_LAUNCH("group_norm_params_kernel");
  }
}

void batch_norm_stats(const double* mean, const double* var, int64_t C, double n, float eps, float* center,
                      float* rstd, float* running_mean, float* running_var, float momentum, cudaStream_t stream) {
  if (C <= 0) return;
  batch_norm_stats_kernel<<<blocks(C), kBlock, 0, stream>>>(mean, var, C, n, eps, center, rstd, running_mean,
                                                            running_var, momentum);
  CPETS_CHECK_LAUNCH("batch_norm_stats_kernel");
}

void batch_norm_running_stats(const float* running_mean, const float* running_var, int64_t C, float eps,
                              float* center, float* rstd, cudaStream_t stream) {
  if (C <= 0) return;
  batch_norm_running_kernel<<<blocks(C), kBlock, 0, stream>>>(running_mean, running_var, C, eps, center, rstd);
  CPETS_CHECK_LAUNCH("batch_norm_running_kernel");
}

void batch_norm_rows(const float* center, const float* rstd, const float* gamma, const float* beta, int64_t B,
                     int64_t C, float* row_center, float* row_scale, float* row_shift, cudaStream_t stream) {
  if (B * C == 0) return;
  batch_norm_rows_kernel<<<blocks(B * C), kBlock, 0, stream>>>(center, rstd, gamma, beta, B, C, row_center, row_scale,
                                                               row_shift);
  CPETS_CHECK_LAUNCH("batch_norm_rows_kernel");
}

void batch_norm_backward_coefs(const double* sum_g, const double* sum_gx, const float* rstd, const float* gamma,
                               int64_t B, int64_t C, double n, bool batch_stats, float* k_dy, float* k_x, float* k0,
                               float* dgamma, float* dbeta, cudaStream_t stream) {
  if (C <= 0) return;
  batch_norm_coefs_kernel<<<blocks(C), kBlock, 0, stream>>>(sum_g, sum_gx, rstd, gamma, B, C, n, batch_stats, k_dy,
                                                            k_x, k0, dgamma, dbeta);
  CPETS_CHECK_LAUNCH("batch_norm_coefs_kernel");
}

void layer_norm_forward(const float* x, float* y, int64_t rows, int64_t D, const float* gamma, const float* beta,
                        float eps, float* mean, float* rstd, cudaStream_t stream) {
  if (rows <= 0 || D <= 0) return;
  layer_norm_forward_kernel<<<unsigned(ceil_div(rows, kLnWarps)), 32 * kLnWarps, 0, stream>>>(x, y, rows, D, gamma,
                                                                                              beta, eps, mean, rstd);
  CPETS_CHECK_LAUNCH("layer_norm_forward_kernel");
}

size_t layer_norm_backward_workspace_bytes(int64_t rows, int64_t D) {
  return size_t(2 * ceil_div(std::max<int64_t>(rows, 1), kLnRowChunk) * D) * sizeof(double);
}

void layer_norm_backward(const float* dy, const float* x, int64_t rows, int64_t D, const float* gamma,
                         const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta, Workspace ws,
                         cudaStream_t stream) {
  if (D <= 0) return;
  if (dx && rows > 0) {
    layer_norm_dx_kernel<<<unsigned(ceil_div(rows, kLnWarps)), 32 * kLnWarps, 0, stream>>>(dy, x, rows, D, gamma, mean,
                                                                                           rstd, dx);
    CPETS_CHECK_LAUNCH("layer_norm_dx_kernel");
  }
  if (!dgamma && !dbeta) return;
  if (rows <= 0) {
    if (dgamma) CPETS_CUDA_CHECK(cudaMemsetAsync(dgamma, 0, size_t(D) * sizeof(float), stream));
    if (dbeta) CPETS_CUDA_CHECK(cudaMemsetAsync(dbeta, 0, size_t(D) * sizeof(float), stream));
    return;
  }
  if (ws.bytes < layer_norm_backward_workspace_bytes(rows, D)) throw std::invalid_argument("layer_norm_backward: workspace");
  const int64_t P = ceil_div(rows, kLnRowChunk);
  if (P > 65535) throw std::invalid_argument("layer_norm_backward: too many rows for the grid");
  double* part_gamma = static_cast<double*>(ws.ptr);
  double* part_beta = part_gamma + P * D;
  layer_norm_params_partial_kernel<<<dim3(blocks(D), unsigned(P)), kBlock, 0, stream>>>(dy, x, rows, D, mean, rstd,
                                                                                        part_gamma, part_beta);
  CPETS_CHECK_LAUNCH("layer_norm_params_partial_kernel");
  layer_norm_params_finish_kernel<<<blocks(D), kBlock, 0, stream>>>(part_gamma, part_beta, D, P, dgamma, dbeta);
  CPETS_CHECK_LAUNCH("layer_norm_params_finish_kernel");
}

void softmax_forward(const float* x, float* y, int64_t outer, int64_t D, int64_t inner, cudaStream_t stream) {
  if (outer * D * inner == 0) return;
  softmax_forward_kernel<<<grid_for(outer * inner), kBlock, 0, stream>>>(x, y, outer, D, inner);
  CPETS_CHECK_LAUNCH("softmax_forward_kernel");
}

void softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t D, int64_t inner,
                      cudaStream_t stream) {
  if (outer * D * inner == 0) return;
  softmax_backward_kernel<<<grid_for(outer * inner), kBlock, 0, stream>>>(y, dy, dx, outer, D, inner);
  CPETS_CHECK_LAUNCH("softmax_backward_kernel");
}

}  // namespace cpets::kernels::cuda
