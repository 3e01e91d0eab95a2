#include "kernels/cpu/perceptual.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace cpets::kernels::cpu {
namespace {

constexpr int64_t kBlock = 64;  // pixels per task: channel loops run over contiguous pixel rows

// ‖f‖ and ‖f‖ + eps for pixels [p0, p0 + n) of one image's (C, P) features. Callers divide by
// the latter, as lpips does, rather than multiply by its inverse: a product followed by a
// subtraction may be contracted into an FMA, and then â − b̂ would not be exactly 0 for a = b.
void pixel_norms(const float* f, int64_t C, int64_t P, int64_t p0, int64_t n, float eps, float* norm, float* den) {
  std::fill(norm, norm + n, 0.f);
  for (int64_t c = 0; c < C; ++c) {
    const float* row = f + c * P + p0;
    for (int64_t i = 0; i < n; ++i) norm[i] += row[i] * row[i];
  }
  for (int64_t i = 0; i < n; ++i) {
    norm[i] = std::sqrt(norm[i]);
    den[i] = norm[i] + eps;
  }
}

// Runs body(image, first pixel, pixel count) over all (image, block) tasks.
template <class F>
void for_pixel_blocks(int64_t N, int64_t P, F&& body) {
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  parallel_for(N * blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / blocks, p0 = (t % blocks) * kBlock;
      body(n, p0, std::min(kBlock, P - p0));
    }
  });
}

// d/df of (f / (‖f‖ + eps)) applied to g: (g − f·(Σ g·f)/(den·‖f‖)) / den, den = ‖f‖ + eps, per
// pixel of a block.
void normalize_backward(const float* f, const float* g, int64_t C, int64_t P, int64_t p0, int64_t n,
                        const float* norm, const float* den, float sign, float* df) {
  float dot[kBlock] = {};
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) dot[i] += g[c * kBlock + i] * f[c * P + p0 + i];
  float coef[kBlock];
  for (int64_t i = 0; i < n; ++i) coef[i] = norm[i] > 0.f ? dot[i] / (den[i] * norm[i]) : 0.f;
  for (int64_t c = 0; c < C; ++c) {
    const float* fr = f + c * P + p0;
    float* out = df + c * P + p0;
    for (int64_t i = 0; i < n; ++i) out[i] = sign * (g[c * kBlock + i] - fr[i] * coef[i]) / den[i];
  }
}

}  // namespace

void normalized_distance_forward(const float* a, const float* b, const float* w, int64_t N, int64_t C, int64_t P,
                                 float eps, float* out) {
  for_pixel_blocks(N, P, [&](int64_t n, int64_t p0, int64_t cnt) {
    const float* an = a + n * C * P;
    const float* bn = b + n * C * P;
    float na[kBlock], den_a[kBlock], nb[kBlock], den_b[kBlock], acc[kBlock] = {};
    pixel_norms(an, C, P, p0, cnt, eps, na, den_a);
    pixel_norms(bn, C, P, p0, cnt, eps, nb, den_b);
    for (int64_t c = 0; c < C; ++c) {
      const float* ar = an + c * P + p0;
      const float* br = bn + c * P + p0;
      for (int64_t i = 0; i < cnt; ++i) {
        const float d = ar[i] / den_a[i] - br[i] / den_b[i];
        acc[i] += w[c] * d * d;
      }
    }
    std::copy(acc, acc + cnt, out + n * P + p0);
  });
}

void normalized_distance_backward(const float* a, const float* b, const float* w, const float* dout, int64_t N,
                                  int64_t C, int64_t P, float eps, float* da, float* db, float* dw) {
  if (da || db) {
    for_pixel_blocks(N, P, [&](int64_t n, int64_t p0, int64_t cnt) {
      const float* an = a + n * C * P;
      const float* bn = b + n * C * P;
      float na[kBlock], den_a[kBlock], nb[kBlock], den_b[kBlock];
      pixel_norms(an, C, P, p0, cnt, eps, na, den_a);
      pixel_norms(bn, C, P, p0, cnt, eps, nb, den_b);
      // g = ∂out/∂â = 2·w·(â − b̂)·dout (and −g for b̂), one block of all channels.
      std::vector<float> g(size_t(C * kBlock));
      const float* go = dout + n * P + p0;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < cnt; ++i)
          g[size_t(c * kBlock + i)] = 2.f * w[c] * (an[c * P + p0 + i] / den_a[i] - bn[c * P + p0 + i] / den_b[i]) * go[i];
      if (da) normalize_backward(an, g.data(), C, P, p0, cnt, na, den_a, 1.f, da + n * C * P);
      if (db) normalize_backward(bn, g.data(), C, P, p0, cnt, nb, den_b, -1.f, db + n * C * P);
    });
  }
  if (!dw) return;
  // dw[c] = Σ over images and pixels of dout·(â_c − b̂_c)²: one channel per task, pixels in order.
  std::vector<float> den_a(size_t(N * P)), den_b(size_t(N * P));
  for_pixel_blocks(N, P, [&](int64_t n, int64_t p0, int64_t cnt) {
    float norm[kBlock];
    pixel_norms(a + n * C * P, C, P, p0, cnt, eps, norm, den_a.data() + n * P + p0);
    pixel_norms(b + n * C * P, C, P, p0, cnt, eps, norm, den_b.data() + n * P + p0);
  });
  parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double s = 0;
      for (int64_t n = 0; n < N; ++n) {
        const float* ar = a + (n * C + c) * P;
        const float* br = b + (n * C + c) * P;
        for (int64_t p = 0; p < P; ++p) {
          const float d = ar[p] / den_a[size_t(n * P + p)] - br[p] / den_b[size_t(n * P + p)];
          s += double(dout[n * P + p]) * double(d * d);
        }
      }
      dw[c] = float(s);
    }
  });
}

namespace {

// Where the slices across one axis lie in a (B, D, H, W) volume: `rows` × `cols` elements,
// `row_stride` / `col_stride` apart; slice s starts at origin(s); n = slices per image.
struct SliceGeometry {
  int64_t rows, cols, row_stride, col_stride, n;
  int64_t origin(int64_t s, int64_t B_volume_stride, int64_t axis_stride) const {
    return (s / n) * B_volume_stride + (s % n) * axis_stride;
  }
};

SliceGeometry geometry(int64_t D, int64_t H, int64_t W, int axis, int64_t& axis_stride) {
  switch (axis) {
    case 0: axis_stride = H * W; return {H, W, W, 1, D};
    case 1: axis_stride = W; return {D, W, H * W, 1, H};
    default: axis_stride = 1; return {D, H, H * W, W, W};
  }
}

}  // namespace

void gather_axis_slices(const float* x, int64_t B, int64_t D, int64_t H, int64_t W, int axis, const int64_t* index,
                        int64_t count, float* out) {
  int64_t axis_stride;
  const SliceGeometry g = geometry(D, H, W, axis, axis_stride);
  parallel_for(count, 1, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const float* src = x + g.origin(index[j], D * H * W, axis_stride);
      float* dst = out + j * g.rows * g.cols;
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t c = 0; c < g.cols; ++c) dst[r * g.cols + c] = src[r * g.row_stride + c * g.col_stride];
    }
  });
}

void scatter_axis_slices(const float* dout, int64_t B, int64_t D, int64_t H, int64_t W, int axis,
                         const int64_t* index, int64_t count, float* dx) {
  int64_t axis_stride;
  const SliceGeometry g = geometry(D, H, W, axis, axis_stride);
  const int64_t total = B * D * H * W;
  parallel_for(total, 1 << 16, [&](int64_t i0, int64_t i1) { std::memset(dx + i0, 0, size_t(i1 - i0) * sizeof(float)); });
  parallel_for(count, 1, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      float* dst = dx + g.origin(index[j], D * H * W, axis_stride);
      const float* src = dout + j * g.rows * g.cols;
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t c = 0; c < g.cols; ++c) dst[r * g.row_stride + c * g.col_stride] = src[r * g.cols + c];
    }
  });
}

}  // namespace cpets::kernels::cpu
