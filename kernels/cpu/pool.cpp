#include "kernels/cpu/pool.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace cpets::kernels::cpu {
namespace {

// out[od, oh, ow] = scale · Σ of the 2×2×2 block at (2od, 2oh, 2ow) of src (D, H, W), for
// output rows [r0, r1) of a plane (row = (od, oh)). The four source rows are added first
// (contiguous, vectorised), then neighbouring pairs.
// Rows r are global over all planes: r = (plane·oD + od)·oH + oh.
void sum_blocks_2x2x2(const float* src, int64_t D, int64_t H, int64_t W, int64_t oD, int64_t oH, int64_t oW,
                      int64_t r0, int64_t r1, float scale, float* out) {
  std::vector<float> row(size_t(2 * oW));
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t p = r / (oD * oH), od = (r / oH) % oD, oh = r % oH;
    const float* a = src + ((p * D + 2 * od) * H + 2 * oh) * W;
    const float* b = a + W;
    const float* c = a + H * W;
    const float* d = c + W;
    float* t = row.data();
    for (int64_t i = 0; i < 2 * oW; ++i) t[i] = (a[i] + b[i]) + (c[i] + d[i]);
    float* o = out + r * oW;
    for (int64_t i = 0; i < oW; ++i) o[i] = (t[2 * i] + t[2 * i + 1]) * scale;
  }
}

// Windows o (of `out_n`) covering input index i: o·s ≤ i < o·s + k.
inline void window_range(int64_t i, int64_t k, int64_t s, int64_t out_n, int64_t& lo, int64_t& hi) {
  lo = i - k + 1 <= 0 ? 0 : (i - k + 1 + s - 1) / s;
  hi = std::min(out_n - 1, i / s);
}

}  // namespace

void avg_pool3d_forward(const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t k, int64_t s,
                        float* y) {
  const int64_t oD = pool_out_size(D, k, s), oH = pool_out_size(H, k, s), oW = pool_out_size(W, k, s);
  const int64_t rows = planes * oD * oH;
  const float scale = 1.f / float(k * k * k);
  if (k == 2 && s == 2) {
    parallel_for(rows, 16, [&](int64_t r0, int64_t r1) { sum_blocks_2x2x2(x, D, H, W, oD, oH, oW, r0, r1, scale, y); });
    return;
  }
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p = r / (oD * oH), od = (r / oH) % oD, oh = r % oH;
      float* o = y + r * oW;
      for (int64_t ow = 0; ow < oW; ++ow) o[ow] = 0.f;
      for (int64_t kd = 0; kd < k; ++kd)
        for (int64_t kh = 0; kh < k; ++kh) {
          const float* src = x + ((p * D + od * s + kd) * H + oh * s + kh) * W;
          for (int64_t ow = 0; ow < oW; ++ow) {
            float acc = 0;
            for (int64_t kw = 0; kw < k; ++kw) acc += src[ow * s + kw];
            o[ow] += acc;
          }
        }
      for (int64_t ow = 0; ow < oW; ++ow) o[ow] *= scale;
    }
  });
}

void avg_pool3d_backward(const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, int64_t k, int64_t s,
                         float* dx) {
  const int64_t oD = pool_out_size(D, k, s), oH = pool_out_size(H, k, s), oW = pool_out_size(W, k, s);
  const float scale = 1.f / float(k * k * k);
  // Gather: each input voxel sums the windows that contain it (so no two threads write one
  // element and the order is fixed).
  parallel_for(planes * D * H, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p = r / (D * H), d = (r / H) % D, h = r % H;
      float* o = dx + r * W;
      int64_t dlo, dhi, hlo, hhi;
      window_range(d, k, s, oD, dlo, dhi);
      window_range(h, k, s, oH, hlo, hhi);
      if (k == 2 && s == 2) {
        // One window per voxel at most: a scaled nearest copy (zeros past the last window).
        if (dlo > dhi || hlo > hhi) {
          std::fill(o, o + W, 0.f);
          continue;
        }
        const float* g = dy + ((p * oD + d / 2) * oH + h / 2) * oW;
        for (int64_t w = 0; w < oW; ++w) o[2 * w] = o[2 * w + 1] = g[w] * scale;
        std::fill(o + 2 * oW, o + W, 0.f);
        continue;
      }
      for (int64_t w = 0; w < W; ++w) {
        int64_t wlo, whi;
        window_range(w, k, s, oW, wlo, whi);
        float acc = 0;
        for (int64_t od = dlo; od <= dhi; ++od)
          for (int64_t oh = hlo; oh <= hhi; ++oh) {
            const float* g = dy + ((p * oD + od) * oH + oh) * oW;
            for (int64_t ow = wlo; ow <= whi; ++ow) acc += g[ow];
          }
        o[w] = acc * scale;
      }
    }
  });
}

void upsample_nearest2x_forward(const float* x, int64_t planes, int64_t D, int64_t H, int64_t W, float* y) {
  const int64_t W2 = 2 * W, H2 = 2 * H;
  parallel_for(planes * D * H, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p = r / (D * H), d = (r / H) % D, h = r % H;
      const float* src = x + r * W;
      float* o0 = y + ((p * 2 * D + 2 * d) * H2 + 2 * h) * W2;
      for (int64_t w = 0; w < W; ++w) o0[2 * w] = o0[2 * w + 1] = src[w];
      std::memcpy(o0 + W2, o0, sizeof(float) * W2);
      std::memcpy(o0 + H2 * W2, o0, sizeof(float) * W2);
      std::memcpy(o0 + H2 * W2 + W2, o0, sizeof(float) * W2);
    }
  });
}

void upsample_nearest2x_backward(const float* dy, int64_t planes, int64_t D, int64_t H, int64_t W, float* dx) {
  parallel_for(planes * D * H, 16, [&](int64_t r0, int64_t r1) {
    sum_blocks_2x2x2(dy, 2 * D, 2 * H, 2 * W, D, H, W, r0, r1, 1.f, dx);
  });
}

}  // namespace cpets::kernels::cpu
