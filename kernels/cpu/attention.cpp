#include "kernels/cpu/attention.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vmath.h"
#include "kernels/cpu/simd.h"  // last: the level's target for the rest of the file

namespace cpets::kernels::cpu::CPETS_ISA_NS {
namespace {

// Tile sizes, tuned at d = 32, N = 2304 on one core (with Eigen tile products, 64-row blocks
// cost ~15% more, mostly operand packing that larger blocks amortise; with the micro-kernels at
// AVX2, 64 × 128 and 64 × 512 forward tiles measured the same or slower). Forward: a 128-query
// block against 256-key tiles; backward: a 128-key block against 128-query tiles. The two
// 64 KB tiles of the backward and their operands stay in L2.
constexpr int64_t kFwdQ = 128, kFwdK = 256;
constexpr int64_t kBwdK = 128, kBwdQ = 128;
// A backward pass with fewer tasks than this (cross-attention to a few context tokens, few
// batch × head pairs) splits the query range into a fixed number of parts whose dK/dV partial
// sums are added in part order afterwards.
constexpr int64_t kMinTasks = 32;

// Tasks are grouped so that each parallel chunk holds at least ~2 MFLOP: starting a parallel
// region costs far more than a tiny problem (gradchecks, cross-attention to 4 tokens) on a busy
// machine. Grouping never changes results: every task writes its own outputs.
int64_t tasks_per_chunk(double flops_per_task) {
  return std::max<int64_t>(1, int64_t(2e6 / std::max(flops_per_task, 1.0)));
}

// Scores are exponentiated in base 2 (exp2_16, simd.h): the scale·log2 e factor is folded into
// the score (one FMA) or into a transposed operand, and 2^x is one FMA and the clamps cheaper than e^x.
constexpr float kLog2e = 1.44269504088896341f;

// The running maximum starts at −∞, where x − n is NaN: the rescale factor clamps first.
inline F16 exp2_16_clamped(F16 x) { return exp2_16(F16::max(x, F16::bcast(-126.f))); }

// The row operations of the softmax and its backward. All reductions have a fixed order (16
// lanes, then the lanes in a fixed tree), so results do not depend on the thread count. Full
// 16-lane chunks take plain loads and stores and only the tail is masked: AVX2's masked moves
// and blends cost several µops each (the forward at d = 32 was ~10 % slower with every chunk masked).
float row_max(const float* s, int64_t n) {
  F16 m = F16::bcast(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) m = F16::max(m, F16::load(s + j));
  if (j < n) {
    const F16::Mask k = F16::mask(n - j);
    m = F16::max(m, F16::select(k, F16::load_m(s + j, k), m));
  }
  return reduce_max(m);
}

// s[j] = 2^(c·s[j] − shift) in place (shift ≥ c·max_j s[j]); returns Σ_j s[j].
float exp2_row_inplace(float* s, int64_t n, float c, float shift) {
  const F16 vs = F16::bcast(c), vh = F16::bcast(shift);
  F16 sum = F16::zero();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const F16 p = exp2_16(F16::fms(F16::load(s + j), vs, vh));
    store(s + j, p);
    sum = sum + p;
  }
  if (j < n) {
    const F16::Mask k = F16::mask(n - j);
    const F16 p = exp2_16(F16::fms(F16::load_m(s + j, k), vs, vh));
    store_m(s + j, k, p);
    sum = F16::select(k, sum + p, sum);
  }
  return reduce_add(sum);
}

// Per-thread tile memory, grown on demand and kept for the next call (fresh pages are slow to
// first-touch on our VMs, so a tile must not be reallocated per block).
float* thread_tile(int64_t floats) {
  thread_local std::vector<float> tile;
  if (int64_t(tile.size()) < floats) tile.resize(floats);
  return tile.data();
}

int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

// The two tile products attention needs, with the operands read in place from the (B, N, C)
// tensors (row stride C):
//   tile_xyt:    S (n1×n2) = X (n1×d) · Yᵀ (Y is n2×d)      scores, dP, and their transposes
//                (the micro-kernel reads Yᵀ from a per-head transposed copy made once per call)
//   tile_pz_acc: A (n1×d) += P (n1×n2) · Z (n2×d)          P·V, dS·K, Pᵀ·dO, dSᵀ·Q
// For thin heads these are register-blocked micro-kernels (no packing, no zero-fill
// of S); otherwise Eigen's serial GEMM. Each output element is accumulated in a fixed order.

// S rows [i0, i0+R), 16-column groups [j0, j0+16V) from the transposed Y (d × n2p). Always
// inlined: GCC made the AVX2 block an out-of-line call per 6 × 16 scores.
template <int R, int V>
[[gnu::always_inline]] inline void xyt_block(int64_t d, const float* X, int64_t ldx, const float* yt, int64_t ldyt, float* S, int64_t lds) {
  F16 acc[R][V];
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 16") for (int v = 0; v < V; ++v) acc[r][v] = F16::zero();
  for (int64_t c = 0; c < d; ++c) {
    F16 y[V];
    _Pragma("GCC unroll 16") for (int v = 0; v < V; ++v) y[v] = F16::load(yt + c * ldyt + 16 * v);
    _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
      const F16 x = F16::bcast(X[r * ldx + c]);
      _Pragma("GCC unroll 16") for (int v = 0; v < V; ++v) acc[r][v] = F16::fma(x, y[v], acc[r][v]);
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 16") for (int v = 0; v < V; ++v) store(S + r * lds + 16 * v, acc[r][v]);
}

template <int R>
inline void xyt_rows(int64_t d, const float* X, int64_t ldx, const float* yt, int64_t ldyt, int64_t n2p, float* S,
                     int64_t lds) {
  int64_t j = 0;
  if constexpr (kNarrowRegisters) {  // AVX2: R × 1 vectors (R ≤ 6: 12 + 2 + 1 of 16 registers)
    for (; j < n2p; j += 16) xyt_block<R, 1>(d, X, ldx, yt + j, ldyt, S + j, lds);
    return;
  }
  for (; j + 64 <= n2p; j += 64) xyt_block<R, 4>(d, X, ldx, yt + j, ldyt, S + j, lds);
  switch ((n2p - j) / 16) {
    case 3: xyt_block<R, 3>(d, X, ldx, yt + j, ldyt, S + j, lds); break;
    case 2: xyt_block<R, 2>(d, X, ldx, yt + j, ldyt, S + j, lds); break;
    case 1: xyt_block<R, 1>(d, X, ldx, yt + j, ldyt, S + j, lds); break;
    default: break;
  }
}

// yt: Yᵀ (d rows, leading dimension ldyt ≥ round16(n2)), readable up to column round16(n2).
// Requires lds ≥ round16(n2); columns n2… of S receive values that callers ignore.
// Not inlined: inside a large caller (the forward's block loop) GCC's register allocation of the
// AVX2 blocks spilled (measured 10 % slower forward).
[[gnu::noinline]] void xyt_micro(int64_t n1, int64_t n2, int64_t d, const float* X, int64_t ldx, const float* yt, int64_t ldyt,
               float* S, int64_t lds) {
  constexpr int R = kNarrowRegisters ? 6 : 4;
  const int64_t n2p = round16(n2);
  int64_t i = 0;
  for (; i + R <= n1; i += R) xyt_rows<R>(d, X + i * ldx, ldx, yt, ldyt, n2p, S + i * lds, lds);
  for (; i < n1; ++i) xyt_rows<1>(d, X + i * ldx, ldx, yt, ldyt, n2p, S + i * lds, lds);
}

// A rows [i0, i0+R), channel vectors [c0, c0+16V), the last one masked by `tail` when kTail (a
// full last vector takes plain loads: a masked load per key in the inner loop cost the AVX2
// forward's P·V a third of its time — vmaskmovps, and its mask spilled to the stack).
// With PT the left operand is read transposed: element (r, j) at P[j·ldp + r] (Pᵀ·Z from a stored P).
template <int R, int V, bool PT, bool kTail>
[[gnu::always_inline]] inline void pz_block(int64_t n2, const float* P, int64_t ldp, const float* Z, int64_t ldz, float* A, int64_t lda,
                     F16::Mask tail) {
  auto load_last = [&](const float* p) { return kTail ? F16::load_m(p, tail) : F16::load(p); };
  F16 acc[R][V];
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 16") for (int v = 0; v < V; ++v)
      acc[r][v] = v == V - 1 ? load_last(A + r * lda + 16 * v) : F16::load(A + r * lda + 16 * v);
  for (int64_t j = 0; j < n2; ++j) {
    F16 z[V];
    _Pragma("GCC unroll 16") for (int v = 0; v < V; ++v)
      z[v] = v == V - 1 ? load_last(Z + j * ldz + 16 * v) : F16::load(Z + j * ldz + 16 * v);
    _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
      const F16 p = F16::bcast(PT ? P[j * ldp + r] : P[r * ldp + j]);
      _Pragma("GCC unroll 16") for (int v = 0; v < V; ++v) acc[r][v] = F16::fma(p, z[v], acc[r][v]);
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 16") for (int v = 0; v < V; ++v) {
      if (kTail && v == V - 1) store_m(A + r * lda + 16 * v, tail, acc[r][v]);
      else store(A + r * lda + 16 * v, acc[r][v]);
    }
}

// Rows in groups of R (4 channel vectors → 6 rows, fewer vectors → 8 rows keep ≤ 24 registers;
// AVX2: one vector → 6 rows, 12 + 2 + 1 of 16 registers).
template <int V, bool PT, bool kTail>
void pz_columns(int64_t n1, int64_t n2, const float* P, int64_t ldp, const float* Z, int64_t ldz, float* A,
                int64_t lda, F16::Mask tail) {
  constexpr int R = kNarrowRegisters || V >= 3 ? 6 : 8;
  const int64_t row_step = PT ? 1 : ldp;
  int64_t i = 0;
  for (; i + R <= n1; i += R) pz_block<R, V, PT, kTail>(n2, P + i * row_step, ldp, Z, ldz, A + i * lda, lda, tail);
  for (; i < n1; ++i) pz_block<1, V, PT, kTail>(n2, P + i * row_step, ldp, Z, ldz, A + i * lda, lda, tail);
}

// pz_columns with a masked last vector only where it is partial.
template <int V, bool PT>
void pz_columns(int64_t n1, int64_t n2, const float* P, int64_t ldp, const float* Z, int64_t ldz, float* A,
                int64_t lda, int64_t last) {
  if (last == 16) pz_columns<V, PT, false>(n1, n2, P, ldp, Z, ldz, A, lda, F16::mask(16));
  else pz_columns<V, PT, true>(n1, n2, P, ldp, Z, ldz, A, lda, F16::mask(last));
}

template <bool PT>
[[gnu::noinline]] void pz_acc_micro(int64_t n1, int64_t n2, int64_t d, const float* P, int64_t ldp, const float* Z, int64_t ldz,
                  float* A, int64_t lda) {
  constexpr int64_t kWidth = kNarrowRegisters ? 16 : 64;  // AVX2: one channel vector per sweep
  for (int64_t c0 = 0; c0 < d; c0 += kWidth) {
    const int64_t width = std::min<int64_t>(kWidth, d - c0);
    const int V = int((width + 15) / 16);
    const int64_t last = width - 16 * (V - 1);
    if constexpr (kNarrowRegisters) {
      pz_columns<1, PT>(n1, n2, P, ldp, Z + c0, ldz, A + c0, lda, last);
      continue;
    }
    switch (V) {
      case 4: pz_columns<4, PT>(n1, n2, P, ldp, Z + c0, ldz, A + c0, lda, last); break;
      case 3: pz_columns<3, PT>(n1, n2, P, ldp, Z + c0, ldz, A + c0, lda, last); break;
      case 2: pz_columns<2, PT>(n1, n2, P, ldp, Z + c0, ldz, A + c0, lda, last); break;
      default: pz_columns<1, PT>(n1, n2, P, ldp, Z + c0, ldz, A + c0, lda, last); break;
    }
  }
}


// The micro-kernels win for thin heads (2× at d = 8, ~1.3× at d = 16, ~1.05× at d = 32, measured
// at N = 2304); from d = 64 on Eigen's cache blocking is faster (the transposed tile outgrows L1).
// Heads of ≤ 16 channels now take the lane kernels below instead (the transposed copies
// heads_t_floats sizes serve both).
constexpr int64_t kMicroKernelMaxDim = 32;

bool use_micro_kernels(int64_t d) {
  return d <= kMicroKernelMaxDim;
}

// Y is the operand's rows (leading dimension ldy); yt, when not null, its transposed copy.
void tile_xyt(int64_t n1, int64_t n2, int64_t d, const float* X, int64_t ldx, const float* Y, int64_t ldy,
              const float* yt, int64_t ldyt, float* S, int64_t lds) {
  if (yt) return xyt_micro(n1, n2, d, X, ldx, yt, ldyt, S, lds);
  sgemm_serial(false, true, n1, n2, d, 1.f, X, ldx, Y, ldy, 0.f, S, lds);
}

void tile_pz_acc(int64_t n1, int64_t n2, int64_t d, const float* P, int64_t ldp, const float* Z, int64_t ldz, float* A,
                 int64_t lda) {
  if (use_micro_kernels(d)) return pz_acc_micro<false>(n1, n2, d, P, ldp, Z, ldz, A, lda);
  sgemm_serial(false, false, n1, d, n2, 1.f, P, ldp, Z, ldz, 1.f, A, lda);
}

// A (n1×d) += Pᵀ·Z for a stored P (n2×n1): dV += Pᵀ·dO and dK += dSᵀ·Q from the query-major tiles.
void tile_ptz_acc(int64_t n1, int64_t n2, int64_t d, const float* P, int64_t ldp, const float* Z, int64_t ldz,
                  float* A, int64_t lda) {
  if (use_micro_kernels(d)) return pz_acc_micro<true>(n1, n2, d, P, ldp, Z, ldz, A, lda);
  sgemm_serial(true, false, n1, d, n2, 1.f, P, ldp, Z, ldz, 1.f, A, lda);
}

struct Geometry {
  int64_t B, Nq, Nk, C, H, d;
  float scale;
  explicit Geometry(const AttentionShape& s)
      : B(s.batch), Nq(s.nq), Nk(s.nk), C(s.channels), H(s.heads), d(s.channels / s.heads),
        scale(1.f / std::sqrt(float(s.channels / s.heads))) {}
  // Row i of sequence x (Nq or Nk rows) in batch b, first channel of head h.
  const float* row(const float* x, int64_t n, int64_t b, int64_t i, int64_t h) const { return x + (b * n + i) * C + h * d; }
  float* row(float* x, int64_t n, int64_t b, int64_t i, int64_t h) const { return x + (b * n + i) * C + h * d; }
  int64_t lse_index(int64_t b, int64_t h, int64_t i) const { return (b * H + h) * Nq + i; }
};

// A (B, n, C) operand transposed per head to (B·H, d, np), np = round16(n), zero-padded, so that
// the micro-kernel loads 16 consecutive tokens of one channel at once. Made once per call (O(N·C))
// instead of once per tile pair. `data` is null on the Eigen path, which reads the rows directly.
struct HeadsT {
  const float* data = nullptr;
  int64_t np = 0;
  const float* at(const Geometry& g, int64_t b, int64_t h, int64_t j0) const {
    return data ? data + (b * g.H + h) * g.d * np + j0 : nullptr;
  }
};

int64_t heads_t_floats(const Geometry& g, int64_t n) { return use_micro_kernels(g.d) ? g.B * g.C * round16(n) : 0; }

// `factor` multiplies every value (the thin kernels fold the score scale into q or k).
HeadsT transpose_heads(const Geometry& g, const float* x, int64_t n, float* buf, float factor = 1.f) {
  if (!use_micro_kernels(g.d)) return {};
  const int64_t np = round16(n), d = g.d;
  parallel_for(g.B * g.H, std::max<int64_t>(1, (1 << 16) / (np * d)), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / g.H, h = t % g.H;
      float* dst = buf + t * d * np;
      for (int64_t j = 0; j < np; ++j) {  // read rows in order, write d streams
        const float* src = g.row(x, n, b, std::min(j, n - 1), h);
        for (int64_t c = 0; c < d; ++c) dst[c * np + j] = j < n ? src[c] * factor : 0.f;
      }
    }
  });
  return {buf, np};
}

// Thin heads (d ≤ 16). The tile kernels above put 16 keys in the lanes for Q·Kᵀ but
// need d channels in the lanes for P·V, so at d = 8 half of every P·V vector is empty. Here the
// whole block stays in registers with 16 queries in the lanes (16 keys in the dK/dV pass):
// scores are d broadcast-FMAs per key against the head's transposed queries, the online softmax
// max and sum are lane-wise (no horizontal reductions), and P·V is d broadcast-FMAs of V[j][c]
// into d accumulators of 16 queries each. No vector is ever half empty, and no score tile goes
// through memory except one small chunk (d ≤ 8: everything in registers; 9–16: phased, below).
// Measured at 2×2304 tokens, 2 threads: d = 8 forward 40 → ~180 GFLOP/s, forward+backward
// 44 → ~155; d = 16 (one thread) forward 86 → 110, forward+backward 78 → 96. Scores are in log2 units: the transposed q (or k) copy
// is pre-multiplied by scale·log2(e), so each probability is one exp2.
constexpr int64_t kMaxThinDim = 16;
constexpr int kMaxFusedDim = kNarrowRegisters ? 4 : 8;  // up to here a group's operands and accumulators fit in registers
constexpr int64_t kThinChunk = 128;  // keys whose scores are kept (one vector each) per rescale

// Σ_c row[c] · cols[c] for D channels: 16 lanes of dot products with the broadcast row, in two
// interleaved chains (even and odd channels) to halve the dependency depth.
template <int D>
inline F16 lane_dots(const float* row, const F16* cols) {
  F16 a = F16::mul(F16::bcast(row[0]), cols[0]);
  if constexpr (D == 1) return a;
  F16 b = F16::mul(F16::bcast(row[1]), cols[1]);
  _Pragma("GCC unroll 16") for (int c = 2; c < D; c += 2) {
    a = F16::fma(F16::bcast(row[c]), cols[c], a);
    if (c + 1 < D) b = F16::fma(F16::bcast(row[c + 1]), cols[c + 1], b);
  }
  return F16::add(a, b);
}

// Writes D lane vectors (lane = token) as `valid` rows of D channels with row stride ld.
template <int D>
inline void store_lanes_as_rows(const F16* x, int64_t valid, float* rows, int64_t ld) {
  alignas(64) float t[D][16];
  _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) store(t[c], x[c]);
  for (int64_t i = 0; i < valid; ++i)
    _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) rows[i * ld + c] = t[c][i];
}

// Last step of a 16-query forward group: O /= l, rows written out, and the logsumexp saved
// (m and l are in base 2: m = max·log2 e, so lse = (m + log2 l)·ln 2).
template <int D>
inline void finish_forward_group(F16 (&O)[D], F16 m, F16 l, int64_t nvalid, float* out_rows, int64_t C,
                                 float* lse_dst) {
  const F16 inv = F16::div(F16::bcast(1.f), l);
  _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) O[c] = F16::mul(O[c], inv);
  store_lanes_as_rows<D>(O, nvalid, out_rows, C);
  alignas(64) float mm[16], ll[16];
  store(mm, m);
  store(ll, l);
  for (int64_t i = 0; i < nvalid; ++i) lse_dst[i] = (mm[i] + std::log2(ll[i])) * 0.69314718055994531f;
}


// Forward for 16 queries (nvalid of them real): qt = their scaled transposed q (D rows, stride
// ldq), K and V the head's key rows (stride C).
template <int D>
void thin_forward_group(const Geometry& g, const float* qt, int64_t ldq, const float* K, const float* V, int64_t nvalid,
                        float* out_rows, float* lse_dst, float* sbuf) {
  const int64_t C = g.C;
  F16 Q[D], O[D];
  _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) {
    Q[c] = F16::load(qt + c * ldq);
    O[c] = F16::zero();
  }
  F16 m = F16::bcast(-std::numeric_limits<float>::infinity()), l = F16::zero();
  for (int64_t j0 = 0; j0 < g.Nk; j0 += kThinChunk) {
    const int64_t n = std::min(kThinChunk, g.Nk - j0);
    F16 mx = m;
    for (int64_t j = 0; j < n; ++j) {
      const F16 s = lane_dots<D>(K + (j0 + j) * C, Q);
      store(sbuf + 16 * j, s);
      mx = F16::max(mx, s);
    }
    const F16 rescale = exp2_16_clamped(F16::sub(m, mx));
    m = mx;
    l = F16::mul(l, rescale);
    _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) O[c] = F16::mul(O[c], rescale);
    for (int64_t j = 0; j < n; ++j) {
      const F16 p = exp2_16(F16::sub(F16::load(sbuf + 16 * j), m));
      l = F16::add(l, p);
      const float* vr = V + (j0 + j) * C;
      _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) O[c] = F16::fma(F16::bcast(vr[c]), p, O[c]);
    }
  }
  finish_forward_group<D>(O, m, l, nvalid, out_rows, C, lse_dst);
}

// dQ for 16 queries: dS = P∘(dO·Vᵀ − D), dQ = scale · dS·K, with P = 2^(s − lse·log2 e).
template <int D>
void thin_dq_group(const Geometry& g, const float* qt, const float* dot, int64_t ld, const float* K, const float* V,
                   const float* lse, const float* Drow, int64_t nvalid, float* dq_rows) {
  const int64_t C = g.C;
  F16 Q[D], dO[D], dQ[D];
  _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) {
    Q[c] = F16::load(qt + c * ld);
    dO[c] = F16::load(dot + c * ld);
    dQ[c] = F16::zero();
  }
  const F16::Mask valid = F16::mask(nvalid);
  const F16 L = F16::mul(F16::load_m(lse, valid), F16::bcast(kLog2e));
  const F16 Dv = F16::load_m(Drow, valid);
  for (int64_t j = 0; j < g.Nk; ++j) {
    const float* kr = K + j * C;
    const F16 s = lane_dots<D>(kr, Q);
    const F16 dp = lane_dots<D>(V + j * C, dO);
    const F16 ds = F16::mul(exp2_16(F16::sub(s, L)), F16::sub(dp, Dv));
    _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) dQ[c] = F16::fma(F16::bcast(kr[c]), ds, dQ[c]);
  }
  _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) dQ[c] = F16::mul(dQ[c], F16::bcast(g.scale));
  store_lanes_as_rows<D>(dQ, nvalid, dq_rows, C);
}

// dK, dV for 16 keys over queries [q_begin, q_end): keys in the lanes, kt the scaled transposed k,
// vt the transposed v (kept in L1 and read as memory operands: registers hold K, dK and dV).
template <int D>
void thin_dkdv_group(const Geometry& g, const float* kt, const float* vt, int64_t ld, const float* Q, const float* dO,
                     const float* lse, const float* Drow, int64_t q_begin, int64_t q_end, int64_t nvalid,
                     float* dk_rows, float* dv_rows) {
  const int64_t C = g.C;
  F16 Kt[D], dK[D], dV[D];
  _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) {
    Kt[c] = F16::load(kt + c * ld);
    dK[c] = F16::zero();
    dV[c] = F16::zero();
  }
  for (int64_t i = q_begin; i < q_end; ++i) {
    const float* qr = Q + i * C;
    const float* gr = dO + i * C;
    const F16 s = lane_dots<D>(qr, Kt);
    const F16 p = exp2_16(F16::sub(s, F16::bcast(lse[i] * kLog2e)));
    F16 dp0 = F16::zero(), dp1 = F16::zero();
    _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) {
      const F16 go = F16::bcast(gr[c]);
      dV[c] = F16::fma(go, p, dV[c]);
      if (c % 2 == 0) dp0 = F16::fma(go, F16::load(vt + c * ld), dp0);
      else dp1 = F16::fma(go, F16::load(vt + c * ld), dp1);
    }
    const F16 ds = F16::mul(p, F16::sub(F16::add(dp0, dp1), F16::bcast(Drow[i])));
    _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) dK[c] = F16::fma(F16::bcast(qr[c]), ds, dK[c]);
  }
  _Pragma("GCC unroll 8") for (int c = 0; c < D; ++c) dK[c] = F16::mul(dK[c], F16::bcast(g.scale));
  store_lanes_as_rows<D>(dK, nvalid, dk_rows, C);
  store_lanes_as_rows<D>(dV, nvalid, dv_rows, C);
}

// Heads of 9–16 channels: the same lane layout, but the operands of one product alone fill 16
// registers, so each key (query) chunk is walked in phases that each keep one set of D vectors in
// registers — scores, then probabilities (and dS), then each accumulation — passing one vector per
// key through the small chunk buffer and keeping the accumulators on the stack between chunks.
template <int D>
void phased_forward_group(const Geometry& g, const float* qt, int64_t ldq, const float* K, const float* V,
                          int64_t nvalid, float* out_rows, float* lse_dst, float* sbuf) {
  const int64_t C = g.C;
  alignas(64) float acc[D][16] = {};
  F16 m = F16::bcast(-std::numeric_limits<float>::infinity()), l = F16::zero();
  for (int64_t j0 = 0; j0 < g.Nk; j0 += kThinChunk) {
    const int64_t n = std::min(kThinChunk, g.Nk - j0);
    F16 mx = m;
    {
      F16 Q[D];
      _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) Q[c] = F16::load(qt + c * ldq);
      for (int64_t j = 0; j < n; ++j) {
        const F16 s = lane_dots<D>(K + (j0 + j) * C, Q);
        store(sbuf + 16 * j, s);
        mx = F16::max(mx, s);
      }
    }
    const F16 rescale = exp2_16_clamped(F16::sub(m, mx));
    m = mx;
    l = F16::mul(l, rescale);
    F16 O[D];
    _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) O[c] = F16::mul(F16::load(acc[c]), rescale);
    for (int64_t j = 0; j < n; ++j) {
      const F16 p = exp2_16(F16::sub(F16::load(sbuf + 16 * j), m));
      l = F16::add(l, p);
      const float* vr = V + (j0 + j) * C;
      _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) O[c] = F16::fma(F16::bcast(vr[c]), p, O[c]);
    }
    _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) store(acc[c], O[c]);
  }
  F16 O[D];
  _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) O[c] = F16::load(acc[c]);
  finish_forward_group<D>(O, m, l, nvalid, out_rows, C, lse_dst);
}

template <int D>
void phased_dq_group(const Geometry& g, const float* qt, const float* dot, int64_t ld, const float* K, const float* V,
                     const float* lse, const float* Drow, int64_t nvalid, float* dq_rows, float* sbuf) {
  const int64_t C = g.C;
  alignas(64) float acc[D][16] = {};
  const F16::Mask valid = F16::mask(nvalid);
  const F16 L = F16::mul(F16::load_m(lse, valid), F16::bcast(kLog2e));
  const F16 Dv = F16::load_m(Drow, valid);
  for (int64_t j0 = 0; j0 < g.Nk; j0 += kThinChunk) {
    const int64_t n = std::min(kThinChunk, g.Nk - j0);
    {  // scores
      F16 Q[D];
      _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) Q[c] = F16::load(qt + c * ld);
      for (int64_t j = 0; j < n; ++j) store(sbuf + 16 * j, lane_dots<D>(K + (j0 + j) * C, Q));
    }
    {  // dS = P∘(dP − D)
      F16 dO[D];
      _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) dO[c] = F16::load(dot + c * ld);
      for (int64_t j = 0; j < n; ++j) {
        const F16 dp = lane_dots<D>(V + (j0 + j) * C, dO);
        const F16 p = exp2_16(F16::sub(F16::load(sbuf + 16 * j), L));
        store(sbuf + 16 * j, F16::mul(p, F16::sub(dp, Dv)));
      }
    }
    F16 dQ[D];  // dQ += dS·K
    _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) dQ[c] = F16::load(acc[c]);
    for (int64_t j = 0; j < n; ++j) {
      const float* kr = K + (j0 + j) * C;
      const F16 ds = F16::load(sbuf + 16 * j);
      _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) dQ[c] = F16::fma(F16::bcast(kr[c]), ds, dQ[c]);
    }
    _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) store(acc[c], dQ[c]);
  }
  F16 dQ[D];
  _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) dQ[c] = F16::mul(F16::load(acc[c]), F16::bcast(g.scale));
  store_lanes_as_rows<D>(dQ, nvalid, dq_rows, C);
}

// sbuf holds 2·16·kThinChunk floats: P, then dS, per query of the chunk.
template <int D>
void phased_dkdv_group(const Geometry& g, const float* kt, const float* vt, int64_t ld, const float* Q, const float* dO,
                       const float* lse, const float* Drow, int64_t q_begin, int64_t q_end, int64_t nvalid,
                       float* dk_rows, float* dv_rows, float* sbuf) {
  const int64_t C = g.C;
  float* pbuf = sbuf;
  float* dsbuf = sbuf + 16 * kThinChunk;
  alignas(64) float dk_acc[D][16] = {}, dv_acc[D][16] = {};
  for (int64_t i0 = q_begin; i0 < q_end; i0 += kThinChunk) {
    const int64_t n = std::min(kThinChunk, q_end - i0);
    {  // P
      F16 Kt[D];
      _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) Kt[c] = F16::load(kt + c * ld);
      for (int64_t i = 0; i < n; ++i) {
        const F16 s = lane_dots<D>(Q + (i0 + i) * C, Kt);
        store(pbuf + 16 * i, exp2_16(F16::sub(s, F16::bcast(lse[i0 + i] * kLog2e))));
      }
    }
    {  // dS = P∘(dP − D)
      F16 Vt[D];
      _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) Vt[c] = F16::load(vt + c * ld);
      for (int64_t i = 0; i < n; ++i) {
        const F16 dp = lane_dots<D>(dO + (i0 + i) * C, Vt);
        const F16 p = F16::load(pbuf + 16 * i);
        store(dsbuf + 16 * i, F16::mul(p, F16::sub(dp, F16::bcast(Drow[i0 + i]))));
      }
    }
    {  // dV += Pᵀ·dO
      F16 dV[D];
      _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) dV[c] = F16::load(dv_acc[c]);
      for (int64_t i = 0; i < n; ++i) {
        const float* gr = dO + (i0 + i) * C;
        const F16 p = F16::load(pbuf + 16 * i);
        _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) dV[c] = F16::fma(F16::bcast(gr[c]), p, dV[c]);
      }
      _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) store(dv_acc[c], dV[c]);
    }
    F16 dK[D];  // dK += dSᵀ·Q
    _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) dK[c] = F16::load(dk_acc[c]);
    for (int64_t i = 0; i < n; ++i) {
      const float* qr = Q + (i0 + i) * C;
      const F16 ds = F16::load(dsbuf + 16 * i);
      _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) dK[c] = F16::fma(F16::bcast(qr[c]), ds, dK[c]);
    }
    _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) store(dk_acc[c], dK[c]);
  }
  F16 dK[D], dV[D];
  _Pragma("GCC unroll 16") for (int c = 0; c < D; ++c) {
    dK[c] = F16::mul(F16::load(dk_acc[c]), F16::bcast(g.scale));
    dV[c] = F16::load(dv_acc[c]);
  }
  store_lanes_as_rows<D>(dK, nvalid, dk_rows, C);
  store_lanes_as_rows<D>(dV, nvalid, dv_rows, C);
}

// Calls f.template operator()<D>() with D = d (1 ≤ d ≤ kMaxThinDim).
template <class F>
void with_thin_dim(int64_t d, F&& f) {
  switch (d) {
    case 1: return f.template operator()<1>();
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    case 5: return f.template operator()<5>();
    case 6: return f.template operator()<6>();
    case 7: return f.template operator()<7>();
    case 8: return f.template operator()<8>();
    case 9: return f.template operator()<9>();
    case 10: return f.template operator()<10>();
    case 11: return f.template operator()<11>();
    case 12: return f.template operator()<12>();
    case 13: return f.template operator()<13>();
    case 14: return f.template operator()<14>();
    case 15: return f.template operator()<15>();
    default: return f.template operator()<16>();
  }
}

bool use_thin_kernels(int64_t d) {
  return d <= kMaxThinDim;
}

// Block-level drivers of the thin kernels: the same tasks as the tile path (query blocks of
// kFwdQ, key blocks of kBwdK), walked in groups of 16 lanes.
void thin_forward_block(const Geometry& g, const HeadsT& qt, const float* k, const float* v, float* out, float* lse,
                        int64_t b, int64_t h, int64_t i0, int64_t nq) {
  float* sbuf = thread_tile(16 * kThinChunk);
  with_thin_dim(g.d, [&]<int D>() {
    for (int64_t i = i0; i < i0 + nq; i += 16) {
      const float *K = g.row(k, g.Nk, b, 0, h), *V = g.row(v, g.Nk, b, 0, h);
      const int64_t valid = std::min<int64_t>(16, i0 + nq - i);
      float *o = g.row(out, g.Nq, b, i, h), *l = lse + g.lse_index(b, h, i);
      if constexpr (D <= kMaxFusedDim) thin_forward_group<D>(g, qt.at(g, b, h, i), qt.np, K, V, valid, o, l, sbuf);
      else phased_forward_group<D>(g, qt.at(g, b, h, i), qt.np, K, V, valid, o, l, sbuf);
    }
  });
}

void thin_dq_block(const Geometry& g, const HeadsT& qt, const HeadsT& dot, const float* k, const float* v,
                   const float* lse, const float* D, float* dq, int64_t b, int64_t h, int64_t i0, int64_t nq) {
  float* sbuf = thread_tile(16 * kThinChunk);
  with_thin_dim(g.d, [&]<int Dim>() {
    for (int64_t i = i0; i < i0 + nq; i += 16) {
      const float *K = g.row(k, g.Nk, b, 0, h), *V = g.row(v, g.Nk, b, 0, h);
      const float *L = lse + g.lse_index(b, h, i), *Di = D + g.lse_index(b, h, i);
      const int64_t valid = std::min<int64_t>(16, i0 + nq - i);
      float* dst = g.row(dq, g.Nq, b, i, h);
      if constexpr (Dim <= kMaxFusedDim)
        thin_dq_group<Dim>(g, qt.at(g, b, h, i), dot.at(g, b, h, i), qt.np, K, V, L, Di, valid, dst);
      else phased_dq_group<Dim>(g, qt.at(g, b, h, i), dot.at(g, b, h, i), qt.np, K, V, L, Di, valid, dst, sbuf);
    }
  });
}

void thin_dkdv_block(const Geometry& g, const HeadsT& kt, const HeadsT& vt, const float* q, const float* dout,
                     const float* lse, const float* D, int64_t b, int64_t h, int64_t j0, int64_t nk, int64_t q_begin,
                     int64_t q_end, float* dk_dst, float* dv_dst) {
  float* sbuf = thread_tile(2 * 16 * kThinChunk);
  with_thin_dim(g.d, [&]<int Dim>() {
    for (int64_t j = 0; j < nk; j += 16) {
      const float *Q = g.row(q, g.Nq, b, 0, h), *dO = g.row(dout, g.Nq, b, 0, h);
      const float *L = lse + g.lse_index(b, h, 0), *Di = D + g.lse_index(b, h, 0);
      const int64_t valid = std::min<int64_t>(16, nk - j);
      if constexpr (Dim <= kMaxFusedDim)
        thin_dkdv_group<Dim>(g, kt.at(g, b, h, j0 + j), vt.at(g, b, h, j0 + j), kt.np, Q, dO, L, Di, q_begin, q_end,
                             valid, dk_dst + j * g.C, dv_dst + j * g.C);
      else
        phased_dkdv_group<Dim>(g, kt.at(g, b, h, j0 + j), vt.at(g, b, h, j0 + j), kt.np, Q, dO, L, Di, q_begin,
                               q_end, valid, dk_dst + j * g.C, dv_dst + j * g.C, sbuf);
    }
  });
}

// One (batch, head, query block): online softmax over key tiles, then normalise and store.
void forward_block(const Geometry& g, const float* q, const float* k, const HeadsT& kt, const float* v, float* out,
                   float* lse, int64_t b, int64_t h, int64_t i0, int64_t nq) {
  const int64_t d = g.d, C = g.C;
  const float c = g.scale * kLog2e;
  float* S = thread_tile(kFwdQ * kFwdK + kFwdQ * d + 2 * kFwdQ);
  float* O = S + kFwdQ * kFwdK;
  float* m = O + kFwdQ * d;
  float* l = m + kFwdQ;
  std::fill(O, O + nq * d, 0.f);
  std::fill(m, m + nq, -std::numeric_limits<float>::infinity());
  std::fill(l, l + nq, 0.f);
  const float* Q = g.row(q, g.Nq, b, i0, h);
  for (int64_t j0 = 0; j0 < g.Nk; j0 += kFwdK) {
    const int64_t nk = std::min(kFwdK, g.Nk - j0);
    tile_xyt(nq, nk, d, Q, C, g.row(k, g.Nk, b, j0, h), C, kt.at(g, b, h, j0), kt.np, S, kFwdK);
    for (int64_t i = 0; i < nq; ++i) {  // m in log2 units: m = max·scale·log2 e
      float* s = S + i * kFwdK;
      const float m_new = std::max(m[i], row_max(s, nk) * c);
      const float rescale = fast_exp((m[i] - m_new) * 0.69314718055994531f);
      l[i] = l[i] * rescale + exp2_row_inplace(s, nk, c, m_new);
      m[i] = m_new;
      float* o = O + i * d;
#pragma omp simd
      for (int64_t c = 0; c < d; ++c) o[c] *= rescale;
    }
    tile_pz_acc(nq, nk, d, S, kFwdK, g.row(v, g.Nk, b, j0, h), C, O, d);
  }
  for (int64_t i = 0; i < nq; ++i) {
    const float inv = 1.f / l[i];
    float* dst = g.row(out, g.Nq, b, i0 + i, h);
    const float* o = O + i * d;
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) dst[c] = o[c] * inv;
    lse[g.lse_index(b, h, i0 + i)] = (m[i] + std::log2(l[i])) * 0.69314718055994531f;
  }
}

// D_i = Σ_c dO_ic · O_ic per (batch, head, query): the softmax-backward row term.
void row_dots(const Geometry& g, const float* out, const float* dout, float* D) {
  parallel_for(g.B * g.Nq, std::max<int64_t>(256, (int64_t(1) << 18) / g.C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / g.Nq, i = r % g.Nq;
      for (int64_t h = 0; h < g.H; ++h) {
        const float* o = g.row(out, g.Nq, b, i, h);
        const float* go = g.row(dout, g.Nq, b, i, h);
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < g.d; ++c) s += o[c] * go[c];
        D[g.lse_index(b, h, i)] = s;
      }
    }
  });
}

// Row i of a backward tile: P = 2^(c·S − L_i) over S (c = scale·log2 e, L_i = lse_i·log2 e) in
// place, and dS = P∘(dP − D_i) over dP in place.
void probs_and_grads_row(float* s, float* dp, int64_t n, float c, float L, float Di) {
  const F16 vc = F16::bcast(c), vl = F16::bcast(L), vd = F16::bcast(Di);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const F16 p = exp2_16(F16::fms(F16::load(s + j), vc, vl));
    store(s + j, p);
    store(dp + j, F16::mul(p, F16::sub(F16::load(dp + j), vd)));
  }
  if (j < n) {
    const F16::Mask k = F16::mask(n - j);
    const F16 p = exp2_16(F16::fms(F16::load_m(s + j, k), vc, vl));
    store_m(s + j, k, p);
    store_m(dp + j, k, F16::mul(p, F16::sub(F16::load_m(dp + j, k), vd)));
  }
}

// dQ, dK and dV of one (batch, head) over queries [q_begin, q_end), in one pass (heads of more
// than kMaxThinDim channels). For each key block in order, and each query tile in order:
//   S = Q·Kᵀ, dP = dO·Vᵀ, P = 2^(c·S − L), dS = P∘(dP − D);
//   dV_blk += Pᵀ·dO, dK_blk += dSᵀ·Q (kept in the thread's tile), dQ_rows += dS·K (in dq itself).
// Five n²d products, where separate dQ and dK/dV passes need seven (S and dP twice). The task
// owns its dQ rows and its dK/dV destination rows: no atomics, the same sums in the same order
// for any thread count. dq, or dk and dv, may be null (not wanted).
void fused_backward_task(const Geometry& g, const float* q, const float* k, const HeadsT& kt, const float* v,
                         const HeadsT& vt, const float* lse, const float* D, const float* dout, int64_t b, int64_t h,
                         int64_t q_begin, int64_t q_end, float* dq, float* dk_dst, float* dv_dst) {
  const int64_t d = g.d, C = g.C;
  const float c = g.scale * kLog2e;
  float* S = thread_tile(2 * kBwdQ * kBwdK + 2 * kBwdK * d);
  float* dP = S + kBwdQ * kBwdK;
  float* dK = dP + kBwdQ * kBwdK;
  float* dV = dK + kBwdK * d;
  if (dq)
    for (int64_t i = q_begin; i < q_end; ++i) std::fill_n(g.row(dq, g.Nq, b, i, h), d, 0.f);
  for (int64_t j0 = 0; j0 < g.Nk; j0 += kBwdK) {
    const int64_t nk = std::min(kBwdK, g.Nk - j0);
    const float* K = g.row(k, g.Nk, b, j0, h);
    const float* V = g.row(v, g.Nk, b, j0, h);
    std::fill(dK, dK + 2 * kBwdK * d, 0.f);
    for (int64_t i0 = q_begin; i0 < q_end; i0 += kBwdQ) {
      const int64_t nq = std::min(kBwdQ, q_end - i0);
      const float* Q = g.row(q, g.Nq, b, i0, h);
      const float* dO = g.row(dout, g.Nq, b, i0, h);
      const float* L = lse + g.lse_index(b, h, i0);
      const float* Di = D + g.lse_index(b, h, i0);
      tile_xyt(nq, nk, d, Q, C, K, C, kt.at(g, b, h, j0), kt.np, S, kBwdK);
      tile_xyt(nq, nk, d, dO, C, V, C, vt.at(g, b, h, j0), vt.np, dP, kBwdK);
      for (int64_t i = 0; i < nq; ++i) probs_and_grads_row(S + i * kBwdK, dP + i * kBwdK, nk, c, L[i] * kLog2e, Di[i]);
      if (dk_dst) {
        tile_ptz_acc(nk, nq, d, S, kBwdK, dO, C, dV, d);
        tile_ptz_acc(nk, nq, d, dP, kBwdK, Q, C, dK, d);
      }
      if (dq) tile_pz_acc(nq, nk, d, dP, kBwdK, K, C, g.row(dq, g.Nq, b, i0, h), C);
    }
    if (!dk_dst) continue;
    for (int64_t j = 0; j < nk; ++j) {
      float* kd = g.row(dk_dst, g.Nk, b, j0 + j, h);
      float* vd = g.row(dv_dst, g.Nk, b, j0 + j, h);
      const float* ka = dK + j * d;
      const float* va = dV + j * d;
#pragma omp simd
      for (int64_t e = 0; e < d; ++e) {
        kd[e] = ka[e] * g.scale;
        vd[e] = va[e];
      }
    }
  }
  if (dq)
    for (int64_t i = q_begin; i < q_end; ++i) {
      float* r = g.row(dq, g.Nq, b, i, h);
#pragma omp simd
      for (int64_t e = 0; e < d; ++e) r[e] *= g.scale;
    }
}

// How many parts the query range is split into (1 = none) when a pass has only `tasks` tasks
// otherwise (cross-attention to a few context tokens; few batch × head pairs): each part gets
// its own dK/dV partial, added in part order afterwards. Shape-dependent only.
int64_t query_parts(const Geometry& g, int64_t tasks) {
  const int64_t query_tiles = (g.Nq + kBwdQ - 1) / kBwdQ;
  if (tasks >= kMinTasks) return 1;
  return std::max<int64_t>(1, std::min(query_tiles, (kMinTasks + tasks - 1) / tasks));
}

int64_t thin_key_tasks(const Geometry& g) { return g.B * g.H * ((g.Nk + kBwdK - 1) / kBwdK); }

// The query parts of each backward path: the thin dK/dV pass has a task per key block, the fused
// pass one per (batch, head).
int64_t backward_query_parts(const Geometry& g) {
  return query_parts(g, use_thin_kernels(g.d) ? thin_key_tasks(g) : g.B * g.H);
}

// Queries [begin, end) of part `sp` of `parts`.
std::pair<int64_t, int64_t> query_part_range(const Geometry& g, int64_t sp, int64_t parts) {
  const int64_t query_tiles = (g.Nq + kBwdQ - 1) / kBwdQ;
  const int64_t tiles_per_part = (query_tiles + parts - 1) / parts;
  const int64_t qb = std::min(g.Nq, sp * tiles_per_part * kBwdQ);
  return {qb, std::min(g.Nq, qb + tiles_per_part * kBwdQ)};
}

// dk, dv = Σ over parts of the partials (layout: dK of part 0, dV of part 0, dK of part 1, …).
void sum_partials(const Geometry& g, int64_t parts, const float* partial, float* dk, float* dv) {
  const int64_t part = g.B * g.Nk * g.C;
  parallel_for(part, 4096, [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      float sk = 0.f, sv = 0.f;
      for (int64_t sp = 0; sp < parts; ++sp) {  // fixed order
        sk += partial[2 * sp * part + e];
        sv += partial[(2 * sp + 1) * part + e];
      }
      dk[e] = sk;
      dv[e] = sv;
    }
  });
}

// The thin kernels' dK/dV pass: block(b, h, j0, nk, q_begin, q_end, dk_dst, dv_dst) computes one
// key block's dK and dV rows.
template <class Block>
void dkdv_pass(const Geometry& g, float* dk, float* dv, float* partial, Block&& block) {
  const int64_t nkb = (g.Nk + kBwdK - 1) / kBwdK;
  const int64_t parts = backward_query_parts(g);
  const int64_t part = g.B * g.Nk * g.C;  // one part's dK (then dV) partial
  const double task_flops = 8.0 * std::min(kBwdK, g.Nk) * double(g.Nq) / parts * g.d;
  parallel_for_balanced(g.B * g.H * nkb * parts, tasks_per_chunk(task_flops), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t sp = t % parts, kb = (t / parts) % nkb, h = (t / (parts * nkb)) % g.H;
      const int64_t b = t / (parts * nkb * g.H);
      const int64_t j0 = kb * kBwdK, nk = std::min(kBwdK, g.Nk - j0);
      const auto [qb, qe] = query_part_range(g, sp, parts);
      float* dk_dst = parts == 1 ? dk : partial + 2 * sp * part;
      float* dv_dst = parts == 1 ? dv : partial + (2 * sp + 1) * part;
      block(b, h, j0, nk, qb, qe, g.row(dk_dst, g.Nk, b, j0, h), g.row(dv_dst, g.Nk, b, j0, h));
    }
  });
  if (parts > 1) sum_partials(g, parts, partial, dk, dv);
}

// The fused pass over (batch, head, query part) tasks; kt, vt are the transposed k and v.
void fused_backward_pass(const Geometry& g, const float* q, const float* k, const HeadsT& kt, const float* v,
                         const HeadsT& vt, const float* lse, const float* D, const float* dout, float* dq, float* dk,
                         float* dv, float* partial) {
  const int64_t parts = backward_query_parts(g);
  const bool split = parts > 1 && dk;
  const int64_t part = g.B * g.Nk * g.C;
  const double task_flops = 10.0 * double(g.Nq) / parts * g.Nk * g.d;
  parallel_for_balanced(g.B * g.H * parts, tasks_per_chunk(task_flops), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t sp = t % parts, h = (t / parts) % g.H, b = t / (parts * g.H);
      const auto [qb, qe] = query_part_range(g, sp, parts);
      float* dk_dst = !dk ? nullptr : split ? partial + 2 * sp * part : dk;
      float* dv_dst = !dk ? nullptr : split ? partial + (2 * sp + 1) * part : dv;
      fused_backward_task(g, q, k, kt, v, vt, lse, D, dout, b, h, qb, qe, dq, dk_dst, dv_dst);
    }
  });
  if (split) sum_partials(g, parts, partial, dk, dv);
}

}  // namespace

int64_t attention_tile_floats(const AttentionShape& s) {
  const int64_t d = s.channels / std::max<int64_t>(s.heads, 1);
  return std::max({kFwdQ * kFwdK + kFwdQ * d + 2 * kFwdQ, 2 * kBwdQ * kBwdK + 2 * kBwdK * d,
                   int64_t(2 * 16 * 128) /* thin kernels' chunk */});
}

// The thin kernels transpose q, the tile kernels k.
int64_t attention_forward_scratch_floats(const AttentionShape& s) {
  const Geometry g(s);
  return heads_t_floats(g, use_thin_kernels(g.d) ? g.Nq : g.Nk);
}

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                       float* lse, float* scratch) {
  const Geometry g(s);
  const bool thin = use_thin_kernels(g.d);
  const HeadsT kt = thin ? HeadsT{} : transpose_heads(g, k, g.Nk, scratch);
  const HeadsT qt = thin ? transpose_heads(g, q, g.Nq, scratch, g.scale * kLog2e) : HeadsT{};
  const int64_t nqb = (g.Nq + kFwdQ - 1) / kFwdQ;
  const double task_flops = 4.0 * std::min(kFwdQ, g.Nq) * double(g.Nk) * g.d;
  parallel_for_balanced(g.B * g.H * nqb, tasks_per_chunk(task_flops), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t qb = t % nqb, h = (t / nqb) % g.H, b = t / (nqb * g.H);
      const int64_t i0 = qb * kFwdQ;
      if (thin) thin_forward_block(g, qt, k, v, out, lse, b, h, i0, std::min(kFwdQ, g.Nq - i0));
      else forward_block(g, q, k, kt, v, out, lse, b, h, i0, std::min(kFwdQ, g.Nq - i0));
    }
  });
}

// Scratch layout: D (B·H·Nq) | dK/dV partials when the query range is split | transposed copies:
// thin kernels q, dO (dQ pass) and k, v (dK/dV pass); the fused pass k, v on the micro-kernel path.
int64_t attention_backward_scratch_floats(const AttentionShape& s) {
  const Geometry g(s);
  const int64_t parts = backward_query_parts(g);
  const int64_t transposed = 2 * heads_t_floats(g, g.Nk) + (use_thin_kernels(g.d) ? 2 * heads_t_floats(g, g.Nq) : 0);
  return g.B * g.H * g.Nq + (parts > 1 ? 2 * parts * g.B * g.Nk * g.C : 0) + transposed;
}

void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv, float* scratch) {
  if ((dk == nullptr) != (dv == nullptr))
    throw std::invalid_argument("attention_backward: dk and dv are computed together; pass both or neither");
  const Geometry g(s);
  const int64_t parts = backward_query_parts(g);
  float* D = scratch;
  float* partial = D + g.B * g.H * g.Nq;
  float* transposed = partial + (parts > 1 ? 2 * parts * g.B * g.Nk * g.C : 0);
  const int64_t tk = heads_t_floats(g, g.Nk), tq = heads_t_floats(g, g.Nq);
  row_dots(g, out, dout, D);
  if (!use_thin_kernels(g.d)) {
    const HeadsT kt = transpose_heads(g, k, g.Nk, transposed);
    const HeadsT vt = transpose_heads(g, v, g.Nk, transposed + tk);
    return fused_backward_pass(g, q, k, kt, v, vt, lse, D, dout, dq, dk, dv, partial);
  }
  const float log2_scale = g.scale * kLog2e;
  if (dq) {  // transposed q (scaled) and dO
    const HeadsT qt = transpose_heads(g, q, g.Nq, transposed, log2_scale);
    const HeadsT dot = transpose_heads(g, dout, g.Nq, transposed + tq);
    const int64_t nqb = (g.Nq + kFwdQ - 1) / kFwdQ;
    const double task_flops = 6.0 * std::min(kFwdQ, g.Nq) * double(g.Nk) * g.d;
    parallel_for_balanced(g.B * g.H * nqb, tasks_per_chunk(task_flops), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t qb = t % nqb, h = (t / nqb) % g.H, b = t / (nqb * g.H);
        const int64_t i0 = qb * kFwdQ;
        thin_dq_block(g, qt, dot, k, v, lse, D, dq, b, h, i0, std::min(kFwdQ, g.Nq - i0));
      }
    });
  }
  if (dk) {  // transposed k (scaled) and v
    const HeadsT kt = transpose_heads(g, k, g.Nk, transposed + 2 * tq, log2_scale);
    const HeadsT vt = transpose_heads(g, v, g.Nk, transposed + 2 * tq + tk);
    dkdv_pass(g, dk, dv, partial, [&](int64_t b, int64_t h, int64_t j0, int64_t nk, int64_t qb, int64_t qe,
                                      float* dk_dst, float* dv_dst) {
      thin_dkdv_block(g, kt, vt, q, dout, lse, D, b, h, j0, nk, qb, qe, dk_dst, dv_dst);
    });
  }
}

}  // namespace cpets::kernels::cpu::CPETS_ISA_NS
