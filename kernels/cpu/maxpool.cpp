#include "kernels/cpu/maxpool.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace cpets::kernels::cpu {
namespace {

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Value-only maximum that propagates NaN (v != v is the NaN test). Bitwise | and &, not || and
// &&: short-circuit operators compile to branches, which random data mispredicts half the time
// (measured 3× slower); a select over the combined mask is branch-free and vectorises.
inline float nan_max(float v, float m) { return ((v > m) | (v != v)) ? v : m; }

// Whether (v, at i) beats the current maximum (m, at mi) under the scan-order rule: a NaN beats
// any number, and among NaNs or equal numbers the smaller flat index (earlier in scan order) wins.
inline bool beats(float v, int32_t i, float m, int32_t mi) {
  const bool vn = v != v, mn = m != m, earlier = i < mi;
  return (vn & (!mn | earlier)) | (!vn & !mn & ((v > m) | ((v == m) & earlier)));
}

// The clipped window of output o along one axis: [begin, end).
inline void window(int64_t o, int64_t k, int64_t s, int64_t n, int64_t& begin, int64_t& end) {
  begin = o * s;
  end = std::min(begin + k, n);
}

// Scratch of one task: the column maxima of the current output row's window rows.
struct Columns {
  std::vector<float> value;
  std::vector<int32_t> index;
};

// Output row (od, oh) of one plane. Down the window rows first: rows come in scan order, so a
// later row replaces a column's maximum only when strictly greater (or the first NaN).
void forward_row(const MaxPool3dShape& s, const float* plane, int64_t od, int64_t oh, Columns& col, float* out,
                 int32_t* arg) {
  int64_t d0, d1, h0, h1;
  window(od, s.kernel[0], s.stride[0], s.in[0], d0, d1);
  window(oh, s.kernel[1], s.stride[1], s.in[1], h0, h1);
  const int64_t W = s.in[2];
  float* cv = col.value.data();
  int32_t* ci = col.index.data();
  bool first = true;
  for (int64_t d = d0; d < d1; ++d)
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t base = (d * s.in[1] + h) * W;
      const float* src = plane + base;
      if (first) {
        std::copy(src, src + W, cv);
        if (arg)
          for (int64_t w = 0; w < W; ++w) ci[w] = int32_t(base + w);
        first = false;
      } else if (arg) {
        for (int64_t w = 0; w < W; ++w) {
          const bool take = (src[w] > cv[w]) | ((src[w] != src[w]) & (cv[w] == cv[w]));
          cv[w] = take ? src[w] : cv[w];
          ci[w] = take ? int32_t(base + w) : ci[w];
        }
      } else {
        for (int64_t w = 0; w < W; ++w) cv[w] = nan_max(src[w], cv[w]);
      }
    }
  // Across columns. Windows that lie wholly inside the row go kernel column by kernel column,
  // each pass a loop over all outputs without a carried dependency (so it vectorises, where a
  // per-window loop compiled to mispredicted branches); the few clipped windows at the end
  // (ceil_mode) are done one by one.
  const int64_t kW = s.kernel[2], sW = s.stride[2];
  const int64_t full = W >= kW ? std::min(s.out[2], (W - kW) / sW + 1) : 0;
  for (int64_t ow = 0; ow < full; ++ow) out[ow] = cv[ow * sW];
  if (arg)
    for (int64_t ow = 0; ow < full; ++ow) arg[ow] = ci[ow * sW];
  for (int64_t kw = 1; kw < kW; ++kw) {
    if (arg) {
      for (int64_t ow = 0; ow < full; ++ow) {
        const int64_t w = ow * sW + kw;
        const bool take = beats(cv[w], ci[w], out[ow], arg[ow]);
        out[ow] = take ? cv[w] : out[ow];
        arg[ow] = take ? ci[w] : arg[ow];
      }
    } else {
      for (int64_t ow = 0; ow < full; ++ow) out[ow] = nan_max(cv[ow * sW + kw], out[ow]);
    }
  }
  for (int64_t ow = full; ow < s.out[2]; ++ow) {
    int64_t w0, w1;
    window(ow, kW, sW, W, w0, w1);
    float m = cv[w0];
    if (arg) {
      int32_t mi = ci[w0];
      for (int64_t w = w0 + 1; w < w1; ++w)
        if (beats(cv[w], ci[w], m, mi)) m = cv[w], mi = ci[w];
      arg[ow] = mi;
    } else {
      for (int64_t w = w0 + 1; w < w1; ++w) m = nan_max(cv[w], m);
    }
    out[ow] = m;
  }
}

}  // namespace

int64_t max_pool_out_size(int64_t in, int64_t kernel, int64_t stride, bool ceil_mode) {
  int64_t out = floor_div(in - kernel + (ceil_mode ? stride - 1 : 0), stride) + 1;
  // ceil_mode may not start a window in the padding (here: past the end of the input).
  if (ceil_mode && out > 0 && (out - 1) * stride >= in) --out;
  return out;
}

void max_pool3d_forward(const MaxPool3dShape& s, const float* x, float* y, int32_t* argmax) {
  const int64_t rows = s.planes * s.out[0] * s.out[1];
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, s.in[2] * s.kernel[0] * s.kernel[1]));
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    Columns col{std::vector<float>(size_t(s.in[2])), std::vector<int32_t>(argmax ? size_t(s.in[2]) : 0)};
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p = r / (s.out[0] * s.out[1]), od = (r / s.out[1]) % s.out[0], oh = r % s.out[1];
      forward_row(s, x + p * s.in_voxels(), od, oh, col, y + r * s.out[2], argmax ? argmax + r * s.out[2] : nullptr);
    }
  });
}

void max_pool3d_backward(const MaxPool3dShape& s, const int32_t* argmax, const float* dy, float* dx) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, s.in_voxels()));
  parallel_for(s.planes, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int32_t* arg = argmax + p * s.out_voxels();
      const float* g = dy + p * s.out_voxels();
      float* d = dx + p * s.in_voxels();
      std::fill(d, d + s.in_voxels(), 0.f);
      for (int64_t o = 0; o < s.out_voxels(); ++o) d[arg[o]] += g[o];
    }
  });
}

}  // namespace cpets::kernels::cpu
