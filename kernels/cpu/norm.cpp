#include "kernels/cpu/norm.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/vmath.h"
#include "kernels/cpu/simd.h"  // last: the level's target for the rest of the file

namespace cpets::kernels::cpu::CPETS_ISA_NS {
namespace {

constexpr int kSumLanes = 32;      // two AVX-512 (four AVX2) registers of floats: independent add chains
constexpr int64_t kBlock = 256;    // elements summed in float (8 per lane) before going to double
constexpr int64_t kChunk = 8192;   // elements per parallel work item: 32 KB, stays in L1/L2

struct F2 {
  float a, b;
};

// Σ term(i), i in [0, n), in kSumLanes float lanes (reduce.h); `term` may also write to index i.
template <class F>
inline double sum1(int64_t n, F&& term) {
  return lane_sum<kSumLanes>(n, [&](int64_t i) -> float { return term(i); });
}

// Two sums at once, as sum1; term returns F2.
template <class F>
inline void sum2(int64_t n, F&& term, double& out_a, double& out_b) {
  double da[kSumLanes] = {}, db[kSumLanes] = {};
  const int64_t nv = n - n % kSumLanes;
  int64_t i = 0;
  while (i < nv) {
    const int64_t end = std::min(nv, i + kBlock);
    float fa[kSumLanes] = {}, fb[kSumLanes] = {};
    for (; i < end; i += kSumLanes) {
#pragma omp simd
      for (int l = 0; l < kSumLanes; ++l) {
        const F2 v = term(i + l);
        fa[l] += v.a;
        fb[l] += v.b;
      }
    }
#pragma omp simd
    for (int l = 0; l < kSumLanes; ++l) {
      da[l] += fa[l];
      db[l] += fb[l];
    }
  }
  double sa = 0, sb = 0;
  for (; i < n; ++i) {
    const F2 v = term(i);
    sa += v.a;
    sb += v.b;
  }
  for (int l = 0; l < kSumLanes; ++l) {
    sa += da[l];
    sb += db[l];
  }
  out_a = sa;
  out_b = sb;
}

// Count, mean and sum of squared deviations of one chunk or a merge of chunks.
struct Moments {
  double n = 0, mean = 0, m2 = 0;
};

// One pass of Σ(x−m) and Σ(x−m)² around a shift m, the mean of the chunk's first 16 elements:
// the first sum corrects the mean, the second gives m2 with a cancellation of only
// (mean − m)²/variance, small since m is itself a mean of samples (a shift of 0, i.e.
// E[x²]−E[x]², would lose everything for data far from zero). A separate pass for the exact
// mean, as before, cost ~20 % of a GroupNorm forward.
Moments chunk_moments(const float* p, int64_t n) {
  if (n == 0) return {};
  const int64_t head = std::min<int64_t>(n, 16);
  float head_sum = 0;
  for (int64_t i = 0; i < head; ++i) head_sum += p[i];
  const float m = head_sum / float(head);
  double d1, d2;
  sum2(n, [p, m](int64_t i) {
    const float d = p[i] - m;
    return F2{d, d * d};
  }, d1, d2);
  Moments r;
  r.n = double(n);
  r.mean = double(m) + d1 / r.n;
  r.m2 = std::max(0.0, d2 - d1 * d1 / r.n);
  return r;
}

// Chan et al.'s pairwise update; applied in chunk order, so the result is fixed.
void merge_into(Moments& acc, const Moments& b) {
  if (b.n == 0) return;
  if (acc.n == 0) {
    acc = b;
    return;
  }
  const double n = acc.n + b.n;
  const double delta = b.mean - acc.mean;
  acc.mean += delta * (b.n / n);
  acc.m2 += b.m2 + delta * delta * (acc.n * b.n / n);
  acc.n = n;
}

// A row of S elements is cut into ceil(S / kChunk) pieces; work items are (row, piece) pairs in
// row-major order, grouped `grain` at a time so small rows still make worthwhile tasks.
struct RowSplit {
  int64_t pieces, items, grain;
  RowSplit(int64_t rows, int64_t S) {
    pieces = S > 0 ? (S + kChunk - 1) / kChunk : 1;
    items = rows * pieces;
    grain = S >= kChunk ? 1 : std::max<int64_t>(1, kChunk / std::max<int64_t>(S, 1));
  }
  int64_t begin(int64_t j, int64_t S) const { return std::min(S, j * kChunk); }
  int64_t end(int64_t j, int64_t S) const { return std::min(S, (j + 1) * kChunk); }
};

// g = dy, or dy·SiLU'((x − c)·sc + sh) when the op was GroupNorm+SiLU.
template <bool Silu>
inline float upstream(float dy, float x, float c, float sc, float sh) {
  if constexpr (Silu) {
    return dy * silu_grad((x - c) * sc + sh);
  } else {
    return dy;
  }
}

template <bool Silu>
void affine_rows_impl(const float* x, float* y, int64_t rows, int64_t S, const float* center, const float* scale,
                      const float* shift) {
  const RowSplit split(rows, S);
  parallel_for(split.items, split.grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t r = t / split.pieces, j = t % split.pieces;
      const float c = center[r], sc = scale[r], sh = shift[r];
      const float* xp = x + r * S;
      float* yp = y + r * S;
      const int64_t s1 = split.end(j, S);
#pragma omp simd
      for (int64_t s = split.begin(j, S); s < s1; ++s) {
        const float z = (xp[s] - c) * sc + sh;
        if constexpr (Silu) {
          yp[s] = z * fast_sigmoid(z);
        } else {
          yp[s] = z;
        }
      }
    }
  });
}

template <bool Silu>
void row_grad_sums_impl(const float* dy, const float* x, int64_t rows, int64_t S, const float* center,
                        const float* scale, const float* shift, double* sum_g, double* sum_gx, float* g_out) {
  const RowSplit split(rows, S);
  std::vector<double> part_g(split.items), part_gx(split.items);
  parallel_for(split.items, split.grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t r = t / split.pieces, j = t % split.pieces;
      const float c = center[r];
      const float sc = Silu ? scale[r] : 0.f, sh = Silu ? shift[r] : 0.f;
      const int64_t s0 = split.begin(j, S);
      const float* xp = x + r * S + s0;
      const float* gp = dy + r * S + s0;
      if (g_out) {
        float* op = g_out + r * S + s0;
        sum2(split.end(j, S) - s0, [=](int64_t i) {
          const float g = upstream<Silu>(gp[i], xp[i], c, sc, sh);
          op[i] = g;
          return F2{g, g * (xp[i] - c)};
        }, part_g[t], part_gx[t]);
      } else {
        sum2(split.end(j, S) - s0, [=](int64_t i) {
          const float g = upstream<Silu>(gp[i], xp[i], c, sc, sh);
          return F2{g, g * (xp[i] - c)};
        }, part_g[t], part_gx[t]);
      }
    }
  });
  parallel_for(rows, 256, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      double sg = 0, sgx = 0;
      for (int64_t j = 0; j < split.pieces; ++j) {
        sg += part_g[r * split.pieces + j];
        sgx += part_gx[r * split.pieces + j];
      }
      sum_g[r] = sg;
      sum_gx[r] = sgx;
    }
  });
}

template <bool Silu>
void row_grad_apply_impl(const float* dy, const float* x, float* dx, int64_t rows, int64_t S, const float* center,
                         const float* scale, const float* shift, const float* k_dy, const float* k_x,
                         const float* k0) {
  const RowSplit split(rows, S);
  parallel_for(split.items, split.grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t r = t / split.pieces, j = t % split.pieces;
      const float c = center[r], a = k_dy[r], bx = k_x[r], c0 = k0[r];
      const float sc = Silu ? scale[r] : 0.f, sh = Silu ? shift[r] : 0.f;
      const float* xp = x + r * S;
      const float* gp = dy + r * S;
      float* op = dx + r * S;
      const int64_t s1 = split.end(j, S);
#pragma omp simd
      for (int64_t s = split.begin(j, S); s < s1; ++s) {
        const float g = upstream<Silu>(gp[s], xp[s], c, sc, sh);
        op[s] = a * g + bx * (xp[s] - c) + c0;
      }
    }
  });
}

}  // namespace

void segment_moments(const float* x, int64_t A, int64_t K, int64_t L, double* mean, double* var) {
  const RowSplit split(A * K, L);
  // Items ordered (k, a, piece) so each set's chunks are contiguous and merged in that order.
  const int64_t per_set = A * split.pieces;
  std::vector<Moments> part(K * per_set);
  parallel_for(K * per_set, split.grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t k = t / per_set, rem = t % per_set;
      const int64_t a = rem / split.pieces, j = rem % split.pieces;
      const int64_t s0 = split.begin(j, L);
      part[t] = chunk_moments(x + (a * K + k) * L + s0, split.end(j, L) - s0);
    }
  });
  parallel_for(K, 64, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      Moments acc;
      for (int64_t i = 0; i < per_set; ++i) merge_into(acc, part[k * per_set + i]);
      mean[k] = acc.mean;
      var[k] = acc.n > 0 ? acc.m2 / acc.n : 0.0;
    }
  });
}

void affine_rows(const float* x, float* y, int64_t rows, int64_t S, const float* center, const float* scale,
                 const float* shift, bool silu) {
  if (silu)
    affine_rows_impl<true>(x, y, rows, S, center, scale, shift);
  else
    affine_rows_impl<false>(x, y, rows, S, center, scale, shift);
}

void row_grad_sums(const float* dy, const float* x, int64_t rows, int64_t S, const float* center, const float* scale,
                   const float* shift, bool silu, double* sum_g, double* sum_gx, float* g_out) {
  if (silu)
    row_grad_sums_impl<true>(dy, x, rows, S, center, scale, shift, sum_g, sum_gx, g_out);
  else
    row_grad_sums_impl<false>(dy, x, rows, S, center, scale, shift, sum_g, sum_gx, g_out);
}

void row_grad_apply(const float* dy, const float* x, float* dx, int64_t rows, int64_t S, const float* center,
                    const float* scale, const float* shift, bool silu, const float* k_dy, const float* k_x,
                    const float* k0) {
  if (silu)
    row_grad_apply_impl<true>(dy, x, dx, rows, S, center, scale, shift, k_dy, k_x, k0);
  else
    row_grad_apply_impl<false>(dy, x, dx, rows, S, center, scale, shift, k_dy, k_x, k0);
}

// ---- LayerNorm --------------------------------------------------------------------------------

namespace {

// Rows per parallel task: about kChunk elements.
int64_t rows_grain(int64_t D) { return std::max<int64_t>(1, kChunk / std::max<int64_t>(D, 1)); }

// Up to this width a row is summed in float vector lanes (each lane then holds at most
// kShortRow / 8 terms, and the two-pass form below removes the offset), which keeps rows of
// 32–128 channels fast; longer rows go through the double-blocked chunk_moments.
constexpr int64_t kShortRow = 1024;

void row_moments(const float* p, int64_t D, float eps, float& mean, float& rstd) {
  double m_d, var_d;
  if (D <= kShortRow) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t d = 0; d < D; ++d) s += p[d];
    const float m = s / float(D);
    float d1 = 0.f, d2 = 0.f;
#pragma omp simd reduction(+ : d1, d2)
    for (int64_t d = 0; d < D; ++d) {
      const float t = p[d] - m;
      d1 += t;
      d2 += t * t;
    }
    m_d = double(m) + double(d1) / double(D);
    var_d = std::max(0.0, (double(d2) - double(d1) * double(d1) / double(D)) / double(D));
  } else {
    const Moments mo = chunk_moments(p, D);
    m_d = mo.mean;
    var_d = mo.m2 / mo.n;
  }
  mean = static_cast<float>(m_d);
  rstd = static_cast<float>(1.0 / std::sqrt(var_d + double(eps)));
}

// Σ g and Σ g·(x − m) over a row, g = dy·γ (or dy).
void row_grad_moments(const float* gp, const float* xp, const float* gamma, float m, int64_t D, double& s_g,
                      double& s_gx) {
  if (D <= kShortRow) {
    float a = 0.f, b = 0.f;
    if (gamma) {
#pragma omp simd reduction(+ : a, b)
      for (int64_t d = 0; d < D; ++d) {
        const float g = gp[d] * gamma[d];
        a += g;
        b += g * (xp[d] - m);
      }
    } else {
#pragma omp simd reduction(+ : a, b)
      for (int64_t d = 0; d < D; ++d) {
        a += gp[d];
        b += gp[d] * (xp[d] - m);
      }
    }
    s_g = a;
    s_gx = b;
    return;
  }
  sum2(D, [=](int64_t d) {
    const float g = gamma ? gp[d] * gamma[d] : gp[d];
    return F2{g, g * (xp[d] - m)};
  }, s_g, s_gx);
}

constexpr int64_t kParamRows = 16;  // rows summed in float before the parameter partials (double)

}  // namespace

void layer_norm_forward(const float* x, float* y, int64_t rows, int64_t D, const float* gamma, const float* beta,
                        float eps, float* mean, float* rstd) {
  parallel_for(rows, rows_grain(D), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xp = x + r * D;
      float* yp = y + r * D;
      float m, rs;
      row_moments(xp, D, eps, m, rs);
      mean[r] = m;
      rstd[r] = rs;
      if (gamma) {
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) yp[d] = (xp[d] - m) * rs * gamma[d] + beta[d];
      } else {
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) yp[d] = (xp[d] - m) * rs;
      }
    }
  });
}

void layer_norm_backward(const float* dy, const float* x, int64_t rows, int64_t D, const float* gamma,
                         const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
  // Parameter gradients: per-task partials over a fixed block of rows (float over kParamRows
  // rows, then double), and the task partials summed in task order.
  const bool want_params = dgamma || dbeta;
  const int64_t grain = std::clamp<int64_t>(rows / 64, rows_grain(D), 4096);
  const int64_t tasks = (rows + grain - 1) / grain;
  std::vector<double> part_gamma(want_params ? tasks * D : 0), part_beta(want_params ? tasks * D : 0);
  parallel_for(rows, grain, [&](int64_t b, int64_t e) {
    double* pg = want_params ? part_gamma.data() + (b / grain) * D : nullptr;
    double* pb = want_params ? part_beta.data() + (b / grain) * D : nullptr;
    std::vector<float> fg(want_params ? D : 0, 0.f), fb(want_params ? D : 0, 0.f);
    for (int64_t r = b; r < e; ++r) {
      const float* xp = x + r * D;
      const float* gp = dy + r * D;
      const float m = mean[r], rs = rstd[r];
      if (dx) {
        double s_g, s_gx;
        row_grad_moments(gp, xp, gamma, m, D, s_g, s_gx);
        // dx = r·(g − mean(g) − x̂·mean(g·x̂)), with x̂ = (x − m)·r.
        const float m1 = static_cast<float>(s_g / double(D));
        const float m2r = static_cast<float>(s_gx / double(D) * double(rs) * double(rs));
        float* op = dx + r * D;
        if (gamma) {
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) op[d] = rs * (gp[d] * gamma[d] - m1 - (xp[d] - m) * m2r);
        } else {
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) op[d] = rs * (gp[d] - m1 - (xp[d] - m) * m2r);
        }
      }
      if (want_params) {
        float* fgp = fg.data();
        float* fbp = fb.data();
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) {
          fgp[d] += gp[d] * ((xp[d] - m) * rs);
          fbp[d] += gp[d];
        }
        if ((r - b) % kParamRows == kParamRows - 1 || r == e - 1) {
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) {
            pg[d] += double(fgp[d]);
            pb[d] += double(fbp[d]);
            fgp[d] = 0.f;
            fbp[d] = 0.f;
          }
        }
      }
    }
  });
  if (!want_params) return;
  for (int64_t d = 0; d < D; ++d) {
    double sg = 0, sb = 0;
    for (int64_t t = 0; t < tasks; ++t) {
      sg += part_gamma[t * D + d];
      sb += part_beta[t * D + d];
    }
    if (dgamma) dgamma[d] = static_cast<float>(sg);
    if (dbeta) dbeta[d] = static_cast<float>(sb);
  }
}

// ---- softmax ----------------------------------------------------------------------------------

namespace {

constexpr int64_t kInnerBlock = 64;  // inner positions processed together (vectorised across them)

void softmax_row(const float* x, float* y, int64_t D) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t d = 0; d < D; ++d) m = std::max(m, x[d]);
  const double s = sum1(D, [=](int64_t d) {
    const float e = fast_exp(x[d] - m);
    y[d] = e;
    return e;
  });
  const float inv = static_cast<float>(1.0 / s);
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) y[d] *= inv;
}

void softmax_strided(const float* x, float* y, int64_t D, int64_t inner, int64_t n) {
  float m[kInnerBlock], s[kInnerBlock];
  for (int64_t i = 0; i < n; ++i) m[i] = x[i];
  for (int64_t d = 1; d < D; ++d) {
    const float* xp = x + d * inner;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) m[i] = std::max(m[i], xp[i]);
  }
  for (int64_t i = 0; i < n; ++i) s[i] = 0.f;
  for (int64_t d = 0; d < D; ++d) {
    const float* xp = x + d * inner;
    float* yp = y + d * inner;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float e = fast_exp(xp[i] - m[i]);
      yp[i] = e;
      s[i] += e;  // positive terms: no cancellation, float is accurate here
    }
  }
  for (int64_t i = 0; i < n; ++i) s[i] = 1.f / s[i];
  for (int64_t d = 0; d < D; ++d) {
    float* yp = y + d * inner;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) yp[i] *= s[i];
  }
}

void softmax_backward_row(const float* y, const float* dy, float* dx, int64_t D) {
  const float dot = static_cast<float>(sum1(D, [=](int64_t d) { return dy[d] * y[d]; }));
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) dx[d] = y[d] * (dy[d] - dot);
}

void softmax_backward_strided(const float* y, const float* dy, float* dx, int64_t D, int64_t inner, int64_t n) {
  double dot[kInnerBlock] = {};
  for (int64_t d = 0; d < D; ++d) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dot[i] += double(dy[d * inner + i] * y[d * inner + i]);
  }
  float dotf[kInnerBlock];
  for (int64_t i = 0; i < n; ++i) dotf[i] = static_cast<float>(dot[i]);
  for (int64_t d = 0; d < D; ++d) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dx[d * inner + i] = y[d * inner + i] * (dy[d * inner + i] - dotf[i]);
  }
}

// Calls fn(offset, n) for each (outer, inner block) tile in parallel.
template <class F>
void for_each_tile(int64_t outer, int64_t D, int64_t inner, F&& fn) {
  const int64_t blocks = (inner + kInnerBlock - 1) / kInnerBlock;
  const int64_t grain = std::max<int64_t>(1, kChunk / std::max<int64_t>(D * kInnerBlock, 1));
  parallel_for(outer * blocks, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / blocks, i0 = (t % blocks) * kInnerBlock;
      fn(o * D * inner + i0, std::min(kInnerBlock, inner - i0));
    }
  });
}

}  // namespace

void softmax_forward(const float* x, float* y, int64_t outer, int64_t D, int64_t inner) {
  if (D == 0) return;
  if (inner == 1) {
    parallel_for(outer, rows_grain(D), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) softmax_row(x + r * D, y + r * D, D);
    });
    return;
  }
  for_each_tile(outer, D, inner, [&](int64_t off, int64_t n) { softmax_strided(x + off, y + off, D, inner, n); });
}

void softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t D, int64_t inner) {
  if (D == 0) return;
  if (inner == 1) {
    parallel_for(outer, rows_grain(D), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) softmax_backward_row(y + r * D, dy + r * D, dx + r * D, D);
    });
    return;
  }
  for_each_tile(outer, D, inner, [&](int64_t off, int64_t n) {
    softmax_backward_strided(y + off, dy + off, dx + off, D, inner, n);
  });
}

}  // namespace cpets::kernels::cpu::CPETS_ISA_NS
