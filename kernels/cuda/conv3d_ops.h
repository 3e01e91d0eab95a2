// The operand policies of the implicit-GEMM convolution (kernels/cuda/conv3d.cu) and the
// thread → tile-element maps of its mainloop, as __host__ __device__ code: the kernel runs them on
// the GPU and tests/test_cuda_host_math.cpp runs the very same functions in a host emulation of
// the kernel (tile by tile, thread by thread) against kernels/cpu.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/cpu/conv3d.h"
#include "kernels/cuda/conv3d_math.h"

#if defined(__CUDA_ARCH__)
#define CPETS_LDG(p) __ldg(p)
#else
#define CPETS_LDG(p) (*(p))
#endif

namespace cpets::kernels::cuda::conv_tile {

constexpr int kBM = 128, kBN = 64, kBK = 16, kThreads = 256;
constexpr int kALd = kBM + 8;  // padded rows: the fragment loads of 32 lanes hit 32 banks
constexpr int kBLd = kBN + 8;
constexpr int kMaxTaps = 125;
constexpr int kAPerThread = kBM * kBK / kThreads;  // 8
constexpr int kBPerThread = kBN * kBK / kThreads;  // 4
// Blocks the weight gradient's split-K aims for: ~4 per SM on an H100 (132 SMs). A constant, so
// the plan (and so the summation order) never depends on the device.
constexpr int kTargetBlocks = 528;

// Which element of the 16-deep operand tile thread `tid` gathers in its slot j: (k, row) for A,
// (k, column) for B. Row-fast: consecutive threads take consecutive rows and keep them for the
// whole loop; k-fast: consecutive threads take consecutive k (consecutive voxels).
struct TileSlot {
  int k, index;
};
CPETS_HD TileSlot a_slot(bool kfast, int tid, int j) {
  return kfast ? TileSlot{tid % kBK, tid / kBK + (kThreads / kBK) * j} : TileSlot{tid / kBM + (kThreads / kBM) * j, tid % kBM};
}
CPETS_HD TileSlot b_slot(bool kfast, int tid, int j) {
  return kfast ? TileSlot{tid % kBK, tid / kBK + (kThreads / kBK) * j} : TileSlot{tid / kBN + (kThreads / kBN) * j, tid % kBN};
}

// fp32 path: thread tid owns rows fp32_row(tid, i), i < 8, and columns fp32_col(tid, j), j < 4,
// of the 128×64 tile (two float4 groups of rows, one of columns).
CPETS_HD int fp32_row(int tid, int i) { return (i < 4 ? 0 : 64) + (tid % 16) * 4 + (i & 3); }
CPETS_HD int fp32_col(int tid, int j) { return (tid / 16) * 4 + j; }

// Tensor-core path: warp w owns the 32×32 block at (warp_row(w), warp_col(w)): 2 m16 × 4 n8 tiles.
CPETS_HD int warp_row(int warp) { return (warp % 4) * 32; }
CPETS_HD int warp_col(int warp) { return (warp / 4) * 32; }

}  // namespace cpets::kernels::cuda::conv_tile

namespace cpets::kernels::cuda {

// A Conv3dShape in the kernels' 32-bit form (the caller has checked that it fits).
inline ConvGeom to_geom(const cpets::kernels::cpu::Conv3dShape& s) {
  ConvGeom g;
  g.batch = static_cast<int>(s.batch);
  g.cin = static_cast<int>(s.in_channels);
  g.cout = static_cast<int>(s.out_channels);
  for (int a = 0; a < 3; ++a) {
    g.in[a] = static_cast<int>(s.in[a]);
    g.out[a] = static_cast<int>(s.out_size(a));
    g.kernel[a] = static_cast<int>(s.kernel[a]);
    g.stride[a] = static_cast<int>(s.stride[a]);
    g.pad[a] = static_cast<int>(s.padding[a]);
  }
  g.taps = static_cast<int>(s.taps());
  g.in_vox = static_cast<int>(s.in_voxels());
  g.out_vox = static_cast<int>(s.out_voxels());
  return g;
}

// Narrow convolutions: when the GEMM's N side (Cout for the forward and the weight gradient, Cin
// for the data gradient) is at most kNarrow, a 128×64 tile would waste ≥ 7/8 of its products (the
// model's 32→1 output convolutions, the discriminator's 1→64 input). Those passes run direct
// kernels instead, one thread per output row with all N channels in registers, in FP32 whatever
// the precision asked for (they are bound by the gathers, not by the multiplies).
constexpr int kNarrow = 8;
constexpr int kNarrowThreads = 256;
inline bool narrow_forward(const ConvGeom& g) { return g.cout <= kNarrow; }
inline bool narrow_backward_data(const ConvGeom& g) { return g.cin <= kNarrow; }
inline bool narrow_backward_weight(const ConvGeom& g) { return g.cout <= kNarrow; }

// The weight gradient's split over its reduction (B·oD·oH·oW): at most 64 chunks of at least 8
// K steps (GEMM) or 8 × 256 positions (narrow) each.
inline SplitK weight_split_plan(const ConvGeom& g) {
  using namespace conv_tile;
  const int64_t M = static_cast<int64_t>(g.cin) * g.taps, N = g.cout, K = static_cast<int64_t>(g.batch) * g.out_vox;
  if (narrow_backward_weight(g))
    return plan_split_k(K, (M + kNarrowThreads - 1) / kNarrowThreads, 256, kTargetBlocks, 64, 8);
  return plan_split_k(K, ((M + kBM - 1) / kBM) * ((N + kBN - 1) / kBN), kBK, kTargetBlocks, 64, 8);
}

// The shared per-row gather info of k-fast A operands (a placeholder for the others).
template <class Op, bool = Op::a_kfast>
struct ARowInfoOf {
  using type = char;
};
template <class Op>
struct ARowInfoOf<Op, true> {
  using type = typename Op::ARowInfo;
};

// ---- narrow direct kernels, per thread -----------------------------------------------------------

// y[b, ·, voxel] for output row m = (b, voxel), every output channel (Cout ≤ kNarrow).
CPETS_HD void narrow_forward_row(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y, int m) {
  float acc[kNarrow];
  CPETS_UNROLL
  for (int co = 0; co < kNarrow; ++co) acc[co] = 0.f;
  const int b = m / g.out_vox, o = m - b * g.out_vox;
  const Coord3 org = forward_origin(g, split_index(o, g.out));
  const float* xb = x + static_cast<int64_t>(b) * g.cin * g.in_vox;
  const int K = g.cin * g.taps;
  for (int t = 0; t < g.taps; ++t) {
    const int src = forward_source(g, org, split_index(t, g.kernel));
    if (src < 0) continue;
    for (int ci = 0; ci < g.cin; ++ci) {
      const float xv = CPETS_LDG(xb + static_cast<int64_t>(ci) * g.in_vox + src);
      const int k = ci * g.taps + t;
CPETS_UNROLL
      for (int co = 0; co < kNarrow; ++co)
        if (co < g.cout) acc[co] = fmaf(xv, CPETS_LDG(w + static_cast<int64_t>(co) * K + k), acc[co]);
    }
  }
  CPETS_UNROLL
  for (int co = 0; co < kNarrow; ++co)  // constant bounds keep acc in registers
    if (co < g.cout)
      y[(static_cast<int64_t>(b) * g.cout + co) * g.out_vox + o] = acc[co] + (bias ? CPETS_LDG(bias + co) : 0.f);
}

// dx[b, ·, voxel] for input row m = (b, voxel), every input channel (Cin ≤ kNarrow).
CPETS_HD void narrow_backward_data_row(const ConvGeom& g, const float* dy, const float* w, float* dx, int m) {
  float acc[kNarrow];
  CPETS_UNROLL
  for (int ci = 0; ci < kNarrow; ++ci) acc[ci] = 0.f;
  const int b = m / g.in_vox, i = m - b * g.in_vox;
  const Coord3 org = backward_data_origin(g, split_index(i, g.in));
  const float* dyb = dy + static_cast<int64_t>(b) * g.cout * g.out_vox;
  for (int t = 0; t < g.taps; ++t) {
    const int src = backward_data_source(g, org, split_index(t, g.kernel));
    if (src < 0) continue;
    for (int co = 0; co < g.cout; ++co) {
      const float dv = CPETS_LDG(dyb + static_cast<int64_t>(co) * g.out_vox + src);
CPETS_UNROLL
      for (int ci = 0; ci < kNarrow; ++ci)
        if (ci < g.cin) acc[ci] = fmaf(dv, CPETS_LDG(w + (static_cast<int64_t>(co) * g.cin + ci) * g.taps + t), acc[ci]);
    }
  }
  CPETS_UNROLL
  for (int ci = 0; ci < kNarrow; ++ci)
    if (ci < g.cin) dx[(static_cast<int64_t>(b) * g.cin + ci) * g.in_vox + i] = acc[ci];
}

// Partial dw[·, ci, tap] over positions [k_begin, k_end) of B·oD·oH·oW for row m = (ci, tap),
// every output channel (Cout ≤ kNarrow), into partial[(split · Cout + co) · M + m]. The output
// coordinates are stepped incrementally (no divisions in the loop).
CPETS_HD void narrow_backward_weight_row(const ConvGeom& g, const float* x, const float* dy, float* partial, int m,
                                         int split, int k_begin, int k_end) {
  float acc[kNarrow];
  CPETS_UNROLL
  for (int co = 0; co < kNarrow; ++co) acc[co] = 0.f;
  const ChannelTap ct = split_channel_tap(m, g.taps);
  const Coord3 t = split_index(ct.tap, g.kernel);
  int b = k_begin / g.out_vox;
  int o = k_begin - b * g.out_vox;
  Coord3 oc = split_index(o, g.out);
  for (int k = k_begin; k < k_end; ++k) {
    const int src = forward_source(g, forward_origin(g, oc), t);
    if (src >= 0) {
      const float xv = CPETS_LDG(x + (static_cast<int64_t>(b) * g.cin + ct.channel) * g.in_vox + src);
      const float* dyp = dy + static_cast<int64_t>(b) * g.cout * g.out_vox + o;
CPETS_UNROLL
      for (int co = 0; co < kNarrow; ++co)
        if (co < g.cout) acc[co] = fmaf(xv, CPETS_LDG(dyp + static_cast<int64_t>(co) * g.out_vox), acc[co]);
    }
    // next output voxel: w fastest, then h, d, then the next sample
    ++o;
    if (++oc.w == g.out[2]) {
      oc.w = 0;
      if (++oc.h == g.out[1]) {
        oc.h = 0;
        if (++oc.d == g.out[0]) {
          oc.d = 0;
          o = 0;
          ++b;
        }
      }
    }
  }
  const int M = g.cin * g.taps;
  CPETS_UNROLL
  for (int co = 0; co < kNarrow; ++co)
    if (co < g.cout) partial[(static_cast<int64_t>(split) * g.cout + co) * M + m] = acc[co];
}

}  // namespace cpets::kernels::cuda

namespace cpets::kernels::cuda {

// ---- operand policies -------------------------------------------------------------------------
//
// Each policy describes one GEMM layer per blockIdx.z: rows(z) × N outputs reduced over
// reduction(z); with split_k the layers are chunks of one reduction (the kernel takes
// [z·chunk, (z+1)·chunk)), otherwise independent problems each reduced whole. taps_in(z) / tap(z, i)
// fill the block's shared tap table; a_fixed/b_fixed set up a gather state that a_load/b_load
// use (see conv3d.cu for which index is fixed); store(m, n, z, v) writes one result.

// Forward: A(m = (b, output voxel), k = (ci, tap)) = x gathered; B(k, n = co) = w transposed to
// (K, Cout) in the workspace; C → y[b, co, voxel] + bias.
struct ForwardOp {
  static constexpr bool a_kfast = false, b_kfast = false, split_k = false;
  static constexpr bool b_walk = false;  // B is indexed by k directly (no division to save)
  ConvGeom g;
  const float* x;
  const float* wt;
  const float* bias;
  float* y;
  int M, N, K;

  CPETS_HD int rows(int) const { return M; }
  CPETS_HD int reduction(int) const { return K; }
  CPETS_HD int taps_in(int) const { return g.taps; }
  CPETS_HD Coord3 tap(int, int i) const { return split_index(i, g.kernel); }

  struct ARow {
    const float* base;  // x of this row's sample
    Coord3 origin;
    bool valid;
  };
  CPETS_HD ARow a_fixed(int m, int) const {
    if (m < 0 || m >= M) return {x, {0, 0, 0}, false};
    int b = m / g.out_vox;
    Coord3 o = split_index(m - b * g.out_vox, g.out);
    return {x + static_cast<int64_t>(b) * g.cin * g.in_vox, forward_origin(g, o), true};
  }
  CPETS_HD float a_load(const ARow& r, int k, const Coord3* taps) const {
    if (!r.valid || k >= K) return 0.f;
    return a_load_at(r, split_channel_tap(k, g.taps), taps);
  }
  // Row-fast walk: the caller keeps (channel, tap) of its k and steps it (advance_channel_tap).
  CPETS_HD int a_taps(const ARow&) const { return g.taps; }
  CPETS_HD float a_load_at(const ARow& r, ChannelTap ct, const Coord3* taps) const {
    if (!r.valid) return 0.f;
    int src = forward_source(g, r.origin, taps[ct.tap]);
    return src < 0 ? 0.f : CPETS_LDG(r.base + static_cast<int64_t>(ct.channel) * g.in_vox + src);
  }
  CPETS_HD int b_fixed(int n, int) const { return n; }
  CPETS_HD float b_load(int n, int k, const Coord3*) const {
    return (n < N && k < K) ? CPETS_LDG(wt + static_cast<int64_t>(k) * N + n) : 0.f;
  }
  CPETS_HD void store(int m, int n, int, float v) const {
    int b = m / g.out_vox;
    int o = m - b * g.out_vox;
    y[(static_cast<int64_t>(b) * N + n) * g.out_vox + o] = v + (bias ? CPETS_LDG(bias + n) : 0.f);
  }
};

// Backward data, one layer per output phase (data_phase): A(m = (b, phase voxel), k = (co, phase
// tap)) = dy gathered; B(k, n = ci) = w transposed to (Cout·taps, Cin), read at the phase's taps;
// C → dx[b, ci, voxel]. Stride 1 has a single phase holding every voxel and tap.
struct BackwardDataOp {
  static constexpr bool a_kfast = false, b_kfast = false, split_k = false;
  static constexpr bool b_walk = true;  // B walks (co, phase tap) like A
  static constexpr int kCachedPhases = 8;  // strides up to 2 on every axis
  ConvGeom g;
  const float* dy;
  const float* wt;
  float* dx;
  int N;                                // Cin
  DataPhase cached[kCachedPhases];      // data_phase(g, z) for z < 8, filled by make()

  static BackwardDataOp make(const ConvGeom& g, const float* dy, const float* wt, float* dx) {
    BackwardDataOp op{g, dy, wt, dx, g.cin, {}};
    for (int z = 0; z < kCachedPhases && z < data_phase_count(g); ++z) op.cached[z] = data_phase(g, z);
    return op;
  }
  CPETS_HD DataPhase phase(int z) const { return z < kCachedPhases ? cached[z] : data_phase(g, z); }

  CPETS_HD int rows(int z) const { return g.batch * phase(z).voxels; }
  CPETS_HD int reduction(int z) const { return g.cout * phase(z).tap_count; }
  CPETS_HD int taps_in(int z) const { return phase(z).tap_count; }
  CPETS_HD Coord3 tap(int z, int i) const { return data_phase_tap(g, phase(z), i); }

  struct ARow {
    const float* base;
    Coord3 origin;
    int taps;  // taps of the phase
    bool valid;
  };
  CPETS_HD ARow a_fixed(int m, int z) const {
    const DataPhase ph = phase(z);
    if (m < 0 || m >= g.batch * ph.voxels) return {dy, {0, 0, 0}, ph.tap_count, false};
    int b = m / ph.voxels;
    Coord3 i = data_phase_voxel(g, ph, m - b * ph.voxels);
    return {dy + static_cast<int64_t>(b) * g.cout * g.out_vox, backward_data_origin(g, i), ph.tap_count, true};
  }
  CPETS_HD float a_load(const ARow& r, int k, const Coord3* taps) const {
    if (!r.valid || k >= g.cout * r.taps) return 0.f;
    return a_load_at(r, split_channel_tap(k, r.taps), taps);
  }
  CPETS_HD int a_taps(const ARow& r) const { return r.taps; }
  CPETS_HD float a_load_at(const ARow& r, ChannelTap ct, const Coord3* taps) const {
    if (!r.valid) return 0.f;
    int src = backward_data_source(g, r.origin, taps[ct.tap]);
    return src < 0 ? 0.f : CPETS_LDG(r.base + static_cast<int64_t>(ct.channel) * g.out_vox + src);
  }
  struct BCol {
    int n, taps;
  };
  CPETS_HD BCol b_fixed(int n, int z) const { return {n, phase(z).tap_count}; }
  CPETS_HD float b_load(const BCol& c, int k, const Coord3* taps) const {
    if (c.n >= N || k >= g.cout * c.taps) return 0.f;
    return b_load_at(c, split_channel_tap(k, c.taps), taps);
  }
  // Column-fast walk, as the row-fast A walk: (co, phase tap) stepped without divisions.
  CPETS_HD int b_taps(const BCol& c) const { return c.taps; }
  CPETS_HD float b_load_at(const BCol& c, ChannelTap ct, const Coord3* taps) const {
    if (c.n >= N) return 0.f;
    const int tap = join_index(taps[ct.tap], g.kernel);
    return CPETS_LDG(wt + (static_cast<int64_t>(ct.channel) * g.taps + tap) * N + c.n);
  }
  CPETS_HD void store(int m, int n, int z, float v) const {
    const DataPhase ph = phase(z);
    int b = m / ph.voxels;
    int i = join_index(data_phase_voxel(g, ph, m - b * ph.voxels), g.in);
    dx[(static_cast<int64_t>(b) * N + n) * g.in_vox + i] = v;
  }
};

// Backward weight, computed transposed so that the long side (Cin·taps) is M:
// A(m = (ci, tap), k = (b, output voxel)) = x gathered; B(k, n = co) = dy; C → the split's slice
// of the partial sums, laid out as dw (co, ci·taps + tap).
struct BackwardWeightOp {
  static constexpr bool a_kfast = true, b_kfast = true, split_k = true;
  static constexpr bool b_walk = false;
  ConvGeom g;
  const float* x;
  const float* dy;
  float* partial;  // splits × (Cout, Cin·taps); dw itself when there is one split
  int M, N, K;

  CPETS_HD int rows(int) const { return M; }
  CPETS_HD int reduction(int) const { return K; }
  CPETS_HD int taps_in(int) const { return g.taps; }
  CPETS_HD Coord3 tap(int, int i) const { return split_index(i, g.kernel); }

  struct APos {
    const float* base;
    Coord3 origin;
    bool valid;
  };
  CPETS_HD APos a_fixed(int k, int) const {
    if (k < 0 || k >= K) return {x, {0, 0, 0}, false};
    int b = k / g.out_vox;
    Coord3 o = split_index(k - b * g.out_vox, g.out);
    return {x + static_cast<int64_t>(b) * g.cin * g.in_vox, forward_origin(g, o), true};
  }
  CPETS_HD float a_load(const APos& p, int m, const Coord3* taps) const {
    if (!p.valid || m >= M) return 0.f;
    ChannelTap ct = split_channel_tap(m, g.taps);
    int src = forward_source(g, p.origin, taps[ct.tap]);
    return src < 0 ? 0.f : CPETS_LDG(p.base + static_cast<int64_t>(ct.channel) * g.in_vox + src);
  }
  // The k-fast rows of a block never change, so what row m = (ci, tap) adds to the gather is
  // worked out once per block into shared memory (offset < 0: a row past M).
  struct ARowInfo {
    int64_t offset;  // ci · D·H·W
    Coord3 tap;
  };
  CPETS_HD ARowInfo a_row_info(int m, const Coord3* taps) const {
    if (m >= M) return {-1, {0, 0, 0}};
    ChannelTap ct = split_channel_tap(m, g.taps);
    return {static_cast<int64_t>(ct.channel) * g.in_vox, taps[ct.tap]};
  }
  CPETS_HD float a_load_row(const APos& p, const ARowInfo& r) const {
    if (!p.valid || r.offset < 0) return 0.f;
    int src = forward_source(g, p.origin, r.tap);
    return src < 0 ? 0.f : CPETS_LDG(p.base + r.offset + src);
  }
  CPETS_HD const float* b_fixed(int k, int) const {
    if (k < 0 || k >= K) return nullptr;
    int b = k / g.out_vox;
    return dy + static_cast<int64_t>(b) * g.cout * g.out_vox + (k - b * g.out_vox);
  }
  CPETS_HD float b_load(const float* p, int n, const Coord3*) const {
    return (p && n < N) ? CPETS_LDG(p + static_cast<int64_t>(n) * g.out_vox) : 0.f;
  }
  CPETS_HD void store(int m, int n, int split, float v) const {
    partial[(static_cast<int64_t>(split) * N + n) * M + m] = v;
  }
};

}  // namespace cpets::kernels::cuda
