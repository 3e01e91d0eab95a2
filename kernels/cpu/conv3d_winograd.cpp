#include "kernels/cpu/conv3d_winograd.h"
#include "kernels/cpu/static_count.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/simd.h"  // last: the level's target for the rest of the file

namespace cpets::kernels::cpu::CPETS_ISA_NS {
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
  if (!conv3d_winograd_supports(s))
    throw std::invalid_argument(std::string(who) +
                                ": only kernel 3x3x3, stride 1, padding 1 and positive sizes are supported, got " +
                                shape_text(s) + "; use the direct kernel (kernels/cpu/conv3d.h) for other shapes");
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr int kMaxTiles = 12;    // tiles along W per task: 12 × 2 output vectors fill the registers

// A tile is MT × MT × 2 outputs (D, H, W): F(MT, 3) along D and H, F(2, 3) along W. MT = 2 is
// F(2³, 3³): 4·4·4 = 64 positions per 8 outputs. MT = 4 uses F(4, 3) along D and H: 6·6·4 = 144
// positions per 32 outputs, 1.8× fewer multiplications and input rows per output, at the price
// of larger transform constants (a few times F(2, 3)'s rounding error, still of the order of the
// direct kernel's; see the tests). W stays F(2, 3) for both: its input transform is two loads and
// four lane permutations per row, which F(4, 3)'s stride-4 windows would not allow.
template <int MT>
struct Tiling {
  static constexpr int NI = MT + 2;                  // input rows per tile along D and H
  static constexpr int kPositions = NI * NI * 4;
  // The transformed input block is V[ci][p][16 tiles], channel by channel as the transform writes
  // it; one spare position per channel keeps the GEMM's reads of one position over the channels
  // (a 4 KiB stride otherwise) off a single L1 set.
  static constexpr int64_t kVChannel = (kPositions + 1) * kLanes;
  // The products are M[tile][p][co]: the output transform reads one tile's positions as one
  // contiguous run; a spare position per tile, again, spreads the GEMM's stores over L1 sets.
  static constexpr int64_t kMTile = kPositions + 1;
  static constexpr int kOutputs = MT * MT * 2;       // outputs per tile
};

// Tiles; a task is a row of at most kMaxTiles tiles along W.
struct TileGrid {
  int64_t tD, tH, tW, blocks, per_block;
  TileGrid(const int64_t in[3], int mt) {
    tD = ceil_div(in[0], mt);
    tH = ceil_div(in[1], mt);
    tW = ceil_div(in[2], 2);
    blocks = ceil_div(tW, kMaxTiles);
    per_block = ceil_div(tW, blocks);  // balanced blocks: 24 tiles → 12 + 12, not 12 + 12 + 0
  }
};

// The kernel transform along one axis, g (3 taps) → NI values, in double.
// F(2, 3): G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
// F(4, 3): G = [[¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙], [1/24, 1/12, ⅙], [1/24, −1/12, ⅙], [0, 0, 1]].
template <int NI>
void g_row(const double* v, int64_t stride, double* o, int64_t ostride) {
  const double g0 = v[0], g1 = v[stride], g2 = v[2 * stride];
  if constexpr (NI == 4) {
    o[0] = g0;
    o[ostride] = 0.5 * (g0 + g1 + g2);
    o[2 * ostride] = 0.5 * (g0 - g1 + g2);
    o[3 * ostride] = g2;
  } else {
    constexpr double k6 = 1.0 / 6, k12 = 1.0 / 12, k24 = 1.0 / 24;
    o[0] = 0.25 * g0;
    o[ostride] = -(g0 + g1 + g2) * k6;
    o[2 * ostride] = -(g0 - g1 + g2) * k6;
    o[3 * ostride] = g0 * k24 + g1 * k12 + g2 * k6;
    o[4 * ostride] = g0 * k24 - g1 * k12 + g2 * k6;
    o[5 * ostride] = g2;
  }
}

// U[p][ci][co] (co padded to cout_p with zeros) = G·g·Gᵀ along the three axes, in double, for the
// 3×3×3 kernel g(co, ci) read through `tap(co, ci, t)`, t = (kd·3 + kh)·3 + kw.
// Parallel over input channels (each owns its rows U[p][ci][·]): run serially it took ~4 % of a
// training step while the other thread waited.
template <int MT, class Tap>
void transform_weights(int64_t cin, int64_t cout, int64_t cout_p, Tap&& tap, float* U) {
  using T = Tiling<MT>;
  constexpr int NI = T::NI;
#pragma omp parallel for schedule(static) if (cin * cout >= 64)
  for (int64_t ci = 0; ci < cin; ++ci) {
    for (int p = 0; p < T::kPositions; ++p) {
      float* row = U + (p * cin + ci) * cout_p;
      std::fill(row + cout, row + cout_p, 0.f);
    }
    for (int64_t co = 0; co < cout; ++co) {
      double g[27], a[3][3][4], b[3][NI][4], c[NI][NI][4];
      for (int t = 0; t < 27; ++t) g[t] = double(tap(co, ci, t));
      for (int d = 0; d < 3; ++d)
        for (int h = 0; h < 3; ++h) g_row<4>(g + (d * 3 + h) * 3, 1, &a[d][h][0], 1);
      for (int d = 0; d < 3; ++d)
        for (int w = 0; w < 4; ++w) g_row<NI>(&a[d][0][w], 4, &b[d][0][w], 4);
      for (int h = 0; h < NI; ++h)
        for (int w = 0; w < 4; ++w) g_row<NI>(&b[0][h][w], NI * 4, &c[0][h][w], NI * 4);
      for (int p = 0; p < T::kPositions; ++p) U[(p * cin + ci) * cout_p + co] = float((&c[0][0][0])[p]);
    }
  }
}

// Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]] on four vectors, in place.
inline void bt4(F16& v0, F16& v1, F16& v2, F16& v3) {
  const F16 r0 = F16::sub(v0, v2), r1 = F16::add(v1, v2), r2 = F16::sub(v2, v1),
               r3 = F16::sub(v1, v3);
  v0 = r0;
  v1 = r1;
  v2 = r2;
  v3 = r3;
}

// F(4, 3)'s Bᵀ on six vectors, in place:
// [[4, 0, −5, 0, 1, 0], [0, −4, −4, 1, 1, 0], [0, 4, −4, −1, 1, 0],
//  [0, −2, −1, 2, 1, 0], [0, 2, −1, −2, 1, 0], [0, 4, 0, −5, 0, 1]].
inline void bt6(F16* v) {
  const F16 four = F16::bcast(4.f), five = F16::bcast(5.f), two = F16::bcast(2.f);
  const F16 x0 = v[0], x1 = v[1], x2 = v[2], x3 = v[3], x4 = v[4], x5 = v[5];
  const F16 a = F16::fnma(four, x2, x4);   // x4 − 4x2
  const F16 b = F16::fnma(four, x1, x3);   // x3 − 4x1
  const F16 c = F16::sub(x4, x2);            // x4 − x2
  const F16 d = F16::mul(two, F16::sub(x3, x1));  // 2(x3 − x1)
  v[0] = F16::add(F16::fma(four, x0, x4), F16::mul(F16::bcast(-5.f), x2));
  v[1] = F16::add(a, b);
  v[2] = F16::sub(a, b);
  v[3] = F16::add(c, d);
  v[4] = F16::sub(c, d);
  v[5] = F16::fnma(five, x3, F16::fma(four, x1, x5));
}

template <int NI>
inline void bt(F16* v) {
  if constexpr (NI == 4) bt4(v[0], v[1], v[2], v[3]);
  else bt6(v);
}

// One task's input tiles, all channels: V[ci][p][tile] (16 floats per (ci, p), tiles in lanes;
// lanes ≥ the task's tile count hold garbage that is never read). Tile j's W line is padded
// input w = 2(j0 + j) − 1 + k, k = 0..3: two masked loads of 16 floats per row, split into
// even and odd columns (deinterleave4), give all four k as vectors over the tiles.

// With `prefetch_next`, it also asks for the new input rows per (channel, plane) that the task
// at th + 1 will read: rows MT H positions apart and a channel plane (590 KB at 48×64×48)
// apart, a pattern the hardware prefetchers do not follow. perf showed the row loads as the hot
// spot of the transform; the prefetch gained 0–7 % (noisy machine).
template <int MT>
__attribute__((noinline)) void transform_input(const float* xb, int64_t cin, const int64_t in[3], int64_t td, int64_t th,
                                               int64_t j0, bool prefetch_next, float* V) {
  using T = Tiling<MT>;
  constexpr int NI = T::NI;
  const int64_t D = in[0], H = in[1], W = in[2], plane = H * W, chan = D * plane;
  const int64_t w0 = 2 * j0 - 1;
  const F16::Mask mA = F16::mask_bits(window_bits(w0, W)), mB = F16::mask_bits(window_bits(w0 + kLanes, W));
  bool row_ok[NI][NI], prefetch[NI][NI];
  int64_t row_off[NI][NI];
  for (int dd = 0; dd < NI; ++dd)
    for (int hh = 0; hh < NI; ++hh) {
      const int64_t d = MT * td - 1 + dd, h = MT * th - 1 + hh;
      row_ok[dd][hh] = d >= 0 && d < D && h >= 0 && h < H;
      row_off[dd][hh] = row_ok[dd][hh] ? d * plane + h * W + w0 : 0;
      // The next task's rows are these moved MT down; the last MT of them are new.
      prefetch[dd][hh] = prefetch_next && row_ok[dd][hh] && hh >= NI - MT && h + MT < H;
    }
  auto prefetch_row = [](const float* p) {
    __builtin_prefetch(p, 0, 2);
    __builtin_prefetch(p + 16, 0, 2);
    __builtin_prefetch(p + 31, 0, 2);
  };
  alignas(64) float tmp[NI][NI * 4][kLanes];  // [dd][hh'·4 + k'] after the W and H transforms
  for (int64_t ci = 0; ci < cin; ++ci) {
    const float* xc = xb + ci * chan;
    for (int dd = 0; dd < NI; ++dd) {
      F16 r[4][NI];  // [k][hh]
      for (int hh = 0; hh < NI; ++hh) {
        if (!row_ok[dd][hh]) {
          for (int k = 0; k < 4; ++k) r[k][hh] = F16::zero();
          continue;
        }
        const float* row = xc + row_off[dd][hh];
        if (prefetch[dd][hh]) prefetch_row(row + MT * W);
        const F16 a = F16::load_m(row, mA), b = F16::load_m(row + kLanes, mB);
        F16 k0, k1, k2, k3;
        deinterleave4(a, b, k0, k1, k2, k3);
        bt4(k0, k1, k2, k3);
        r[0][hh] = k0;
        r[1][hh] = k1;
        r[2][hh] = k2;
        r[3][hh] = k3;
      }
      for (int k = 0; k < 4; ++k) {
        bt<NI>(r[k]);
        for (int hh = 0; hh < NI; ++hh) store(tmp[dd][hh * 4 + k], r[k][hh]);
      }
    }
    float* Vc = V + ci * T::kVChannel;
    for (int i = 0; i < NI * 4; ++i) {
      F16 v[NI];
      for (int dd = 0; dd < NI; ++dd) v[dd] = F16::load(tmp[dd][i]);
      bt<NI>(v);
      for (int dd = 0; dd < NI; ++dd) store(Vc + (dd * NI * 4 + i) * kLanes, v[dd]);
    }
  }
}

// M[tile][p][co] = Σ_ci V[ci][p][tile] · U[p][ci][co] for NT tiles: NT × NCV accumulators of
// 16 output channels, one U load per channel vector and one broadcast per tile.
template <int MT, int NT, int NCV>
__attribute__((noinline)) void multiply(const float* V, const float* U, int64_t cin, int64_t cout_p, float* M) {
  using T = Tiling<MT>;
  const int64_t cvecs = cout_p / kLanes;
  for (int p = 0; p < T::kPositions; ++p) {
    const float* Vp = V + p * kLanes;
    const float* Up = U + p * cin * cout_p;
    float* Mp = M + p * cout_p;
    for (int64_t cv = 0; cv < cvecs; cv += NCV) {
      F16 acc[NT][NCV];
      for (int t = 0; t < NT; ++t)
        for (int c = 0; c < NCV; ++c) acc[t][c] = F16::zero();
      const float* u = Up + cv * kLanes;
      const float* v = Vp;
      for (int64_t ci = 0; ci < cin; ++ci, u += cout_p, v += T::kVChannel) {
        F16 uv[NCV];
        for (int c = 0; c < NCV; ++c) uv[c] = F16::load(u + c * kLanes);
        for (int t = 0; t < NT; ++t) {
          const F16 b = F16::bcast(v[t]);
          for (int c = 0; c < NCV; ++c) acc[t][c] = F16::fma(b, uv[c], acc[t][c]);
        }
      }
      for (int t = 0; t < NT; ++t)
        for (int c = 0; c < NCV; ++c) store(Mp + t * T::kMTile * cout_p + (cv + c) * kLanes, acc[t][c]);
    }
  }
}

// AVX2 (16 registers, two per F16): groups of at most 6 tiles × 1 channel vector (12 + 2 + 1
// registers); AVX-512 and portable: all tiles × NCV at once.
constexpr int kTilesPerMultiply = kNarrowRegisters ? 6 : kMaxTiles;

template <int MT, int NCV>
void multiply_nt(int nt, const float* V, const float* U, int64_t cin, int64_t cout_p, float* M) {
  for (int t0 = 0; t0 < nt; t0 += kTilesPerMultiply)
    with_static_count<kTilesPerMultiply>(nt - t0, [&](auto t) {
      multiply<MT, decltype(t)::value, NCV>(V + t0, U, cin, cout_p, M + t0 * Tiling<MT>::kMTile * cout_p);
    });
}

// Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]] on four vectors.
inline void at4(F16 v0, F16 v1, F16 v2, F16 v3, F16& o0, F16& o1) {
  const F16 s = F16::add(v1, v2);
  o0 = F16::add(v0, s);
  o1 = F16::sub(F16::sub(v1, v2), v3);
}

// Aᵀ along D or H: NI vectors → MT. F(2, 3): as at4. F(4, 3):
// [[1, 1, 1, 1, 1, 0], [0, 1, −1, 2, −2, 0], [0, 1, 1, 4, 4, 0], [0, 1, −1, 8, −8, 1]].
template <int NI>
inline void at(const F16* m, F16* o) {
  if constexpr (NI == 4) {
    at4(m[0], m[1], m[2], m[3], o[0], o[1]);
  } else {
    const F16 s12 = F16::add(m[1], m[2]), d12 = F16::sub(m[1], m[2]);
    const F16 s34 = F16::add(m[3], m[4]), d34 = F16::sub(m[3], m[4]);
    o[0] = F16::add(F16::add(m[0], s12), s34);
    o[1] = F16::fma(F16::bcast(2.f), d34, d12);
    o[2] = F16::fma(F16::bcast(4.f), s34, s12);
    o[3] = F16::add(F16::fma(F16::bcast(8.f), d34, d12), m[5]);
  }
}

// Y[tile][(od·MT + oh)·2 + ow][co] = bias + Aᵀ M[tile][·][co] A along the three axes.
template <int MT>
__attribute__((noinline)) void transform_output(const float* M, int nt, int64_t cout_p, const float* bias_p, float* Y) {
  using T = Tiling<MT>;
  constexpr int NI = T::NI;
  const int64_t cvecs = cout_p / kLanes;
  for (int t = 0; t < nt; ++t)
    for (int64_t cv = 0; cv < cvecs; ++cv) {
      const float* m = M + t * T::kMTile * cout_p + cv * kLanes;
      const int64_t pstride = cout_p;  // next position
      F16 s[MT * 2][NI];            // [oh·2 + ow][a]: after the W and H transforms
      for (int a = 0; a < NI; ++a) {
        F16 q[2][NI];  // [ow][b]
        for (int b = 0; b < NI; ++b) {
          const float* mb = m + (a * NI + b) * 4 * pstride;
          at4(F16::load(mb), F16::load(mb + pstride), F16::load(mb + 2 * pstride),
              F16::load(mb + 3 * pstride), q[0][b], q[1][b]);
        }
        for (int c = 0; c < 2; ++c) {
          F16 o[MT];
          at<NI>(q[c], o);
          for (int oh = 0; oh < MT; ++oh) s[oh * 2 + c][a] = o[oh];
        }
      }
      const F16 bias = F16::load(bias_p + cv * kLanes);
      float* y = Y + t * T::kOutputs * cout_p + cv * kLanes;
      for (int i = 0; i < MT * 2; ++i) {
        F16 o[MT];
        at<NI>(s[i], o);
        for (int od = 0; od < MT; ++od) store(y + (od * MT * 2 + i) * cout_p, F16::add(o[od], bias));
      }
    }
}

// Writes the task's outputs from Y into y (B, Cout, D, H, W), cropped at the borders. Per output
// row and 16 channels, 8 tiles × 2 columns of Y (vectors over channels) are transposed into 16
// rows of 16 consecutive columns: 64 shuffles and 16 plain stores, where gathers of the columns
// took about twice as long.
template <int MT>
__attribute__((noinline)) void scatter_output(const float* Y, int nt, int64_t cout, int64_t cout_p, const int64_t in[3],
                                              int64_t td, int64_t th, int64_t j0, float* yb) {
  using T = Tiling<MT>;
  const int64_t D = in[0], H = in[1], W = in[2], plane = H * W, chan = D * plane;
  const int64_t w_begin = 2 * j0, n = std::min<int64_t>(2 * nt, W - w_begin);
  const int64_t tile_stride = T::kOutputs * cout_p;
  for (int od = 0; od < MT; ++od) {
    const int64_t d = MT * td + od;
    if (d >= D) break;
    for (int oh = 0; oh < MT; ++oh) {
      const int64_t h = MT * th + oh;
      if (h >= H) break;
      const float* src = Y + (od * MT + oh) * 2 * cout_p;
      float* dst = yb + d * plane + h * W + w_begin;
      for (int64_t c0 = 0; c0 < n; c0 += kLanes) {
        const int t0 = int(c0 / 2), tiles = std::min(8, nt - t0);
        const int64_t left = n - c0;
        const F16::Mask m = F16::mask(left);
        for (int64_t cv = 0; cv < cout_p / kLanes; ++cv) {
          F16 r[16];
          for (int tt = 0; tt < 8; ++tt)
            for (int ow = 0; ow < 2; ++ow)
              r[2 * tt + ow] = tt < tiles ? F16::load(src + (t0 + tt) * tile_stride + ow * cout_p + cv * kLanes)
                                          : F16::zero();
          transpose16(r);
          const int channels = int(std::min<int64_t>(kLanes, cout - cv * kLanes));
          for (int c = 0; c < channels; ++c) store_m(dst + (cv * kLanes + c) * chan + c0, m, r[c]);
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
template <int MT>
void winograd_conv(int64_t batch, int64_t cin, int64_t cout, int64_t cout_p, const int64_t in[3], const float* x,
                   const float* U, const float* bias_p, float* y) {
  using T = Tiling<MT>;
  const TileGrid g(in, MT);
  const int64_t chan_in = in[0] * in[1] * in[2];
  const int64_t rows = batch * g.tD * g.tH;  // one parallel item: all tile blocks of a (b, td, th) row
  const double flops = 2.0 * double(batch) * double(cin) * double(cout) * 27.0 * double(chan_in);
  const int ncv = (cout_p / kLanes) % 2 == 0 && !kNarrowRegisters ? 2 : 1;
  // Chunks of consecutive rows (th, th + 1, ...) on one thread, so that each task's prefetch of
  // the next task's input rows lands in the cache of the core that will read them.
  const int64_t rows_per_chunk = 16 / MT;
  const int64_t chunks = ceil_div(rows, rows_per_chunk);
  auto process_row = [&](int64_t r, bool prefetch_next) {
    thread_local ThreadBuffers buf;
    float* V = buf.get(buf.V, size_t(cin * T::kVChannel));
    float* M = buf.get(buf.M, size_t(kMaxTiles * T::kMTile * cout_p));
    float* Y = buf.get(buf.Y, size_t(kLanes * T::kOutputs * cout_p));
    const int64_t b = r / (g.tD * g.tH), td = (r / g.tH) % g.tD, th = r % g.tH;
    prefetch_next = prefetch_next && th + 1 < g.tH;
    for (int64_t blk = 0; blk < g.blocks; ++blk) {
      const int64_t j0 = blk * g.per_block;
      const int nt = int(std::min(g.per_block, g.tW - j0));
      if (nt <= 0) break;
      transform_input<MT>(x + b * cin * chan_in, cin, in, td, th, j0, prefetch_next, V);
      if (ncv == 2) multiply_nt<MT, 2>(nt, V, U, cin, cout_p, M);
      else multiply_nt<MT, 1>(nt, V, U, cin, cout_p, M);
      transform_output<MT>(M, nt, cout_p, bias_p, Y);
      scatter_output<MT>(Y, nt, cout, cout_p, in, td, th, j0, y + b * cout * chan_in);
    }
  };
  // Static: each thread takes one contiguous run of rows (whole (b, td) slabs in th order), so
  // the input planes a slab shares with the next stay in that core's L2 (measured 3–5 % faster
  // per training step than handing out chunks dynamically).
#pragma omp parallel for schedule(static) if (chunks > 1 && flops >= 4e6)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t r_end = std::min(rows, (chunk + 1) * rows_per_chunk);
    for (int64_t r = chunk * rows_per_chunk; r < r_end; ++r) process_row(r, r + 1 < r_end);
  }
}

// Transformed weights and padded bias of one call, kept on the calling thread between calls.
struct CallBuffers {
  std::vector<float> U, bias;
};

template <int MT, class Tap>
void run_tiled(const Conv3dShape& s, int64_t cin, int64_t cout, const float* x, Tap&& tap, const float* bias, float* y) {
  thread_local CallBuffers cb;
  const int64_t cout_p = ceil_div(cout, kLanes) * kLanes;
  cb.U.resize(size_t(Tiling<MT>::kPositions * cin * cout_p));
  cb.bias.assign(size_t(cout_p), 0.f);
  if (bias) std::copy(bias, bias + cout, cb.bias.begin());
  transform_weights<MT>(cin, cout, cout_p, tap, cb.U.data());
  winograd_conv<MT>(s.batch, cin, cout, cout_p, s.in, x, cb.U.data(), cb.bias.data(), y);
}

template <class Tap>
void run(const Conv3dShape& s, int64_t cin, int64_t cout, const float* x, Tap&& tap, const float* bias, float* y) {
  if (conv3d_winograd_tile_rows(s.in) == 4) return run_tiled<4>(s, cin, cout, x, tap, bias, y);
  run_tiled<2>(s, cin, cout, x, tap, bias, y);
}


// ---- Weight gradient ----------------------------------------------------------------------------
// dw[co][ci][k] = Σ_b Σ_o x[b][ci][o + k − 1] · dy[b][co][o] is, per tile of outputs o, the 1-D
// identity dw = Gᵀ[(A·dy) ⊙ (Bᵀ·x)] (the gradient of the forward's y = Aᵀ[(G·g) ⊙ (Bᵀ·x)] with
// respect to g) along each axis. So: the forward's input transform of x (Bᵀ), a transform of
// each dy tile (A: 2 → 4 along W, MT → NI along D and H), products summed over all tiles in each
// Winograd position (a GEMM over tiles per position), and Gᵀ (NI → 3) once at the end.

// F(2, 3)'s A = [[1, 0], [1, 1], [1, −1], [0, −1]] on two vectors.
inline void a2(F16 v0, F16 v1, F16* o, int64_t ostride) {
  o[0] = v0;
  o[ostride] = F16::add(v0, v1);
  o[2 * ostride] = F16::sub(v0, v1);
  o[3 * ostride] = F16::sub(F16::zero(), v1);
}

// A along D or H: MT vectors → NI. F(2, 3): a2. F(4, 3): A = (Aᵀ)ᵀ of `at`,
// [[1, 0, 0, 0], [1, 1, 1, 1], [1, −1, 1, −1], [1, 2, 4, 8], [1, −2, 4, −8], [0, 0, 0, 1]].
template <int MT>
inline void a_col(const F16* y, F16* o, int64_t ostride) {
  if constexpr (MT == 2) {
    a2(y[0], y[1], o, ostride);
  } else {
    const F16 e = F16::add(y[0], y[2]), f = F16::add(y[1], y[3]);
    const F16 e4 = F16::fma(F16::bcast(4.f), y[2], y[0]);
    const F16 f4 = F16::mul(F16::bcast(2.f), F16::fma(F16::bcast(4.f), y[3], y[1]));
    o[0] = y[0];
    o[ostride] = F16::add(e, f);
    o[2 * ostride] = F16::sub(e, f);
    o[3 * ostride] = F16::add(e4, f4);
    o[4 * ostride] = F16::sub(e4, f4);
    o[5 * ostride] = y[3];
  }
}

// Z[t][p][co] (co padded to cout_p with zeros) = A·A·A applied to tile t's MT × MT × 2 block of
// dy, for the nt tiles of a task. Output channels are in lanes: one gather of 16 channels per
// voxel (NI·NI·4·Cin / (MT·MT·2) multiply-adds per gathered vector follow, so the gathers cost
// little); voxels past the volume's end read as zero.
template <int MT>
__attribute__((noinline)) void transform_grad_output(const float* dyb, int64_t cout, int64_t cout_p, const int64_t in[3],
                                                     int64_t td, int64_t th, int64_t j0, int nt, float* Z) {
  using T = Tiling<MT>;
  constexpr int NI = T::NI;
  const int64_t D = in[0], H = in[1], W = in[2], plane = H * W, chan = D * plane;
  const int64_t ztile = T::kMTile * cout_p;
  alignas(64) int32_t lane_off[kLanes];
  for (int l = 0; l < kLanes; ++l) lane_off[l] = int32_t(l * chan);
  for (int t = 0; t < nt; ++t) {
    const int64_t w0 = 2 * (j0 + t);
    for (int64_t cv = 0; cv < cout_p / kLanes; ++cv) {
      const int64_t left = cout - cv * kLanes;
      const F16::Mask cmask = F16::mask(left);
      const float* base = dyb + cv * kLanes * chan;
      F16 a[MT][MT][4];  // [od][oh][kw]
      for (int od = 0; od < MT; ++od)
        for (int oh = 0; oh < MT; ++oh) {
          F16 g[2];
          for (int ow = 0; ow < 2; ++ow) {
            const int64_t d = MT * td + od, h = MT * th + oh, w = w0 + ow;
            g[ow] = (d < D && h < H && w < W)
                        ? F16::gather_m(base + d * plane + h * W + w, lane_off, cmask)
                        : F16::zero();
          }
          a2(g[0], g[1], &a[od][oh][0], 1);
        }
      F16 b[MT][NI][4], c[NI][NI][4];
      for (int od = 0; od < MT; ++od)
        for (int kw = 0; kw < 4; ++kw) {
          F16 col[MT];
          for (int oh = 0; oh < MT; ++oh) col[oh] = a[od][oh][kw];
          a_col<MT>(col, &b[od][0][kw], 4);
        }
      for (int kh = 0; kh < NI; ++kh)
        for (int kw = 0; kw < 4; ++kw) {
          F16 col[MT];
          for (int od = 0; od < MT; ++od) col[od] = b[od][kh][kw];
          a_col<MT>(col, &c[0][kh][kw], NI * 4);
        }
      float* z = Z + t * ztile + cv * kLanes;
      for (int p = 0; p < T::kPositions; ++p) store(z + p * cout_p, (&c[0][0][0])[p]);
    }
  }
}

// The transformed tiles of up to kSegments tasks, summed into Wh (float) in one sweep: the
// accumulators are loaded and stored once per sweep, so more tiles per sweep means fewer of
// those (at 12 tiles, a third of the time went to them). Every kSweepsPerFlush sweeps, Wh is
// added to the chunk's partial in double and cleared: a chunk sums hundreds of tiles, and in
// float all the way that cost up to 30× the direct kernel's error (in double all the way, the
// accumulators' traffic made the 32-channel shapes 25 % slower).
constexpr int kSegments = 2;
struct Segments {
  const float* V[kSegments];
  const float* Z[kSegments];
  int nt[kSegments];
  int count = 0;
};
constexpr int kSweepsPerFlush = 4;

// Wh[p][ci][co] += Σ_t V[ci][p][t] · Z[t][p][co] over the segments' tiles: NCI × NCV accumulators
// (NCI input channels × NCV vectors of 16 output channels), V broadcast, Z loaded.
template <int MT, int NCI, int NCV>
inline void accumulate_block(const Segments& sg, int64_t cout_p, int p, int64_t ci0, int64_t cv0, float* Wh) {
  using T = Tiling<MT>;
  F16 acc[NCI][NCV];
  float* w = Wh + ci0 * cout_p + cv0 * kLanes;  // Wh: this position's (ci, co) block
  for (int i = 0; i < NCI; ++i)
    for (int c = 0; c < NCV; ++c) acc[i][c] = F16::load(w + i * cout_p + c * kLanes);
  for (int k = 0; k < sg.count; ++k) {
    const float* v = sg.V[k] + ci0 * T::kVChannel + p * kLanes;
    const float* z = sg.Z[k] + int64_t(p) * cout_p + cv0 * kLanes;
    for (int t = 0; t < sg.nt[k]; ++t, z += T::kMTile * cout_p) {
      F16 zv[NCV];
      for (int c = 0; c < NCV; ++c) zv[c] = F16::load(z + c * kLanes);
      for (int i = 0; i < NCI; ++i) {
        const F16 b = F16::bcast(v[i * T::kVChannel + t]);
        for (int c = 0; c < NCV; ++c) acc[i][c] = F16::fma(b, zv[c], acc[i][c]);
      }
    }
  }
  for (int i = 0; i < NCI; ++i)
    for (int c = 0; c < NCV; ++c) store(w + i * cout_p + c * kLanes, acc[i][c]);
}

template <int MT>
__attribute__((noinline)) void accumulate_products(const Segments& sg, int64_t cin, int64_t cout_p, float* Wh) {
  const int64_t cvecs = cout_p / kLanes;
  for (int p = 0; p < Tiling<MT>::kPositions; ++p) {
    float* Whp = Wh + int64_t(p) * cin * cout_p;
    int64_t cv = 0;
    // AVX2: 6 input channels × 1 channel vector (12 + 2 + 1 registers) only.
    if constexpr (kNarrowRegisters) {
      for (; cv < cvecs; ++cv) {
        int64_t ci = 0;
        for (; ci + 6 <= cin; ci += 6) accumulate_block<MT, 6, 1>(sg, cout_p, p, ci, cv, Whp);
        for (; ci < cin; ++ci) accumulate_block<MT, 1, 1>(sg, cout_p, p, ci, cv, Whp);
      }
    }
    for (; cv + 2 <= cvecs; cv += 2) {
      int64_t ci = 0;
      for (; ci + 8 <= cin; ci += 8) accumulate_block<MT, 8, 2>(sg, cout_p, p, ci, cv, Whp);
      for (; ci < cin; ++ci) accumulate_block<MT, 1, 2>(sg, cout_p, p, ci, cv, Whp);
    }
    for (; cv < cvecs; ++cv) {
      int64_t ci = 0;
      for (; ci + 16 <= cin; ci += 16) accumulate_block<MT, 16, 1>(sg, cout_p, p, ci, cv, Whp);
      for (; ci < cin; ++ci) accumulate_block<MT, 1, 1>(sg, cout_p, p, ci, cv, Whp);
    }
  }
}

// Gᵀ along one axis, NI values → 3 taps, in double. F(2, 3): [[1, ½, ½, 0], [0, ½, −½, 0],
// [0, ½, ½, 1]]. F(4, 3): the transpose of g_row<6>'s G.
template <int NI>
void gt_row(const double* m, int64_t stride, double* o, int64_t ostride) {
  if constexpr (NI == 4) {
    const double s = 0.5 * (m[stride] + m[2 * stride]);
    o[0] = m[0] + s;
    o[ostride] = 0.5 * (m[stride] - m[2 * stride]);
    o[2 * ostride] = s + m[3 * stride];
  } else {
    const double m0 = m[0], m1 = m[stride], m2 = m[2 * stride], m3 = m[3 * stride], m4 = m[4 * stride],
                 m5 = m[5 * stride];
    constexpr double k6 = 1.0 / 6, k12 = 1.0 / 12, k24 = 1.0 / 24;
    o[0] = 0.25 * m0 - (m1 + m2) * k6 + (m3 + m4) * k24;
    o[ostride] = (m2 - m1) * k6 + (m3 - m4) * k12;
    o[2 * ostride] = (m3 + m4 - m1 - m2) * k6 + m5;
  }
}

// dw (cout, cin, 27) = Gᵀ·Gᵀ·Gᵀ applied to Σ_chunk partial[chunk][p][ci][co]: the partials are
// first added element by element in chunk order (contiguous, vectorised), then each (co, ci)
// pair is transformed, all in double.
template <int MT>
void finish_weight_gradient(const double* partials, int64_t chunks, int64_t cin, int64_t cout, int64_t cout_p,
                            float* dw) {
  constexpr int NI = Tiling<MT>::NI;
  const int64_t per_chunk = Tiling<MT>::kPositions * cin * cout_p;
  thread_local std::vector<double> total;
  total.resize(size_t(per_chunk));
  double* const T = total.data();
#pragma omp parallel for schedule(static) if (per_chunk * chunks >= (int64_t(1) << 18))
  for (int64_t i0 = 0; i0 < per_chunk; i0 += 1024) {
    const int64_t i1 = std::min(per_chunk, i0 + 1024);
    for (int64_t i = i0; i < i1; ++i) T[i] = partials[i];
    for (int64_t k = 1; k < chunks; ++k) {
      const double* pk = partials + k * per_chunk;
      for (int64_t i = i0; i < i1; ++i) T[i] += pk[i];
    }
  }
#pragma omp parallel for schedule(static) if (cin * cout >= 64)
  for (int64_t co = 0; co < cout; ++co)
    for (int64_t ci = 0; ci < cin; ++ci) {
      double m[NI][NI][4], a[NI][NI][3], b[NI][3][3], c[3][3][3];
      for (int p = 0; p < Tiling<MT>::kPositions; ++p) (&m[0][0][0])[p] = T[(p * cin + ci) * cout_p + co];
      for (int d = 0; d < NI; ++d)
        for (int h = 0; h < NI; ++h) gt_row<4>(&m[d][h][0], 1, &a[d][h][0], 1);
      for (int d = 0; d < NI; ++d)
        for (int w = 0; w < 3; ++w) gt_row<NI>(&a[d][0][w], 3, &b[d][0][w], 3);
      for (int h = 0; h < 3; ++h)
        for (int w = 0; w < 3; ++w) gt_row<NI>(&b[0][h][w], 9, &c[0][h][w], 9);
      float* out = dw + (co * cin + ci) * 27;
      for (int t = 0; t < 27; ++t) out[t] = float((&c[0][0][0])[t]);
    }
}

template <int MT>
void winograd_weight_gradient(const Conv3dShape& s, const float* x, const float* dy, float* dw) {
  using T = Tiling<MT>;
  const int64_t cin = s.in_channels, cout = s.out_channels, cout_p = ceil_div(cout, kLanes) * kLanes;
  const TileGrid g(s.in, MT);
  const int64_t chan = s.in[0] * s.in[1] * s.in[2];
  const int64_t rows = s.batch * g.tD * g.tH;
  const double flops = 2.0 * double(s.batch) * double(cin) * double(cout) * 27.0 * double(chan);
  // Fixed chunks of tile rows, each summing into its own partial (double); the count depends on
  // the shape only (never the thread count), so the result is the same for any number of
  // threads. Each partial costs a zeroing and a pass of the final sum, one memory access per
  // element against one multiply-add per element and tile for the GEMM, so a chunk gets at
  // least 128 tiles; at most 16 chunks and 32 MB of partials, and a multiple of 4 from 4 up
  // (even shares for 2 or 4 threads).
  const int64_t per_chunk = T::kPositions * cin * cout_p;
  const int64_t max_by_memory = std::max<int64_t>(1, (int64_t(32) << 20) / (per_chunk * int64_t(sizeof(double))));
  int64_t chunks = std::max<int64_t>(1, std::min({ceil_div(rows * g.tW, 128), rows, int64_t(16), max_by_memory}));
  if (chunks > 4) chunks -= chunks % 4;
  thread_local std::vector<double> partials;
  if (partials.size() < size_t(chunks * per_chunk)) partials.resize(size_t(chunks * per_chunk));
  double* const P = partials.data();
#pragma omp parallel for schedule(dynamic, 1) if (chunks > 1 && flops >= 4e6)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    thread_local ThreadBuffers buf[kSegments];
    thread_local std::vector<float> wh_buf;
    wh_buf.assign(size_t(per_chunk), 0.f);
    float* const Wh = wh_buf.data();
    double* const Pc = P + chunk * per_chunk;
    std::fill(Pc, Pc + per_chunk, 0.0);
    int sweeps = 0;
    auto flush = [&] {
      for (int64_t i = 0; i < per_chunk; ++i) Pc[i] += double(Wh[i]);
      std::fill(Wh, Wh + per_chunk, 0.f);
      sweeps = 0;
    };
    Segments sg;
    const int64_t r_begin = chunk * rows / chunks, r_end = (chunk + 1) * rows / chunks;
    for (int64_t r = r_begin; r < r_end; ++r) {
      const int64_t b = r / (g.tD * g.tH), td = (r / g.tH) % g.tD, th = r % g.tH;
      const bool prefetch_next = r + 1 < r_end && th + 1 < g.tH;
      for (int64_t blk = 0; blk < g.blocks; ++blk) {
        const int64_t j0 = blk * g.per_block;
        const int nt = int(std::min(g.per_block, g.tW - j0));
        if (nt <= 0) break;
        const int k = sg.count++;
        float* V = buf[k].get(buf[k].V, size_t(cin * T::kVChannel));
        float* Z = buf[k].get(buf[k].M, size_t(kMaxTiles * T::kMTile * cout_p));
        transform_input<MT>(x + b * cin * chan, cin, s.in, td, th, j0, prefetch_next, V);
        transform_grad_output<MT>(dy + b * cout * chan, cout, cout_p, s.in, td, th, j0, nt, Z);
        sg.V[k] = V;
        sg.Z[k] = Z;
        sg.nt[k] = nt;
        if (sg.count == kSegments) {
          accumulate_products<MT>(sg, cin, cout_p, Wh);
          sg.count = 0;
          if (++sweeps == kSweepsPerFlush) flush();
        }
      }
    }
    if (sg.count > 0) accumulate_products<MT>(sg, cin, cout_p, Wh);
    flush();
  }
  finish_weight_gradient<MT>(P, chunks, cin, cout, cout_p, dw);
}

void weight_gradient(const Conv3dShape& s, const float* x, const float* dy, float* dw) {
  if (conv3d_winograd_tile_rows(s.in) == 4) return winograd_weight_gradient<4>(s, x, dy, dw);
  winograd_weight_gradient<2>(s, x, dy, dw);
}

}  // namespace

void conv3d_winograd_forward(const Conv3dShape& s, const float* x, const float* w, const float* bias, float* y) {
  require_supported(s, "conv3d_winograd_forward");
  const int64_t cin = s.in_channels;
  run(s, cin, s.out_channels, x, [&](int64_t co, int64_t ci, int t) { return w[(co * cin + ci) * 27 + t]; }, bias, y);
}

void conv3d_winograd_backward_weight(const Conv3dShape& s, const float* x, const float* dy, float* dw) {
  require_supported(s, "conv3d_winograd_backward_weight");
  weight_gradient(s, x, dy, dw);
}

void conv3d_winograd_backward_data(const Conv3dShape& s, const float* dy, const float* w, float* dx) {
  require_supported(s, "conv3d_winograd_backward_data");
  // dx = conv(dy, w'), w'[ci][co][t] = w[co][ci][26 − t]: channels swapped, taps flipped.
  const int64_t cin0 = s.in_channels;
  run(s, s.out_channels, cin0, dy,
      [&](int64_t n, int64_t m, int t) { return w[(m * cin0 + n) * 27 + (26 - t)]; }, nullptr, dx);
}

}  // namespace cpets::kernels::cpu::CPETS_ISA_NS
