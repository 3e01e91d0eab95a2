#include "kernels/cpu/conv3d_winograd.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace cpets::kernels::cpu {
namespace {

std::string shape_text(const Conv3dShape& s) {
  auto triple = [](const int64_t* v) {
    return "(" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ", " + std::to_string(v[2]) + ")";
  };
  return "batch " + std::to_string(s.batch) + ", channels " + std::to_string(s.in_channels) + " -> " +
         std::to_string(s.out_channels) + ", input " + triple(s.in) + ", kernel " + triple(s.kernel) + ", stride " +
         triple(s.stride) + ", padding " + triple(s.padding);
}

void require_supported(const Conv3dShape& s, const char* who) {
  if (!conv3d_winograd_available())
    throw std::runtime_error(std::string(who) + ": this build has no AVX-512; use conv3d_forward / conv3d_backward_data");
  if (!conv3d_winograd_supports(s))
    throw std::invalid_argument(std::string(who) +
                                ": only kernel 3x3x3, stride 1, padding 1 and positive sizes are supported, got " +
                                shape_text(s) + "; use conv3d_forward / conv3d_backward_data for other shapes");
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr int kLanes = 16;
constexpr int kPositions = 64;   // 4×4×4 Winograd positions per tile
constexpr int kMaxTiles = 12;    // tiles along W per task: 12 × 2 output vectors fill the registers
// The transformed input block is V[ci][p][16 tiles], channel by channel as the transform writes
// it; one spare position per channel keeps the GEMM's reads of one position over the channels
// (a 4 KiB stride otherwise) off a single L1 set.
constexpr int64_t kVChannel = (kPositions + 1) * kLanes;
// The products are M[tile][p][co]: the output transform reads one tile's 64 positions as one
// contiguous run; a spare position per tile, again, spreads the GEMM's stores over L1 sets.
constexpr int64_t kMTile = kPositions + 1;

// Tiles of 2×2×2 outputs; a task is a row of at most kMaxTiles tiles along W.
struct TileGrid {
  int64_t tD, tH, tW, blocks, per_block;
  explicit TileGrid(const int64_t in[3]) {
    tD = ceil_div(in[0], 2);
    tH = ceil_div(in[1], 2);
    tW = ceil_div(in[2], 2);
    blocks = ceil_div(tW, kMaxTiles);
    per_block = ceil_div(tW, blocks);  // balanced blocks: 24 tiles → 12 + 12, not 12 + 12 + 0
  }
};

// U[p][ci][co] (co padded to cout_p with zeros) = G·g·Gᵀ along the three axes, in double, for the
// 3×3×3 kernel g(co, ci) read through `tap(co, ci, t)`, t = (kd·3 + kh)·3 + kw.
// G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
template <class Tap>
void transform_weights(int64_t cin, int64_t cout, int64_t cout_p, Tap&& tap, float* U) {
  std::fill(U, U + kPositions * cin * cout_p, 0.f);
  auto g_row = [](const double* v, int64_t stride, double* o, int64_t ostride) {
    o[0] = v[0];
    o[ostride] = 0.5 * (v[0] + v[stride] + v[2 * stride]);
    o[2 * ostride] = 0.5 * (v[0] - v[stride] + v[2 * stride]);
    o[3 * ostride] = v[2 * stride];
  };
  for (int64_t co = 0; co < cout; ++co)
    for (int64_t ci = 0; ci < cin; ++ci) {
      double g[27], a[3][3][4], b[3][4][4], c[4][4][4];
      for (int t = 0; t < 27; ++t) g[t] = double(tap(co, ci, t));
      for (int d = 0; d < 3; ++d)
        for (int h = 0; h < 3; ++h) g_row(g + (d * 3 + h) * 3, 1, &a[d][h][0], 1);
      for (int d = 0; d < 3; ++d)
        for (int w = 0; w < 4; ++w) g_row(&a[d][0][w], 4, &b[d][0][w], 4);
      for (int h = 0; h < 4; ++h)
        for (int w = 0; w < 4; ++w) g_row(&b[0][h][w], 16, &c[0][h][w], 16);
      for (int p = 0; p < kPositions; ++p) U[(p * cin + ci) * cout_p + co] = float((&c[0][0][0])[p]);
    }
}

#ifdef __AVX512F__

// Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]] on four vectors, in place.
inline void bt4(__m512& v0, __m512& v1, __m512& v2, __m512& v3) {
  const __m512 r0 = _mm512_sub_ps(v0, v2), r1 = _mm512_add_ps(v1, v2), r2 = _mm512_sub_ps(v2, v1),
               r3 = _mm512_sub_ps(v1, v3);
  v0 = r0;
  v1 = r1;
  v2 = r2;
  v3 = r3;
}

// One task's input tiles, all channels: V[ci][p][tile] (16 floats per (ci, p), tiles in lanes;
// lanes ≥ the task's tile count hold garbage that is never read). Tile j's W line is padded
// input w = 2(j0 + j) − 1 + k, k = 0..3: two masked loads of 16 floats per row, split into
// even and odd columns, give all four k as vectors over the tiles.
struct InputRow {
  __m512i even, odd, even1, odd1;
  InputRow()
      : even(_mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)),
        odd(_mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)),
        // Lane 15 would need column 32: never used (at most 12 tiles per task).
        even1(_mm512_setr_epi32(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 0)),
        odd1(_mm512_setr_epi32(3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 1)) {}
};

// With `prefetch_next`, it also asks for the two new input rows per (channel, plane) that the
// task at th + 1 will read: rows two H positions apart and a channel plane (590 KB at
// 48×64×48) apart, a pattern the hardware prefetchers do not follow. perf showed the row loads
// as the hot spot of the transform; the prefetch gained 0–7 % (noisy machine).
__attribute__((noinline)) void transform_input(const float* xb, int64_t cin, const int64_t in[3], int64_t td, int64_t th,
                                               int64_t j0, bool prefetch_next, float* V) {
  const int64_t D = in[0], H = in[1], W = in[2], plane = H * W, chan = D * plane;
  const int64_t w0 = 2 * j0 - 1;
  auto lane_mask = [&](int64_t first) {
    uint32_t m = 0;
    for (int l = 0; l < kLanes; ++l)
      if (first + l >= 0 && first + l < W) m |= 1u << l;
    return __mmask16(m);
  };
  const __mmask16 mA = lane_mask(w0), mB = lane_mask(w0 + kLanes);
  const InputRow idx;
  bool row_ok[4][4];
  int64_t row_off[4][4];
  for (int dd = 0; dd < 4; ++dd)
    for (int hh = 0; hh < 4; ++hh) {
      const int64_t d = 2 * td - 1 + dd, h = 2 * th - 1 + hh;
      row_ok[dd][hh] = d >= 0 && d < D && h >= 0 && h < H;
      row_off[dd][hh] = row_ok[dd][hh] ? d * plane + h * W + w0 : 0;
    }
  bool next_ok[4];  // per dd: the rows at h + 2 of hh = 2, 3 exist
  for (int dd = 0; dd < 4; ++dd) next_ok[dd] = prefetch_next && row_ok[dd][2] && 2 * th + 1 + 2 < H;
  auto prefetch_row = [](const float* p) {
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(p + 16), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(p + 31), _MM_HINT_T1);
  };
  alignas(64) float tmp[4][16][kLanes];  // [dd][hh'·4 + k'] after the W and H transforms
  for (int64_t ci = 0; ci < cin; ++ci) {
    const float* xc = xb + ci * chan;
    for (int dd = 0; dd < 4; ++dd) {
      __m512 r[4][4];
      for (int hh = 0; hh < 4; ++hh) {
        if (!row_ok[dd][hh]) {
          for (int k = 0; k < 4; ++k) r[hh][k] = _mm512_setzero_ps();
          continue;
        }
        const float* row = xc + row_off[dd][hh];
        if (hh >= 2 && next_ok[dd] && (hh == 2 || 2 * th + 4 < H)) prefetch_row(row + 2 * W);
        const __m512 a = _mm512_maskz_loadu_ps(mA, row), b = _mm512_maskz_loadu_ps(mB, row + kLanes);
        r[hh][0] = _mm512_permutex2var_ps(a, idx.even, b);
        r[hh][1] = _mm512_permutex2var_ps(a, idx.odd, b);
        r[hh][2] = _mm512_permutex2var_ps(a, idx.even1, b);
        r[hh][3] = _mm512_permutex2var_ps(a, idx.odd1, b);
        bt4(r[hh][0], r[hh][1], r[hh][2], r[hh][3]);
      }
      for (int k = 0; k < 4; ++k) {
        bt4(r[0][k], r[1][k], r[2][k], r[3][k]);
        for (int hh = 0; hh < 4; ++hh) _mm512_store_ps(tmp[dd][hh * 4 + k], r[hh][k]);
      }
    }
    float* Vc = V + ci * kVChannel;
    for (int i = 0; i < 16; ++i) {
      __m512 v0 = _mm512_load_ps(tmp[0][i]), v1 = _mm512_load_ps(tmp[1][i]), v2 = _mm512_load_ps(tmp[2][i]),
             v3 = _mm512_load_ps(tmp[3][i]);
      bt4(v0, v1, v2, v3);
      _mm512_store_ps(Vc + (0 * 16 + i) * kLanes, v0);
      _mm512_store_ps(Vc + (1 * 16 + i) * kLanes, v1);
      _mm512_store_ps(Vc + (2 * 16 + i) * kLanes, v2);
      _mm512_store_ps(Vc + (3 * 16 + i) * kLanes, v3);
    }
  }
}

// M[tile][p][co] = Σ_ci V[ci][p][tile] · U[p][ci][co] for NT tiles: NT × NCV accumulators of
// 16 output channels, one U load per channel vector and one broadcast per tile.
template <int NT, int NCV>
__attribute__((noinline)) void multiply(const float* V, const float* U, int64_t cin, int64_t cout_p, float* M) {
  const int64_t cvecs = cout_p / kLanes;
  for (int p = 0; p < kPositions; ++p) {
    const float* Vp = V + p * kLanes;
    const float* Up = U + p * cin * cout_p;
    float* Mp = M + p * cout_p;
    for (int64_t cv = 0; cv < cvecs; cv += NCV) {
      __m512 acc[NT][NCV];
      for (int t = 0; t < NT; ++t)
        for (int c = 0; c < NCV; ++c) acc[t][c] = _mm512_setzero_ps();
      const float* u = Up + cv * kLanes;
      const float* v = Vp;
      for (int64_t ci = 0; ci < cin; ++ci, u += cout_p, v += kVChannel) {
        __m512 uv[NCV];
        for (int c = 0; c < NCV; ++c) uv[c] = _mm512_loadu_ps(u + c * kLanes);
        for (int t = 0; t < NT; ++t) {
          const __m512 b = _mm512_set1_ps(v[t]);
          for (int c = 0; c < NCV; ++c) acc[t][c] = _mm512_fmadd_ps(b, uv[c], acc[t][c]);
        }
      }
      for (int t = 0; t < NT; ++t)
        for (int c = 0; c < NCV; ++c) _mm512_storeu_ps(Mp + t * kMTile * cout_p + (cv + c) * kLanes, acc[t][c]);
    }
  }
}

template <int NCV>
void multiply_nt(int nt, const float* V, const float* U, int64_t cin, int64_t cout_p, float* M) {
  switch (nt) {
    case 1: return multiply<1, NCV>(V, U, cin, cout_p, M);
    case 2: return multiply<2, NCV>(V, U, cin, cout_p, M);
    case 3: return multiply<3, NCV>(V, U, cin, cout_p, M);
    case 4: return multiply<4, NCV>(V, U, cin, cout_p, M);
    case 5: return multiply<5, NCV>(V, U, cin, cout_p, M);
    case 6: return multiply<6, NCV>(V, U, cin, cout_p, M);
    case 7: return multiply<7, NCV>(V, U, cin, cout_p, M);
    case 8: return multiply<8, NCV>(V, U, cin, cout_p, M);
    case 9: return multiply<9, NCV>(V, U, cin, cout_p, M);
    case 10: return multiply<10, NCV>(V, U, cin, cout_p, M);
    case 11: return multiply<11, NCV>(V, U, cin, cout_p, M);
    default: return multiply<12, NCV>(V, U, cin, cout_p, M);
  }
}

// Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]] on four vectors.
inline void at4(__m512 v0, __m512 v1, __m512 v2, __m512 v3, __m512& o0, __m512& o1) {
  const __m512 s = _mm512_add_ps(v1, v2);
  o0 = _mm512_add_ps(v0, s);
  o1 = _mm512_sub_ps(_mm512_sub_ps(v1, v2), v3);
}

// Y[tile][od·4 + oh·2 + ow][co] = bias + Aᵀ M[tile][·][co] A along the three axes.
__attribute__((noinline)) void transform_output(const float* M, int nt, int64_t cout_p, const float* bias_p, float* Y) {
  const int64_t cvecs = cout_p / kLanes;
  for (int t = 0; t < nt; ++t)
    for (int64_t cv = 0; cv < cvecs; ++cv) {
      const float* m = M + t * kMTile * cout_p + cv * kLanes;
      const int64_t pstride = cout_p;  // next position
      __m512 s[4][4];                           // [a][oh·2 + ow]
      for (int a = 0; a < 4; ++a) {
        __m512 q[4][2];
        for (int b = 0; b < 4; ++b) {
          const float* mb = m + (a * 16 + b * 4) * pstride;
          at4(_mm512_loadu_ps(mb), _mm512_loadu_ps(mb + pstride), _mm512_loadu_ps(mb + 2 * pstride),
              _mm512_loadu_ps(mb + 3 * pstride), q[b][0], q[b][1]);
        }
        for (int c = 0; c < 2; ++c) at4(q[0][c], q[1][c], q[2][c], q[3][c], s[a][c], s[a][2 + c]);
      }
      const __m512 bias = _mm512_loadu_ps(bias_p + cv * kLanes);
      float* y = Y + t * 8 * cout_p + cv * kLanes;
      for (int i = 0; i < 4; ++i) {
        __m512 o0, o1;
        at4(s[0][i], s[1][i], s[2][i], s[3][i], o0, o1);
        _mm512_storeu_ps(y + i * cout_p, _mm512_add_ps(o0, bias));
        _mm512_storeu_ps(y + (4 + i) * cout_p, _mm512_add_ps(o1, bias));
      }
    }
}

// Writes the task's outputs from Y into y (B, Cout, D, H, W): per output row, gathers of 16
// columns over the tiles, cropped at the borders.
__attribute__((noinline)) void scatter_output(const float* Y, int nt, int64_t cout, int64_t cout_p, const int64_t in[3], int64_t td, int64_t th,
                    int64_t j0, float* yb) {
  const int64_t D = in[0], H = in[1], W = in[2], plane = H * W, chan = D * plane;
  const int64_t w_begin = 2 * j0, n = std::min<int64_t>(2 * nt, W - w_begin);
  // Lane l of a 16-column vector is column l of the row: tile l/2, ow = l % 2.
  alignas(64) int32_t lane_idx[kLanes];
  for (int l = 0; l < kLanes; ++l) lane_idx[l] = int32_t(((l >> 1) * 8 + (l & 1)) * cout_p);
  const __m512i base = _mm512_load_si512(lane_idx);
  const int32_t second_half = int32_t(8 * 8 * cout_p);  // tiles 8.. for columns 16..
  for (int od = 0; od < 2; ++od) {
    const int64_t d = 2 * td + od;
    if (d >= D) break;
    for (int oh = 0; oh < 2; ++oh) {
      const int64_t h = 2 * th + oh;
      if (h >= H) break;
      const float* src = Y + (od * 4 + oh * 2) * cout_p;
      float* dst = yb + d * plane + h * W + w_begin;
      for (int64_t co = 0; co < cout; ++co, dst += chan) {
        for (int64_t c0 = 0; c0 < n; c0 += kLanes) {
          const int64_t left = n - c0;
          const __mmask16 m = left >= kLanes ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
          const __m512i vi = _mm512_add_epi32(base, _mm512_set1_epi32(int32_t(co) + (c0 ? second_half : 0)));
          const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, vi, src, 4);
          _mm512_mask_storeu_ps(dst + c0, m, v);
        }
      }
    }
  }
}

struct ThreadBuffers {
  std::vector<float> V, M, Y;
  float* get(std::vector<float>& b, size_t floats) {
    if (b.size() < floats + kLanes) b.resize(floats + kLanes);
    // 64-byte aligned start for the aligned stores of the input transform.
    const size_t mis = (reinterpret_cast<uintptr_t>(b.data()) / sizeof(float)) % kLanes;
    return b.data() + (kLanes - mis) % kLanes;
  }
};

// y (B, cout, D, H, W) = Winograd convolution of x (B, cin, D, H, W) with transformed weights U.
void winograd_conv(int64_t batch, int64_t cin, int64_t cout, int64_t cout_p, const int64_t in[3], const float* x,
                   const float* U, const float* bias_p, float* y) {
  const TileGrid g(in);
  const int64_t chan_in = in[0] * in[1] * in[2];
  const int64_t rows = batch * g.tD * g.tH;  // one parallel item: all tile blocks of a (b, td, th) row
  const double flops = 2.0 * double(batch) * double(cin) * double(cout) * 27.0 * double(chan_in);
  const int ncv = (cout_p / kLanes) % 2 == 0 ? 2 : 1;
  // Chunks of consecutive rows (th, th + 1, ...) on one thread, so that each task's prefetch of
  // the next task's input rows lands in the cache of the core that will read them.
  constexpr int64_t kRowsPerChunk = 8;
  const int64_t chunks = ceil_div(rows, kRowsPerChunk);
  auto process_row = [&](int64_t r, bool prefetch_next) {
    thread_local ThreadBuffers buf;
    float* V = buf.get(buf.V, size_t(cin * kVChannel));
    float* M = buf.get(buf.M, size_t(kMaxTiles * kMTile * cout_p));
    float* Y = buf.get(buf.Y, size_t(kLanes * 8 * cout_p));
    const int64_t b = r / (g.tD * g.tH), td = (r / g.tH) % g.tD, th = r % g.tH;
    prefetch_next = prefetch_next && th + 1 < g.tH;
    for (int64_t blk = 0; blk < g.blocks; ++blk) {
      const int64_t j0 = blk * g.per_block;
      const int nt = int(std::min(g.per_block, g.tW - j0));
      if (nt <= 0) break;
      transform_input(x + b * cin * chan_in, cin, in, td, th, j0, prefetch_next, V);
      if (ncv == 2) multiply_nt<2>(nt, V, U, cin, cout_p, M);
      else multiply_nt<1>(nt, V, U, cin, cout_p, M);
      transform_output(M, nt, cout_p, bias_p, Y);
      scatter_output(Y, nt, cout, cout_p, in, td, th, j0, y + b * cout * chan_in);
    }
  };
#pragma omp parallel for schedule(dynamic, 1) if (chunks > 1 && flops >= 4e6)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t r_end = std::min(rows, (chunk + 1) * kRowsPerChunk);
    for (int64_t r = chunk * kRowsPerChunk; r < r_end; ++r) process_row(r, r + 1 < r_end);
  }
}

// Transformed weights and padded bias of one call, kept on the calling thread between calls.
struct CallBuffers {
  std::vector<float> U, bias;
};

template <class Tap>
void run(const Conv3dShape& s, int64_t cin, int64_t cout, const float* x, Tap&& tap, const float* bias, float* y) {
  thread_local CallBuffers cb;
  const int64_t cout_p = ceil_div(cout, kLanes) * kLanes;
  cb.U.resize(size_t(kPositions * cin * cout_p));
  cb.bias.assign(size_t(cout_p), 0.f);
  if (bias) std::copy(bias, bias + cout, cb.bias.begin());
  transform_weights(cin, cout, cout_p, tap, cb.U.data());
  winograd_conv(s.batch, cin, cout, cout_p, s.in, x, cb.U.data(), cb.bias.data(), y);
}


// ---- Weight gradient ----------------------------------------------------------------------------
// dw[co][ci][k] = Σ_b Σ_o x[b][ci][o + k − 1] · dy[b][co][o] is, per 2×2×2 block of outputs o, the
// 1-D identity dw = Gᵀ[(A·dy) ⊙ (Bᵀ·x)] (the gradient of the forward's y = Aᵀ[(G·g) ⊙ (Bᵀ·x)]
// with respect to g) along each axis. So: the forward's input transform of x (Bᵀ), a transform of
// each dy tile (A, 2 → 4 per axis), products summed over all tiles in the 64 Winograd positions
// (a GEMM over tiles per position), and Gᵀ (4 → 3 per axis) once at the end.

// A = [[1, 0], [1, 1], [1, −1], [0, −1]] on two vectors.
inline void a2(__m512 v0, __m512 v1, __m512* o, int64_t ostride) {
  o[0] = v0;
  o[ostride] = _mm512_add_ps(v0, v1);
  o[2 * ostride] = _mm512_sub_ps(v0, v1);
  o[3 * ostride] = _mm512_sub_ps(_mm512_setzero_ps(), v1);
}

// Z[t][p][co] (co padded to cout_p with zeros) = A·A·A applied to tile t's 2×2×2 block of dy, for
// the nt tiles of a task. Output channels are in lanes: one gather of 16 channels per voxel
// (64·Cin multiply-adds per gathered vector follow, so the gathers cost little); voxels past
// the volume's end read as zero.
constexpr int64_t kZTileExtra = 1;  // spare position per tile, as for M
__attribute__((noinline)) void transform_grad_output(const float* dyb, int64_t cout, int64_t cout_p, const int64_t in[3],
                                                     int64_t td, int64_t th, int64_t j0, int nt, float* Z) {
  const int64_t D = in[0], H = in[1], W = in[2], plane = H * W, chan = D * plane;
  const int64_t ztile = (kPositions + kZTileExtra) * cout_p;
  alignas(64) int32_t lane_off[kLanes];
  for (int l = 0; l < kLanes; ++l) lane_off[l] = int32_t(l * chan);
  const __m512i idx = _mm512_load_si512(lane_off);
  for (int t = 0; t < nt; ++t) {
    const int64_t w0 = 2 * (j0 + t);
    for (int64_t cv = 0; cv < cout_p / kLanes; ++cv) {
      const int64_t left = cout - cv * kLanes;
      const __mmask16 cmask = left >= kLanes ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
      const float* base = dyb + cv * kLanes * chan;
      __m512 g[2][2][2];  // [od][oh][ow]
      for (int od = 0; od < 2; ++od)
        for (int oh = 0; oh < 2; ++oh)
          for (int ow = 0; ow < 2; ++ow) {
            const int64_t d = 2 * td + od, h = 2 * th + oh, w = w0 + ow;
            g[od][oh][ow] = (d < D && h < H && w < W)
                                ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), cmask, idx, base + d * plane + h * W + w, 4)
                                : _mm512_setzero_ps();
          }
      __m512 a[2][2][4], b[2][4][4], c[4][4][4];
      for (int od = 0; od < 2; ++od)
        for (int oh = 0; oh < 2; ++oh) a2(g[od][oh][0], g[od][oh][1], &a[od][oh][0], 1);
      for (int od = 0; od < 2; ++od)
        for (int kw = 0; kw < 4; ++kw) a2(a[od][0][kw], a[od][1][kw], &b[od][0][kw], 4);
      for (int kh = 0; kh < 4; ++kh)
        for (int kw = 0; kw < 4; ++kw) a2(b[0][kh][kw], b[1][kh][kw], &c[0][kh][kw], 16);
      float* z = Z + t * ztile + cv * kLanes;
      for (int p = 0; p < kPositions; ++p) _mm512_storeu_ps(z + p * cout_p, (&c[0][0][0])[p]);
    }
  }
}

// Wh[p][ci][co] += Σ_t V[ci][p][t] · Z[t][p][co] over the task's nt tiles: NCI × NCV accumulators
// (NCI input channels × NCV vectors of 16 output channels), V broadcast, Z loaded.
template <int NCI, int NCV>
inline void accumulate_block(const float* V, const float* Z, int nt, int64_t ztile, int64_t cout_p, int p, int64_t ci0,
                             int64_t cv0, float* Wh) {
  __m512 acc[NCI][NCV];
  float* w = Wh + ci0 * cout_p + cv0 * kLanes;  // Wh: this position's (ci, co) block
  for (int i = 0; i < NCI; ++i)
    for (int c = 0; c < NCV; ++c) acc[i][c] = _mm512_loadu_ps(w + i * cout_p + c * kLanes);
  const float* v = V + ci0 * kVChannel + p * kLanes;
  const float* z = Z + int64_t(p) * cout_p + cv0 * kLanes;
  for (int t = 0; t < nt; ++t, z += ztile) {
    __m512 zv[NCV];
    for (int c = 0; c < NCV; ++c) zv[c] = _mm512_loadu_ps(z + c * kLanes);
    for (int i = 0; i < NCI; ++i) {
      const __m512 b = _mm512_set1_ps(v[i * kVChannel + t]);
      for (int c = 0; c < NCV; ++c) acc[i][c] = _mm512_fmadd_ps(b, zv[c], acc[i][c]);
    }
  }
  for (int i = 0; i < NCI; ++i)
    for (int c = 0; c < NCV; ++c) _mm512_storeu_ps(w + i * cout_p + c * kLanes, acc[i][c]);
}

__attribute__((noinline)) void accumulate_products(const float* V, const float* Z, int nt, int64_t cin, int64_t cout_p,
                                                   float* Wh) {
  const int64_t ztile = (kPositions + kZTileExtra) * cout_p, cvecs = cout_p / kLanes;
  for (int p = 0; p < kPositions; ++p) {
    float* Whp = Wh + int64_t(p) * cin * cout_p;
    int64_t cv = 0;
    for (; cv + 2 <= cvecs; cv += 2) {
      int64_t ci = 0;
      for (; ci + 8 <= cin; ci += 8) accumulate_block<8, 2>(V, Z, nt, ztile, cout_p, p, ci, cv, Whp);
      for (; ci < cin; ++ci) accumulate_block<1, 2>(V, Z, nt, ztile, cout_p, p, ci, cv, Whp);
    }
    for (; cv < cvecs; ++cv) {
      int64_t ci = 0;
      for (; ci + 16 <= cin; ci += 16) accumulate_block<16, 1>(V, Z, nt, ztile, cout_p, p, ci, cv, Whp);
      for (; ci < cin; ++ci) accumulate_block<1, 1>(V, Z, nt, ztile, cout_p, p, ci, cv, Whp);
    }
  }
}

// dw (cout, cin, 27) = Gᵀ·Gᵀ·Gᵀ applied to Σ_chunk partial[chunk][p][ci][co]: the partials are
// first added element by element in chunk order, in double (contiguous, vectorised), then each
// (co, ci) pair is transformed. Gᵀ = [[1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1]].
void finish_weight_gradient(const float* partials, int64_t chunks, int64_t cin, int64_t cout, int64_t cout_p, float* dw) {
  const int64_t per_chunk = kPositions * cin * cout_p;
  thread_local std::vector<double> total;
  total.resize(size_t(per_chunk));
  double* const T = total.data();
#pragma omp parallel for schedule(static) if (per_chunk * chunks >= (int64_t(1) << 18))
  for (int64_t i0 = 0; i0 < per_chunk; i0 += 1024) {
    const int64_t i1 = std::min(per_chunk, i0 + 1024);
    for (int64_t i = i0; i < i1; ++i) T[i] = double(partials[i]);
    for (int64_t k = 1; k < chunks; ++k) {
      const float* pk = partials + k * per_chunk;
      for (int64_t i = i0; i < i1; ++i) T[i] += double(pk[i]);
    }
  }
  auto gt_row = [](const double* m, int64_t stride, double* o, int64_t ostride) {
    const double s = 0.5 * (m[stride] + m[2 * stride]);
    o[0] = m[0] + s;
    o[ostride] = 0.5 * (m[stride] - m[2 * stride]);
    o[2 * ostride] = s + m[3 * stride];
  };
  for (int64_t co = 0; co < cout; ++co)
    for (int64_t ci = 0; ci < cin; ++ci) {
      double m[4][4][4], a[4][4][3], b[4][3][3], c[3][3][3];
      for (int p = 0; p < kPositions; ++p) (&m[0][0][0])[p] = T[(p * cin + ci) * cout_p + co];
      for (int d = 0; d < 4; ++d)
        for (int h = 0; h < 4; ++h) gt_row(&m[d][h][0], 1, &a[d][h][0], 1);
      for (int d = 0; d < 4; ++d)
        for (int w = 0; w < 3; ++w) gt_row(&a[d][0][w], 3, &b[d][0][w], 3);
      for (int h = 0; h < 3; ++h)
        for (int w = 0; w < 3; ++w) gt_row(&b[0][h][w], 9, &c[0][h][w], 9);
      float* out = dw + (co * cin + ci) * 27;
      for (int t = 0; t < 27; ++t) out[t] = float((&c[0][0][0])[t]);
    }
}

void winograd_weight_gradient(const Conv3dShape& s, const float* x, const float* dy, float* dw) {
  const int64_t cin = s.in_channels, cout = s.out_channels, cout_p = ceil_div(cout, kLanes) * kLanes;
  const TileGrid g(s.in);
  const int64_t chan = s.in[0] * s.in[1] * s.in[2];
  const int64_t rows = s.batch * g.tD * g.tH;
  const double flops = 2.0 * double(s.batch) * double(cin) * double(cout) * 27.0 * double(chan);
  // Fixed chunks of tile rows, each summing into its own partial; the count depends on the shape
  // only (never the thread count), so the result is the same for any number of threads. Each
  // partial costs a zeroing and a pass of the final sum, so a chunk gets at least 64 tiles (the
  // GEMM then does ≥ 64× that work); at most 32 chunks and 64 MB of partials.
  const int64_t per_chunk = kPositions * cin * cout_p;
  const int64_t max_by_memory = std::max<int64_t>(1, (int64_t(64) << 20) / (per_chunk * int64_t(sizeof(float))));
  const int64_t chunks =
      std::max<int64_t>(1, std::min({ceil_div(rows * g.tW, 64), rows, int64_t(32), max_by_memory}));
  thread_local std::vector<float> partials;
  partials.assign(size_t(chunks * per_chunk), 0.f);
  float* const P = partials.data();
#pragma omp parallel for schedule(dynamic, 1) if (chunks > 1 && flops >= 4e6)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    thread_local ThreadBuffers buf;
    float* V = buf.get(buf.V, size_t(cin * kVChannel));
    float* Z = buf.get(buf.M, size_t(kMaxTiles * (kPositions + kZTileExtra) * cout_p));
    float* Wh = P + chunk * per_chunk;
    const int64_t r_begin = chunk * rows / chunks, r_end = (chunk + 1) * rows / chunks;
    for (int64_t r = r_begin; r < r_end; ++r) {
      const int64_t b = r / (g.tD * g.tH), td = (r / g.tH) % g.tD, th = r % g.tH;
      const bool prefetch_next = r + 1 < r_end && th + 1 < g.tH;
      for (int64_t blk = 0; blk < g.blocks; ++blk) {
        const int64_t j0 = blk * g.per_block;
        const int nt = int(std::min(g.per_block, g.tW - j0));
        if (nt <= 0) break;
        transform_input(x + b * cin * chan, cin, s.in, td, th, j0, prefetch_next, V);
        transform_grad_output(dy + b * cout * chan, cout, cout_p, s.in, td, th, j0, nt, Z);
        accumulate_products(V, Z, nt, cin, cout_p, Wh);
      }
    }
  }
  finish_weight_gradient(P, chunks, cin, cout, cout_p, dw);
}

#endif  // __AVX512F__

}  // namespace

bool conv3d_winograd_available() {
#ifdef __AVX512F__
  return true;
#else
  return false;
#endif
}

namespace {
std::atomic<bool>& winograd_switch() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("CPETS_CONV_WINOGRAD");
    return !(v && std::strcmp(v, "0") == 0);
  }()};
  return on;
}
}  // namespace

void conv3d_set_winograd_enabled(bool on) { winograd_switch().store(on); }
bool conv3d_winograd_enabled() { return winograd_switch().load(); }

bool conv3d_winograd_worthwhile(const Conv3dShape& s, int64_t cin, int64_t cout) {
  if (!conv3d_winograd_available() || !conv3d_winograd_supports(s)) return false;
  return cin >= 16 && cout >= 16 && s.in[0] >= 4 && s.in[1] >= 4 && s.in[2] >= 4;
}

bool conv3d_winograd_supports(const Conv3dShape& s) {
  if (s.batch < 1 || s.in_channels < 1 || s.out_channels < 1) return false;
  for (int a = 0; a < 3; ++a)
    if (s.kernel[a] != 3 || s.stride[a] != 1 || s.padding[a] != 1 || s.in[a] < 1) return false;
  return true;
}

void conv3d_winograd_forward(const Conv3dShape& s, const float* x, const float* w, const float* bias, float* y) {
  require_supported(s, "conv3d_winograd_forward");
#ifdef __AVX512F__
  const int64_t cin = s.in_channels;
  run(s, cin, s.out_channels, x, [&](int64_t co, int64_t ci, int t) { return w[(co * cin + ci) * 27 + t]; }, bias, y);
#else
  (void)x, (void)w, (void)bias, (void)y;
#endif
}

void conv3d_winograd_backward_weight(const Conv3dShape& s, const float* x, const float* dy, float* dw) {
  require_supported(s, "conv3d_winograd_backward_weight");
#ifdef __AVX512F__
  winograd_weight_gradient(s, x, dy, dw);
#else
  (void)x, (void)dy, (void)dw;
#endif
}

void conv3d_winograd_backward_data(const Conv3dShape& s, const float* dy, const float* w, float* dx) {
  require_supported(s, "conv3d_winograd_backward_data");
#ifdef __AVX512F__
  // dx = conv(dy, w'), w'[ci][co][t] = w[co][ci][26 − t]: channels swapped, taps flipped.
  const int64_t cin0 = s.in_channels;
  run(s, s.out_channels, cin0, dy,
      [&](int64_t n, int64_t m, int t) { return w[(m * cin0 + n) * 27 + (26 - t)]; }, nullptr, dx);
#else
  (void)dy, (void)w, (void)dx;
#endif
}

}  // namespace cpets::kernels::cpu
