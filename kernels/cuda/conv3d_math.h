// Index math of the implicit-GEMM convolution kernels (kernels/cuda/conv3d.cu), written once as
// __host__ __device__ functions so that CI, which has no GPU, tests exactly what the kernels run
// (tests/test_cuda_host_math.cpp rebuilds every pass on the host from these functions and
// compares with kernels/cpu). The mma.sync fragment layouts are in mma_math.h.
//
// Coordinates are 32-bit: the host entry points check that voxel counts and GEMM sizes fit.
#pragma once
#include <cstdint>

#include "kernels/cuda/hd.h"

// Unrolling hint for the device pass only (the host compiler would warn about the pragma).
#if defined(__CUDA_ARCH__)
#define CPETS_UNROLL _Pragma("unroll")
#else
#define CPETS_UNROLL
#endif

namespace cpets::kernels::cuda {

// A Conv3dShape in the 32-bit form the kernels use.
struct ConvGeom {
  int batch = 1, cin = 1, cout = 1;
  int in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, kernel[3] = {1, 1, 1}, stride[3] = {1, 1, 1}, pad[3] = {0, 0, 0};
  int taps = 1;     // kD·kH·kW
  int in_vox = 1;   // D·H·W
  int out_vox = 1;  // oD·oH·oW
};

struct Coord3 {
  int d, h, w;
};

// Voxel index within one (D, H, W) volume → coordinates (W fastest).
CPETS_HD Coord3 split_index(int v, const int dims[3]) {
  int w = v % dims[2];
  int r = v / dims[2];
  return {r / dims[1], r % dims[1], w};
}

CPETS_HD int join_index(Coord3 c, const int dims[3]) { return (c.d * dims[1] + c.h) * dims[2] + c.w; }

// The implicit GEMMs' reduction index k = channel · taps + tap, as in the weight layout.
struct ChannelTap {
  int channel, tap;
};
CPETS_HD ChannelTap split_channel_tap(int k, int taps) {
  int c = k / taps;
  return {c, k - c * taps};
}

// Steps (channel, tap) by `step` reduction indices without dividing: the row-fast gathers walk
// their k in fixed steps. taps ≤ 0 (an empty phase) leaves it alone.
CPETS_HD void advance_channel_tap(ChannelTap& c, int step, int taps) {
  if (taps <= 0) return;
  c.tap += step;
  while (c.tap >= taps) {
    c.tap -= taps;
    ++c.channel;
  }
}
CPETS_HD ChannelTap start_channel_tap(int k, int taps) { return taps > 0 ? split_channel_tap(k, taps) : ChannelTap{0, 0}; }

// Forward (and weight-gradient) gather: the input coordinate under tap (0,0,0) of output voxel o.
CPETS_HD Coord3 forward_origin(const ConvGeom& g, Coord3 o) {
  return {o.d * g.stride[0] - g.pad[0], o.h * g.stride[1] - g.pad[1], o.w * g.stride[2] - g.pad[2]};
}

// The input voxel that tap t of an output voxel with origin `org` reads, or −1 in the padding.
CPETS_HD int forward_source(const ConvGeom& g, Coord3 org, Coord3 t) {
  int d = org.d + t.d, h = org.h + t.h, w = org.w + t.w;
  if (static_cast<unsigned>(d) >= static_cast<unsigned>(g.in[0]) ||
      static_cast<unsigned>(h) >= static_cast<unsigned>(g.in[1]) ||
      static_cast<unsigned>(w) >= static_cast<unsigned>(g.in[2]))
    return -1;
  return (d * g.in[1] + h) * g.in[2] + w;
}

// Backward-data gather: input voxel i receives dy[o] · w[tap] from the output voxel o with
// o · stride − pad + tap = i. origin = i + pad; the output coordinate on one axis is
// (origin − tap) / stride when that divides exactly and lands inside the output, else none (−1).
CPETS_HD Coord3 backward_data_origin(const ConvGeom& g, Coord3 i) {
  return {i.d + g.pad[0], i.h + g.pad[1], i.w + g.pad[2]};
}

CPETS_HD int backward_axis(int origin, int tap, int stride, int out) {
  int num = origin - tap;
  if (num < 0) return -1;
  int o = num / stride;
  if (o * stride != num || o >= out) return -1;
  return o;
}

CPETS_HD int backward_data_source(const ConvGeom& g, Coord3 org, Coord3 t) {
  int d = backward_axis(org.d, t.d, g.stride[0], g.out[0]);
  int h = backward_axis(org.h, t.h, g.stride[1], g.out[1]);
  int w = backward_axis(org.w, t.w, g.stride[2], g.out[2]);
  if ((d | h | w) < 0) return -1;
  return (d * g.out[1] + h) * g.out[2] + w;
}

// Backward data by output phase: with stride s, input voxel i only receives taps t with
// t ≡ i + pad (mod s) on each axis. Grouping the input voxels by their residue r = i mod s (the
// phase, numbered like a (s0, s1, s2) volume) gives s0·s1·s2 dense sub-problems whose taps are
// all valid — no multiplications by the zeros between strided outputs.
struct DataPhase {
  Coord3 residue;  // first input coordinate of the phase on each axis
  int count[3];    // input voxels of the phase per axis (0 if the residue is past the input)
  Coord3 tap0;     // first tap of the phase per axis
  int taps[3];     // taps of the phase per axis: tap0, tap0 + s, … < kernel
  int voxels;      // count[0]·count[1]·count[2]
  int tap_count;   // taps[0]·taps[1]·taps[2]
};
CPETS_HD int data_phase_count(const ConvGeom& g) { return g.stride[0] * g.stride[1] * g.stride[2]; }
CPETS_HD DataPhase data_phase(const ConvGeom& g, int z) {
  DataPhase ph;
  ph.residue = split_index(z, g.stride);
  const int r[3] = {ph.residue.d, ph.residue.h, ph.residue.w};
  int t0[3];
  for (int a = 0; a < 3; ++a) {
    const int s = g.stride[a];
    ph.count[a] = r[a] < g.in[a] ? (g.in[a] - r[a] + s - 1) / s : 0;
    t0[a] = (r[a] + g.pad[a]) % s;
    ph.taps[a] = t0[a] < g.kernel[a] ? (g.kernel[a] - t0[a] + s - 1) / s : 0;
  }
  ph.tap0 = {t0[0], t0[1], t0[2]};
  ph.voxels = ph.count[0] * ph.count[1] * ph.count[2];
  ph.tap_count = ph.taps[0] * ph.taps[1] * ph.taps[2];
  return ph;
}
// Input coordinate of the phase's local voxel v, and kernel coordinate of its local tap j.
CPETS_HD Coord3 data_phase_voxel(const ConvGeom& g, const DataPhase& ph, int v) {
  Coord3 l = split_index(v, ph.count);
  return {ph.residue.d + g.stride[0] * l.d, ph.residue.h + g.stride[1] * l.h, ph.residue.w + g.stride[2] * l.w};
}
CPETS_HD Coord3 data_phase_tap(const ConvGeom& g, const DataPhase& ph, int j) {
  Coord3 l = split_index(j, ph.taps);
  return {ph.tap0.d + g.stride[0] * l.d, ph.tap0.h + g.stride[1] * l.h, ph.tap0.w + g.stride[2] * l.w};
}
// The largest phase (residue 0 on every axis): sets the grid's M extent.
CPETS_HD int data_phase_max_voxels(const ConvGeom& g) { return data_phase(g, 0).voxels; }

// Split-K plan of the weight gradient: `splits` chunks of `chunk` reduction indices each (a
// multiple of the K tile), the last one possibly shorter. Depends on the sizes only.
struct SplitK {
  int splits, chunk;
};
CPETS_HD SplitK plan_split_k(int64_t K, int64_t tiles_mn, int k_tile, int target_blocks, int max_splits,
                             int min_tiles_per_split) {
  int64_t k_tiles = (K + k_tile - 1) / k_tile;
  int64_t want = (target_blocks + tiles_mn - 1) / tiles_mn;
  int64_t most = k_tiles / min_tiles_per_split;
  if (want > most) want = most;
  if (want > max_splits) want = max_splits;
  if (want < 1) want = 1;
  int64_t chunk_tiles = (k_tiles + want - 1) / want;
  int chunk = static_cast<int>(chunk_tiles * k_tile);
  int splits = static_cast<int>((K + chunk - 1) / chunk);
  return {splits < 1 ? 1 : splits, chunk};
}

}  // namespace cpets::kernels::cuda
