#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vmath.h"
#include "kernels/cpu/simd.h"  // last: the level's target for the rest of the file

namespace cpets::kernels::cpu::CPETS_ISA_NS {
namespace {

constexpr int64_t kChunk = 16384;  // elements per parallel work item (64 KB per stream)

// ---- broadcasting plan --------------------------------------------------------------------------

// Output dimensions after dropping size-1 dimensions and merging neighbours that broadcast alike,
// with each input's element stride per merged dimension (0 where it is broadcast).
struct Plan {
  std::vector<int64_t> dims, sa, sb;
  int64_t numel = 1;
};

Plan make_plan(const std::vector<int64_t>& a_shape, const std::vector<int64_t>& b_shape,
               const std::vector<int64_t>& out_shape) {
  Plan p;
  std::vector<bool> ba, bb;  // broadcast flags per merged dimension
  for (size_t i = 0; i < out_shape.size(); ++i) {
    const int64_t n = out_shape[i];
    p.numel *= n;
    if (n == 1) continue;
    const bool fa = a_shape[i] == 1, fb = b_shape[i] == 1;
    if (!p.dims.empty() && ba.back() == fa && bb.back() == fb) {
      p.dims.back() *= n;
    } else {
      p.dims.push_back(n);
      ba.push_back(fa);
      bb.push_back(fb);
    }
  }
  if (p.dims.empty()) {  // a single element
    p.dims = {1};
    ba = bb = {true};
  }
  const size_t nd = p.dims.size();
  p.sa.assign(nd, 0);
  p.sb.assign(nd, 0);
  int64_t stride_a = 1, stride_b = 1;
  for (size_t g = nd; g-- > 0;) {
    if (!ba[g]) { p.sa[g] = stride_a; stride_a *= p.dims[g]; }
    if (!bb[g]) { p.sb[g] = stride_b; stride_b *= p.dims[g]; }
  }
  return p;
}

// Calls row(a_offset, b_offset, out_offset, length) over the whole output, in contiguous output
// segments of at most kChunk elements along the last merged dimension, in parallel.
template <class RowFn>
void for_each_segment(const Plan& p, RowFn&& row) {
  if (p.numel == 0) return;
  const size_t nd = p.dims.size();
  const int64_t L = p.dims.back();
  const int64_t segs_per_row = (L + kChunk - 1) / kChunk;
  const int64_t seg_len = (L + segs_per_row - 1) / segs_per_row;
  const int64_t rows = p.numel / L;
  const int64_t items = rows * segs_per_row;
  const int64_t grain = std::max<int64_t>(1, kChunk / seg_len);
  parallel_for(items, grain, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      int64_t r = it / segs_per_row;
      const int64_t s = it % segs_per_row;
      int64_t oa = 0, ob = 0;
      for (size_t d = nd - 1; d-- > 0;) {  // decompose the row index over the outer dimensions
        const int64_t i = r % p.dims[d];
        r /= p.dims[d];
        oa += i * p.sa[d];
        ob += i * p.sb[d];
      }
      const int64_t start = s * seg_len;
      const int64_t len = std::min(seg_len, L - start);
      const int64_t row_start = (it / segs_per_row) * L + start;
      row(oa + start * p.sa[nd - 1], ob + start * p.sb[nd - 1], row_start, len);
    }
  });
}

template <BinaryOp OP>
inline float apply(float x, float y) {
  if constexpr (OP == BinaryOp::Add) return x + y;
  if constexpr (OP == BinaryOp::Sub) return x - y;
  if constexpr (OP == BinaryOp::Mul) return x * y;
  if constexpr (OP == BinaryOp::Div) return x / y;
}

// One contiguous output row; AV/BV say whether a/b advance along it (else they are one value).
template <BinaryOp OP, bool AV, bool BV>
void binary_row(const float* __restrict a, const float* __restrict b, float* __restrict o, int64_t n) {
  const float a0 = a[0], b0 = b[0];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = apply<OP>(AV ? a[i] : a0, BV ? b[i] : b0);
}

template <BinaryOp OP>
void binary_plan(const float* a, const float* b, float* out, const Plan& p) {
  const bool av = p.sa.back() != 0, bv = p.sb.back() != 0;
  auto run = [&](auto row_fn) {
    for_each_segment(p, [&](int64_t ia, int64_t ib, int64_t io, int64_t n) { row_fn(a + ia, b + ib, out + io, n); });
  };
  if (av && bv) run(binary_row<OP, true, true>);
  else if (av) run(binary_row<OP, true, false>);
  else if (bv) run(binary_row<OP, false, true>);
  else run(binary_row<OP, false, false>);
}

// ---- unary maps ---------------------------------------------------------------------------------

// y[i] = f(x[i]) (or any per-index expression), in parallel fixed chunks with a vectorised body.
template <class F>
void map_n(int64_t n, F&& f) {
  parallel_for(n, kChunk, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) f(i);
  });
}

// Loops whose body calls libm (exp, tanh, log): no simd pragma, the calls are scalar. (Polynomial
// versions in double were tried: GCC 12 turns their input clamps into control flow and leaves the
// loops scalar, no faster than libm.)
template <class F>
void map_n_scalar(int64_t n, F&& f) {
  parallel_for(n, kChunk, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  });
}

// GELU in blocks of 16: where every |x| in a block is ≤ 3 (nearly all of a layer's
// pre-activations) near(i) runs — the erf polynomial alone, bitwise the same results as the full
// formula there — else full(i), which also evaluates the tail terms. Blocks are fixed by index,
// so results do not depend on the thread count (nor, being equal, on the path taken).
template <class Near, class Full>
inline void gelu_blocks(const float* x, int64_t begin, int64_t end, Near&& near, Full&& full) {
  for (int64_t i0 = begin; i0 < end; i0 += 16) {
    const int64_t i1 = std::min(i0 + 16, end);
    float m = 0.f;
#pragma omp simd reduction(max : m)
    for (int64_t i = i0; i < i1; ++i) m = std::abs(x[i]) > m ? std::abs(x[i]) : m;
    if (m <= 3.f) {
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) near(i);
    } else {
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) full(i);
    }
  }
}

}  // namespace

void binary_broadcast(BinaryOp op, const float* a, const std::vector<int64_t>& a_shape, const float* b,
                      const std::vector<int64_t>& b_shape, float* out, const std::vector<int64_t>& out_shape) {
  const Plan p = make_plan(a_shape, b_shape, out_shape);
  switch (op) {
    case BinaryOp::Add: binary_plan<BinaryOp::Add>(a, b, out, p); break;
    case BinaryOp::Sub: binary_plan<BinaryOp::Sub>(a, b, out, p); break;
    case BinaryOp::Mul: binary_plan<BinaryOp::Mul>(a, b, out, p); break;
    case BinaryOp::Div: binary_plan<BinaryOp::Div>(a, b, out, p); break;
  }
}

void broadcast_to(const float* x, const std::vector<int64_t>& x_shape, float* out,
                  const std::vector<int64_t>& out_shape, float scale) {
  const Plan p = make_plan(x_shape, out_shape, out_shape);
  const bool xv = p.sa.back() != 0;
  for_each_segment(p, [&](int64_t ix, int64_t, int64_t io, int64_t n) {
    const float* __restrict s = x + ix;
    float* __restrict o = out + io;
    if (xv) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = s[i] * scale;
    } else {
      const float v = s[0] * scale;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = v;
    }
  });
}

void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float p0, float p1) {
  switch (op) {
    case UnaryOp::Neg: map_n(n, [&](int64_t i) { y[i] = -x[i]; }); break;
    case UnaryOp::AddScalar: map_n(n, [&](int64_t i) { y[i] = x[i] + p0; }); break;
    case UnaryOp::MulScalar: map_n(n, [&](int64_t i) { y[i] = x[i] * p0; }); break;
    case UnaryOp::Silu: map_n(n, [&](int64_t i) { y[i] = x[i] * fast_sigmoid(x[i]); }); break;
    case UnaryOp::Gelu:
      parallel_for(n, kChunk, [&](int64_t b, int64_t e) {
        gelu_blocks(x, b, e, [&](int64_t i) { y[i] = gelu_near(x[i]); }, [&](int64_t i) { y[i] = gelu_exact(x[i]); });
      });
      break;
    case UnaryOp::LeakyRelu: map_n(n, [&](int64_t i) { y[i] = x[i] > 0.f ? x[i] : x[i] * p0; }); break;
    case UnaryOp::Relu: map_n(n, [&](int64_t i) { y[i] = x[i] < 0.f ? 0.f : x[i]; }); break;
    case UnaryOp::Sigmoid: map_n(n, [&](int64_t i) { y[i] = fast_sigmoid(x[i]); }); break;
    case UnaryOp::Tanh: map_n_scalar(n, [&](int64_t i) { y[i] = std::tanh(x[i]); }); break;
    case UnaryOp::Exp: map_n_scalar(n, [&](int64_t i) { y[i] = std::exp(x[i]); }); break;
    case UnaryOp::Log: map_n_scalar(n, [&](int64_t i) { y[i] = std::log(x[i]); }); break;
    case UnaryOp::Clamp: map_n(n, [&](int64_t i) { y[i] = std::min(std::max(x[i], p0), p1); }); break;
  }
}

bool unary_backward_uses_output(UnaryOp op) {
  return op == UnaryOp::Sigmoid || op == UnaryOp::Tanh || op == UnaryOp::Exp;
}

void unary_backward(UnaryOp op, const float* __restrict v, const float* dy, float* dx, int64_t n, float p0,
                    float p1) {
  switch (op) {
    case UnaryOp::Neg: map_n(n, [&](int64_t i) { dx[i] = -dy[i]; }); break;
    case UnaryOp::AddScalar: map_n(n, [&](int64_t i) { dx[i] = dy[i]; }); break;
    case UnaryOp::MulScalar: map_n(n, [&](int64_t i) { dx[i] = dy[i] * p0; }); break;
    case UnaryOp::Silu:
      map_n(n, [&](int64_t i) {
        const float s = fast_sigmoid(v[i]);
        dx[i] = dy[i] * (s * (1.f + v[i] * (1.f - s)));
      });
      break;
    case UnaryOp::Gelu:
      parallel_for(n, kChunk, [&](int64_t b, int64_t e) {
        gelu_blocks(v, b, e, [&](int64_t i) { dx[i] = dy[i] * gelu_grad_near(v[i]); },
                    [&](int64_t i) { dx[i] = dy[i] * gelu_exact_grad(v[i]); });
      });
      break;
    case UnaryOp::LeakyRelu: map_n(n, [&](int64_t i) { dx[i] = v[i] > 0.f ? dy[i] : dy[i] * p0; }); break;
    case UnaryOp::Relu: map_n(n, [&](int64_t i) { dx[i] = v[i] > 0.f ? dy[i] : 0.f; }); break;
    case UnaryOp::Sigmoid: map_n(n, [&](int64_t i) { dx[i] = dy[i] * v[i] * (1.f - v[i]); }); break;
    case UnaryOp::Tanh: map_n(n, [&](int64_t i) { dx[i] = dy[i] * (1.f - v[i] * v[i]); }); break;
    case UnaryOp::Exp: map_n(n, [&](int64_t i) { dx[i] = dy[i] * v[i]; }); break;
    case UnaryOp::Log: map_n(n, [&](int64_t i) { dx[i] = dy[i] / v[i]; }); break;
    case UnaryOp::Clamp:
      map_n(n, [&](int64_t i) { dx[i] = (v[i] >= p0 && v[i] <= p1) ? dy[i] : 0.f; });
      break;
  }
}

namespace {

// body(row, i0, i1) over [i0, i1) of each row of F, in fixed parallel chunks of about kChunk
// elements (long rows split into segments, so a single row still parallelises).
template <class F_>
void for_row_segments(int64_t rows, int64_t F, F_&& body) {
  if (rows <= 0 || F <= 0) return;
  const int64_t segs = (F + kChunk - 1) / kChunk;
  const int64_t seg_len = (F + segs - 1) / segs;
  parallel_for(rows * segs, std::max<int64_t>(1, kChunk / seg_len), [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      const int64_t r = it / segs, i0 = (it % segs) * seg_len;
      body(r, i0, std::min(F, i0 + seg_len));
    }
  });
}

}  // namespace

void geglu_forward(const float* x, float* y, int64_t rows, int64_t F) {
  for_row_segments(rows, F, [&](int64_t r, int64_t i0, int64_t i1) {
    const float* __restrict a = x + r * 2 * F;
    const float* __restrict b = a + F;
    float* __restrict o = y + r * F;
    gelu_blocks(b, i0, i1, [&](int64_t i) { o[i] = a[i] * gelu_near(b[i]); },
                [&](int64_t i) { o[i] = a[i] * gelu_exact(b[i]); });
  });
}

void geglu_backward(const float* x, const float* dy, float* dx, int64_t rows, int64_t F) {
  for_row_segments(rows, F, [&](int64_t r, int64_t i0, int64_t i1) {
    const float* __restrict a = x + r * 2 * F;
    const float* __restrict b = a + F;
    const float* __restrict g = dy + r * F;
    float* __restrict da = dx + r * 2 * F;
    float* __restrict db = da + F;
    gelu_blocks(
        b, i0, i1,
        [&](int64_t i) {
          const double cdf = normal_cdf_near(b[i]), pdf = normal_pdf(fast_exp_d(-0.5 * double(b[i]) * double(b[i])));
          da[i] = g[i] * float(double(b[i]) * cdf);
          db[i] = g[i] * a[i] * float(cdf + double(b[i]) * pdf);
        },
        [&](int64_t i) {
          const NormalCdfPdf n = normal_cdf_pdf(b[i]);
          da[i] = g[i] * float(double(b[i]) * n.cdf);
          db[i] = g[i] * a[i] * float(n.cdf + double(b[i]) * n.pdf);
        });
  });
}

}  // namespace cpets::kernels::cpu::CPETS_ISA_NS
