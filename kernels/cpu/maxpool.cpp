#include "kernels/cpu/maxpool.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace cpets::kernels::cpu {
namespace {

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// True when v should replace the running maximum m: strictly greater (so the first of equal
// values stays), or v is a NaN while m is not (NaN propagates, as in PyTorch).
inline bool beats(float v, float m) { return v > m || (std::isnan(v) && !std::isnan(m)); }

// The clipped window of output o along one axis: [begin, end).
inline void window(int64_t o, int64_t k, int64_t s, int64_t n, int64_t& begin, int64_t& end) {
  begin = o * s;
  end = std::min(begin + k, n);
}

// Index within the plane of the maximum of window (od, oh, ow), first one on ties.
int64_t window_argmax(const MaxPool3dShape& s, const float* plane, int64_t od, int64_t oh, int64_t ow) {
  int64_t d0, d1, h0, h1, w0, w1;
  window(od, s.kernel[0], s.stride[0], s.in[0], d0, d1);
  window(oh, s.kernel[1], s.stride[1], s.in[1], h0, h1);
  window(ow, s.kernel[2], s.stride[2], s.in[2], w0, w1);
  int64_t best = (d0 * s.in[1] + h0) * s.in[2] + w0;
  float m = plane[best];
  for (int64_t d = d0; d < d1; ++d)
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t row = (d * s.in[1] + h) * s.in[2];
      for (int64_t w = w0; w < w1; ++w)
        if (beats(plane[row + w], m)) {
          m = plane[row + w];
          best = row + w;
        }
    }
  return best;
}

// Output row (od, oh) of one plane: the window rows are folded into a running row maximum
// first (contiguous loads), then each output takes the max over its kW columns.
void forward_row(const MaxPool3dShape& s, const float* plane, int64_t od, int64_t oh, float* rowmax, float* out) {
  int64_t d0, d1, h0, h1;
  window(od, s.kernel[0], s.stride[0], s.in[0], d0, d1);
  window(oh, s.kernel[1], s.stride[1], s.in[1], h0, h1);
  const int64_t W = s.in[2];
  bool first = true;
  for (int64_t d = d0; d < d1; ++d)
    for (int64_t h = h0; h < h1; ++h) {
      const float* src = plane + (d * s.in[1] + h) * W;
      if (first) {
        std::copy(src, src + W, rowmax);
        first = false;
      } else {
        for (int64_t w = 0; w < W; ++w)
          if (beats(src[w], rowmax[w])) rowmax[w] = src[w];
      }
    }
  for (int64_t ow = 0; ow < s.out[2]; ++ow) {
    int64_t w0, w1;
    window(ow, s.kernel[2], s.stride[2], W, w0, w1);
    float m = rowmax[w0];
    for (int64_t w = w0 + 1; w < w1; ++w)
      if (beats(rowmax[w], m)) m = rowmax[w];
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

void max_pool3d_forward(const MaxPool3dShape& s, const float* x, float* y) {
  const int64_t rows = s.planes * s.out[0] * s.out[1];
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, s.in[2] * s.kernel[0] * s.kernel[1]));
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    std::vector<float> rowmax(size_t(s.in[2]));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p = r / (s.out[0] * s.out[1]), od = (r / s.out[1]) % s.out[0], oh = r % s.out[1];
      forward_row(s, x + p * s.in_voxels(), od, oh, rowmax.data(), y + r * s.out[2]);
    }
  });
}

void max_pool3d_backward(const MaxPool3dShape& s, const float* x, const float* dy, float* dx) {
  // Overlapping windows (stride < kernel) can share an argmax, so one plane is one task: its
  // contributions are added in output order by a single thread.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, s.in_voxels()));
  parallel_for(s.planes, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* plane = x + p * s.in_voxels();
      const float* g = dy + p * s.out_voxels();
      float* d = dx + p * s.in_voxels();
      std::fill(d, d + s.in_voxels(), 0.f);
      int64_t o = 0;
      for (int64_t od = 0; od < s.out[0]; ++od)
        for (int64_t oh = 0; oh < s.out[1]; ++oh)
          for (int64_t ow = 0; ow < s.out[2]; ++ow, ++o) d[window_argmax(s, plane, od, oh, ow)] += g[o];
    }
  });
}

}  // namespace cpets::kernels::cpu
