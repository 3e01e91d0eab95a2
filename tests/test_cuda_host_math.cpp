// Host tests of the CUDA kernels' shared __host__ __device__ code (runs on CI, no GPU needed).
//
// The convolution kernels' operand policies and thread → tile maps (kernels/cuda/conv3d_ops.h)
// are run here in an emulation of kernels/cuda/conv3d.cu's implicit_gemm: block by block, each of
// the 256 threads gathers its tile slots, the tiles are multiplied the way the threads (fp32) or
// the warps' mma fragments (tf32, bf16) do, and the results are stored through the same policy.
// The results are compared with a float64 convolution written here. The attention kernels' split
// plan and online-softmax helpers are checked by running the kernels' algorithm (four lanes per
// row, tiles of 64, merge) on the host against kernels/cpu/attention.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention_math.h"
#include "kernels/cuda/conv3d_math.h"
#include "kernels/cuda/conv3d_ops.h"
#include "kernels/cuda/gemm_tile.h"
#include "kernels/cuda/mma_math.h"
#include "kernels/cuda/precision.h"

using namespace cpets::kernels;
using namespace cpets::kernels::cuda;
using namespace cpets::kernels::cuda::conv_tile;

namespace {

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(gen);
  return v;
}

constexpr auto conv_shape = &cpu::Conv3dShape::of;  // (batch, cin, cout, in, kernel, stride, padding)

// ---- operand rounding as the tensor cores see it (cvt.rna.tf32.f32, __float2bfloat16_rn) -------

float round_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x1000u) & 0xffffe000u;  // to nearest, ties away from zero (sign-magnitude)
  std::memcpy(&x, &u, 4);
  return x;
}
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;  // to nearest even
  std::memcpy(&x, &u, 4);
  return x;
}
float round_operand(Precision p, float x) {
  return p == Precision::tf32 ? round_tf32(x) : p == Precision::bf16 ? round_bf16(x) : x;
}

// ---- emulation of implicit_gemm ----------------------------------------------------------------

void emulate_mma_tiles(Precision p, const std::vector<float>& As, const std::vector<float>& Bs, std::vector<float>& acc);

template <class Op>
void emulate_implicit_gemm(const Op& op, Precision p, int64_t max_rows, int layers, int k_chunk) {
  const int grid_m = static_cast<int>((max_rows + kBM - 1) / kBM), grid_n = (op.N + kBN - 1) / kBN;
  std::vector<float> As(kBK * kALd), Bs(kBK * kBLd);
  for (int z = 0; z < layers; ++z) {
    std::vector<Coord3> taps(kMaxTaps);
    REQUIRE(op.taps_in(z) <= kMaxTaps);
    for (int i = 0; i < op.taps_in(z); ++i) taps[i] = op.tap(z, i);
    const int rows = op.rows(z), K = op.reduction(z);
    REQUIRE(rows <= max_rows);
    for (int bx = 0; bx < grid_m; ++bx)
      for (int by = 0; by < grid_n; ++by) {
        const int m0 = bx * kBM, n0 = by * kBN;
        const int k_begin = Op::split_k ? z * k_chunk : 0;
        const int k_end = Op::split_k ? std::min(K, k_begin + k_chunk) : K;
        using AState = decltype(op.a_fixed(0, 0));
        using BState = decltype(op.b_fixed(0, 0));
        std::vector<AState> a_state(kThreads);
        std::vector<BState> b_state(kThreads);
        std::vector<ChannelTap> a_cursor(kThreads, ChannelTap{0, 0}), b_cursor(kThreads, ChannelTap{0, 0});
        std::vector<typename ARowInfoOf<Op>::type> a_rows(kBM);
        if constexpr (Op::a_kfast)
          for (int i = 0; i < kBM; ++i) a_rows[i] = op.a_row_info(m0 + i, taps.data());
        for (int tid = 0; tid < kThreads; ++tid) {
          if constexpr (!Op::a_kfast) {
            a_state[tid] = op.a_fixed(m0 + a_slot(false, tid, 0).index, z);
            a_cursor[tid] = start_channel_tap(k_begin + a_slot(false, tid, 0).k, op.a_taps(a_state[tid]));
          }
          if constexpr (!Op::b_kfast) b_state[tid] = op.b_fixed(n0 + b_slot(false, tid, 0).index, z);
          if constexpr (!Op::b_kfast && Op::b_walk)
            b_cursor[tid] = start_channel_tap(k_begin + b_slot(false, tid, 0).k, op.b_taps(b_state[tid]));
        }
        // acc[m][n] of the tile; the fp32 threads and the mma warps both accumulate per element in
        // k order, the tensor cores in steps of 8 (tf32) or 16 (bf16) products.
        std::vector<float> acc(kBM * kBN, 0.f);
        for (int k0 = k_begin; k0 < k_end; k0 += kBK) {
          for (int tid = 0; tid < kThreads; ++tid) {
            if (Op::a_kfast) {
              int k = k0 + a_slot(true, tid, 0).k;
              a_state[tid] = op.a_fixed(k < k_end ? k : -1, z);
            }
            for (int j = 0; j < kAPerThread; ++j) {
              TileSlot e = a_slot(Op::a_kfast, tid, j);
              float v = 0.f;
              if constexpr (Op::a_kfast) {
                v = op.a_load_row(a_state[tid], a_rows[e.index]);
                REQUIRE(v == op.a_load(a_state[tid], m0 + e.index, taps.data()));  // same element
              } else {
                if (k0 + e.k < k_end) {
                  // The stepped cursor must name the same (channel, tap) as dividing k would.
                  ChannelTap direct = split_channel_tap(k0 + e.k, op.a_taps(a_state[tid]));
                  REQUIRE(direct.channel == a_cursor[tid].channel);
                  REQUIRE(direct.tap == a_cursor[tid].tap);
                  v = op.a_load_at(a_state[tid], a_cursor[tid], taps.data());
                }
                advance_channel_tap(a_cursor[tid], kThreads / kBM, op.a_taps(a_state[tid]));
              }
              As[e.k * kALd + e.index] = round_operand(p, v);
            }
            if (Op::b_kfast) {
              int k = k0 + b_slot(true, tid, 0).k;
              b_state[tid] = op.b_fixed(k < k_end ? k : -1, z);
            }
            for (int j = 0; j < kBPerThread; ++j) {
              TileSlot e = b_slot(Op::b_kfast, tid, j);
              float v = 0.f;
              if constexpr (Op::b_kfast) {
                v = op.b_load(b_state[tid], n0 + e.index, taps.data());
              } else if constexpr (!Op::b_walk) {
                if (k0 + e.k < k_end) v = op.b_load(b_state[tid], k0 + e.k, taps.data());
              } else {
                if (k0 + e.k < k_end) {
                  v = op.b_load_at(b_state[tid], b_cursor[tid], taps.data());
                  REQUIRE(v == op.b_load(b_state[tid], k0 + e.k, taps.data()));  // same element
                }
                advance_channel_tap(b_cursor[tid], kThreads / kBN, op.b_taps(b_state[tid]));
              }
              Bs[e.k * kBLd + e.index] = round_operand(p, v);
            }
          }
          if (p == Precision::fp32_exact) {
            for (int tid = 0; tid < kThreads; ++tid)
              for (int k = 0; k < kBK; ++k)
                for (int i = 0; i < 8; ++i)
                  for (int j = 0; j < 4; ++j) {
                    int r = fp32_row(tid, i), c = fp32_col(tid, j);
                    acc[r * kBN + c] = std::fma(As[k * kALd + r], Bs[k * kBLd + c], acc[r * kBN + c]);
                  }
          } else {
            emulate_mma_tiles(p, As, Bs, acc);
          }
        }
        for (int r = 0; r < kBM; ++r)
          for (int c = 0; c < kBN; ++c)
            if (m0 + r < rows && n0 + c < op.N) op.store(m0 + r, n0 + c, z, acc[r * kBN + c]);
      }
  }
}

// The warps' fragment loads and mma.sync (mma_tile.cuh's warp_mma_k16) on one 16-deep slice:
// warp w multiplies its MI × NI grid of m16n8 tiles at (warp_row(w), warp_col(w)); lane `lane`
// register r of A holds element a_slot(lane, r) of the 16×k tile; D += A·B in double per
// instruction. As is [k][lda], Bs [k][ldb], acc [row][ldc].
template <class WarpRow, class WarpCol>
void emulate_warp_mma(Precision p, const std::vector<float>& As, int lda, const std::vector<float>& Bs, int ldb,
                      int warps, int MI, int NI, WarpRow warp_row_of, WarpCol warp_col_of, std::vector<float>& acc,
                      int ldc) {
  const int step = p == Precision::tf32 ? 8 : 16;
  for (int warp = 0; warp < warps; ++warp) {
    const int wm = warp_row_of(warp), wn = warp_col_of(warp);
    for (int kk = 0; kk < 16; kk += step)
      for (int mi = 0; mi < MI; ++mi)
        for (int ni = 0; ni < NI; ++ni) {
          double A[16][16] = {}, B[16][8] = {};
          for (int lane = 0; lane < 32; ++lane) {
            for (int i = 0; i < (p == Precision::tf32 ? 4 : 8); ++i) {
              RowCol e = p == Precision::tf32 ? tf32_a_slot(lane, i) : bf16_a_slot(lane, i);
              A[e.row][e.col] = As[(kk + e.col) * lda + wm + mi * 16 + e.row];
            }
            for (int i = 0; i < (p == Precision::tf32 ? 2 : 4); ++i) {
              RowCol e = p == Precision::tf32 ? tf32_b_slot(lane, i) : bf16_b_slot(lane, i);
              B[e.row][e.col] = Bs[(kk + e.row) * ldb + wn + ni * 8 + e.col];
            }
          }
          for (int lane = 0; lane < 32; ++lane)
            for (int i = 0; i < 4; ++i) {
              RowCol e = mma_c_slot(lane, i);
              double s = 0;
              for (int k = 0; k < step; ++k) s += A[e.row][k] * B[k][e.col];
              float& d = acc[(wm + mi * 16 + e.row) * ldc + wn + ni * 8 + e.col];
              d = static_cast<float>(d + s);
            }
        }
  }
}

// conv3d.cu's multiply_tile: 8 warps as 4 × 2 of 2 × 4 tiles over the 128×64 tile.
void emulate_mma_tiles(Precision p, const std::vector<float>& As, const std::vector<float>& Bs, std::vector<float>& acc) {
  emulate_warp_mma(p, As, kALd, Bs, kBLd, kThreads / 32, 2, 4, conv_tile::warp_row, conv_tile::warp_col, acc, kBN);
}

// ---- float64 reference and error measure -------------------------------------------------------

struct ConvReference {
  std::vector<double> y, dx, dw, dbias;               // values
  std::vector<double> y_abs, dx_abs, dw_abs;          // Σ |a·b| of each output: the error scale
};

ConvReference reference_conv(const cpu::Conv3dShape& s, const std::vector<float>& x, const std::vector<float>& w,
                             const std::vector<float>& dy) {
  ConvGeom g = to_geom(s);
  ConvReference r;
  r.y.assign(s.batch * s.out_channels * g.out_vox, 0);
  r.y_abs = r.y;
  r.dx.assign(x.size(), 0);
  r.dx_abs = r.dx;
  r.dw.assign(w.size(), 0);
  r.dw_abs = r.dw;
  r.dbias.assign(s.out_channels, 0);
  for (int b = 0; b < g.batch; ++b)
    for (int co = 0; co < g.cout; ++co)
      for (int o = 0; o < g.out_vox; ++o) {
        const Coord3 oc = split_index(o, g.out);
        const int64_t yi = (int64_t(b) * g.cout + co) * g.out_vox + o;
        r.dbias[co] += dy[yi];
        for (int ci = 0; ci < g.cin; ++ci)
          for (int t = 0; t < g.taps; ++t) {
            Coord3 tc = split_index(t, g.kernel);
            int d = oc.d * g.stride[0] - g.pad[0] + tc.d, h = oc.h * g.stride[1] - g.pad[1] + tc.h,
                wq = oc.w * g.stride[2] - g.pad[2] + tc.w;
            if (d < 0 || d >= g.in[0] || h < 0 || h >= g.in[1] || wq < 0 || wq >= g.in[2]) continue;
            const int64_t xi = (int64_t(b) * g.cin + ci) * g.in_vox + (int64_t(d) * g.in[1] + h) * g.in[2] + wq;
            const int64_t wi = (int64_t(co) * g.cin + ci) * g.taps + t;
            r.y[yi] += double(x[xi]) * w[wi];
            r.y_abs[yi] += std::fabs(double(x[xi]) * w[wi]);
            r.dx[xi] += double(dy[yi]) * w[wi];
            r.dx_abs[xi] += std::fabs(double(dy[yi]) * w[wi]);
            r.dw[wi] += double(dy[yi]) * x[xi];
            r.dw_abs[wi] += std::fabs(double(dy[yi]) * x[xi]);
          }
      }
  return r;
}

// Largest |got − want| / (Σ|a·b| + tiny) over all outputs.
double worst_relative_error(const std::vector<float>& got, const std::vector<double>& want,
                            const std::vector<double>& scale) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(got[i] - want[i]) / (scale[i] + 1e-30));
  return worst;
}

// Error bound per output, relative to Σ|a·b|: rounding both operands (unit roundoff u_op each) and
// summing K terms in float.
double bound(Precision p, int64_t K) {
  const double u_op = p == Precision::tf32 ? std::ldexp(1.0, -11) : p == Precision::bf16 ? std::ldexp(1.0, -8) : 0;
  return 2 * u_op + 2 * (K + 2) * std::ldexp(1.0, -24);
}

struct EmulatedConv {
  std::vector<float> y, dx, dw, dbias;
};

EmulatedConv emulate_conv(const cpu::Conv3dShape& s, Precision p, const std::vector<float>& x,
                          const std::vector<float>& w, const std::vector<float>& bias, const std::vector<float>& dy) {
  ConvGeom g = to_geom(s);
  EmulatedConv e;
  const int Kf = g.cin * g.taps;
  // forward: w transposed to (K, Cout), as transpose_weight_forward
  std::vector<float> wt(w.size());
  for (int co = 0; co < g.cout; ++co)
    for (int k = 0; k < Kf; ++k) wt[int64_t(k) * g.cout + co] = w[int64_t(co) * Kf + k];
  e.y.assign(int64_t(g.batch) * g.cout * g.out_vox, NAN);
  ForwardOp fwd{g, x.data(), wt.data(), bias.data(), e.y.data(), g.batch * g.out_vox, g.cout, Kf};
  emulate_implicit_gemm(fwd, p, fwd.M, 1, Kf);
  // backward data: w as (Cout·taps, Cin), as transpose_weight_backward_data
  std::vector<float> wt2(w.size());
  for (int co = 0; co < g.cout; ++co)
    for (int ci = 0; ci < g.cin; ++ci)
      for (int t = 0; t < g.taps; ++t)
        wt2[(int64_t(co) * g.taps + t) * g.cin + ci] = w[(int64_t(co) * g.cin + ci) * g.taps + t];
  e.dx.assign(x.size(), NAN);
  const BackwardDataOp bwd = BackwardDataOp::make(g, dy.data(), wt2.data(), e.dx.data());
  emulate_implicit_gemm(bwd, p, int64_t(g.batch) * data_phase_max_voxels(g), data_phase_count(g), 0);
  // backward weight: split-K partials, then summed in split order, as sum_splits
  SplitK plan = weight_split_plan(g);
  const int64_t mn = int64_t(g.cin) * g.taps * g.cout;
  std::vector<float> partial(plan.splits * mn, NAN);
  BackwardWeightOp bw{g, x.data(), dy.data(), partial.data(), g.cin * g.taps, g.cout, g.batch * g.out_vox};
  emulate_implicit_gemm(bw, p, bw.M, plan.splits, plan.chunk);
  e.dw.assign(mn, 0.f);
  for (int64_t i = 0; i < mn; ++i) {
    float acc = 0.f;
    for (int z = 0; z < plan.splits; ++z) acc += partial[z * mn + i];
    e.dw[i] = acc;
  }
  return e;
}

void check_conv(const cpu::Conv3dShape& s, Precision p, uint32_t seed) {
  ConvGeom g = to_geom(s);
  auto x = random_vector(s.batch * s.in_channels * s.in_voxels(), seed);
  auto w = random_vector(s.out_channels * s.in_channels * s.taps(), seed + 1);
  auto bias = random_vector(s.out_channels, seed + 2);
  auto dy = random_vector(s.batch * s.out_channels * s.out_voxels(), seed + 3);
  ConvReference ref = reference_conv(s, x, w, dy);
  for (int b = 0; b < g.batch; ++b)
    for (int co = 0; co < g.cout; ++co)
      for (int o = 0; o < g.out_vox; ++o) {
        const int64_t i = (int64_t(b) * g.cout + co) * g.out_vox + o;
        ref.y[i] += bias[co];
        ref.y_abs[i] += std::fabs(bias[co]);
      }
  EmulatedConv e = emulate_conv(s, p, x, w, bias, dy);
  INFO("precision " << precision_name(p) << ", " << s.in_channels << "→" << s.out_channels << " in " << s.in[0] << "×"
                    << s.in[1] << "×" << s.in[2] << " kernel " << s.kernel[0] << s.kernel[1] << s.kernel[2]
                    << " stride " << s.stride[0] << s.stride[1] << s.stride[2] << " pad " << s.padding[0]
                    << s.padding[1] << s.padding[2] << ", weight splits " << weight_split_plan(g).splits);
  CHECK(worst_relative_error(e.y, ref.y, ref.y_abs) <= bound(p, s.in_channels * s.taps() + 1));
  CHECK(worst_relative_error(e.dx, ref.dx, ref.dx_abs) <= bound(p, s.out_channels * s.taps()));
  CHECK(worst_relative_error(e.dw, ref.dw, ref.dw_abs) <= bound(p, s.batch * s.out_voxels()));
  // Every output was written (the NaN fill is gone) and none is wildly off.
  for (float v : e.y) REQUIRE(std::isfinite(v));
  for (float v : e.dx) REQUIRE(std::isfinite(v));

  // The narrow direct kernels (FP32 whatever the precision), one call per GPU thread, where the
  // shape takes them.
  if (narrow_forward(g)) {
    std::vector<float> y(e.y.size(), NAN);
    for (int m = 0; m < g.batch * g.out_vox; ++m) narrow_forward_row(g, x.data(), w.data(), bias.data(), y.data(), m);
    CHECK(worst_relative_error(y, ref.y, ref.y_abs) <= bound(Precision::fp32_exact, s.in_channels * s.taps() + 1));
  }
  if (narrow_backward_data(g)) {
    std::vector<float> dx(e.dx.size(), NAN);
    for (int m = 0; m < g.batch * g.in_vox; ++m) narrow_backward_data_row(g, dy.data(), w.data(), dx.data(), m);
    CHECK(worst_relative_error(dx, ref.dx, ref.dx_abs) <= bound(Precision::fp32_exact, s.out_channels * s.taps()));
  }
  if (narrow_backward_weight(g)) {
    SplitK plan = weight_split_plan(g);
    const int M = g.cin * g.taps, K = g.batch * g.out_vox;
    std::vector<float> partial(int64_t(plan.splits) * M * g.cout, NAN), dw(M * g.cout, 0.f);
    for (int z = 0; z < plan.splits; ++z)
      for (int m = 0; m < M; ++m)
        narrow_backward_weight_row(g, x.data(), dy.data(), partial.data(), m, z, z * plan.chunk,
                                   std::min(K, (z + 1) * plan.chunk));
    for (size_t i = 0; i < dw.size(); ++i)
      for (int z = 0; z < plan.splits; ++z) dw[i] += partial[z * dw.size() + i];
    CHECK(worst_relative_error(dw, ref.dw, ref.dw_abs) <= bound(Precision::fp32_exact, s.batch * s.out_voxels()));
  }
}

}  // namespace

// ---- index math ------------------------------------------------------------------------------------

TEST_CASE("conv index math: forward and backward-data gathers are inverse to each other") {
  for (auto s : {conv_shape(1, 1, 1, {7, 6, 5}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}),
                 conv_shape(1, 1, 1, {9, 8, 7}, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}),
                 conv_shape(1, 1, 1, {8, 7, 9}, {4, 3, 3}, {2, 1, 1}, {1, 1, 1}),
                 conv_shape(1, 1, 1, {5, 6, 7}, {3, 1, 2}, {1, 2, 3}, {2, 0, 1})}) {
    ConvGeom g = to_geom(s);
    int64_t pairs = 0;
    std::set<std::pair<int, int>> forward_pairs;  // (input voxel, output voxel · taps + tap)
    for (int o = 0; o < g.out_vox; ++o)
      for (int t = 0; t < g.taps; ++t) {
        int i = forward_source(g, forward_origin(g, split_index(o, g.out)), split_index(t, g.kernel));
        if (i < 0) continue;
        forward_pairs.insert({i, o * g.taps + t});
        ++pairs;
      }
    int64_t back_pairs = 0;
    for (int i = 0; i < g.in_vox; ++i)
      for (int t = 0; t < g.taps; ++t) {
        int o = backward_data_source(g, backward_data_origin(g, split_index(i, g.in)), split_index(t, g.kernel));
        if (o < 0) continue;
        CHECK(forward_pairs.count({i, o * g.taps + t}) == 1);
        ++back_pairs;
      }
    CHECK(back_pairs == pairs);
    CHECK(pairs == static_cast<int64_t>(forward_pairs.size()));
  }
}

TEST_CASE("conv index math: the backward-data phases partition the voxels and hold exactly their valid taps") {
  for (auto s : {conv_shape(1, 1, 1, {9, 8, 7}, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}),
                 conv_shape(1, 1, 1, {7, 6, 9}, {3, 1, 2}, {2, 3, 1}, {1, 0, 1}),
                 conv_shape(1, 1, 1, {1, 5, 4}, {1, 3, 3}, {2, 2, 1}, {0, 1, 0}),  // a phase past the input
                 conv_shape(1, 1, 1, {6, 6, 6}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1})}) {
    ConvGeom g = to_geom(s);
    std::vector<int> seen(g.in_vox, 0);
    for (int z = 0; z < data_phase_count(g); ++z) {
      DataPhase ph = data_phase(g, z);
      CHECK(ph.voxels <= data_phase_max_voxels(g));
      std::set<int> phase_taps;
      for (int j = 0; j < ph.tap_count; ++j) phase_taps.insert(join_index(data_phase_tap(g, ph, j), g.kernel));
      CHECK(static_cast<int>(phase_taps.size()) == ph.tap_count);
      for (int v = 0; v < ph.voxels; ++v) {
        Coord3 c = data_phase_voxel(g, ph, v);
        REQUIRE(c.d < g.in[0]);
        REQUIRE(c.h < g.in[1]);
        REQUIRE(c.w < g.in[2]);
        const int i = join_index(c, g.in);
        ++seen[i];
        // A tap reaches this voxel from some output only if it is one of the phase's taps.
        for (int t = 0; t < g.taps; ++t)
          if (backward_data_source(g, backward_data_origin(g, c), split_index(t, g.kernel)) >= 0)
            CHECK(phase_taps.count(t) == 1);
      }
    }
    CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
  }
}

TEST_CASE("conv index math: split and join of voxel indices round-trip") {
  const int dims[3] = {5, 7, 3};
  for (int v = 0; v < 5 * 7 * 3; ++v) CHECK(join_index(split_index(v, dims), dims) == v);
  ChannelTap ct = split_channel_tap(3 * 27 + 13, 27);
  CHECK(ct.channel == 3);
  CHECK(ct.tap == 13);
}

TEST_CASE("split-K plan covers K exactly, in whole tiles, within its limits") {
  for (int64_t K : {1, 15, 16, 17, 255, 256, 1000, 294912, 2359296})
    for (int64_t tiles : {1, 3, 14, 27, 600}) {
      SplitK p = plan_split_k(K, tiles, kBK, kTargetBlocks, 64, 8);
      INFO("K " << K << " tiles " << tiles);
      CHECK(p.chunk % kBK == 0);
      CHECK(p.splits >= 1);
      CHECK(p.splits <= 64);
      CHECK(int64_t(p.splits) * p.chunk >= K);
      CHECK(int64_t(p.splits - 1) * p.chunk < K);
      if (p.splits > 1) CHECK(p.chunk >= 8 * kBK);
    }
}

TEST_CASE("mma fragment layouts: every tile element sits in exactly one (lane, slot)") {
  auto covers = [](auto slot, int slots, int rows, int cols) {
    std::vector<int> seen(rows * cols, 0);
    for (int lane = 0; lane < 32; ++lane)
      for (int i = 0; i < slots; ++i) {
        RowCol e = slot(lane, i);
        REQUIRE(e.row >= 0);
        REQUIRE(e.row < rows);
        REQUIRE(e.col >= 0);
        REQUIRE(e.col < cols);
        ++seen[e.row * cols + e.col];
      }
    return std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; });
  };
  CHECK(covers(tf32_a_slot, 4, 16, 8));
  CHECK(covers(tf32_b_slot, 2, 8, 8));
  CHECK(covers(bf16_a_slot, 8, 16, 16));
  CHECK(covers(bf16_b_slot, 4, 16, 8));
  CHECK(covers(mma_c_slot, 4, 16, 8));
  // Spot values from the PTX ISA tables: lane 5 (group 1, thread 1).
  CHECK(tf32_a_slot(5, 3).row == 9);
  CHECK(tf32_a_slot(5, 3).col == 5);
  CHECK(bf16_a_slot(5, 5).row == 1);
  CHECK(bf16_a_slot(5, 5).col == 11);
  CHECK(bf16_b_slot(5, 2).row == 10);
  CHECK(mma_c_slot(5, 3).row == 9);
  CHECK(mma_c_slot(5, 3).col == 3);
}

TEST_CASE("conv tile maps: the 256 threads cover each operand tile and the C tile exactly once") {
  for (bool kfast : {false, true}) {
    std::vector<int> a(kBK * kBM, 0), b(kBK * kBN, 0);
    for (int tid = 0; tid < kThreads; ++tid) {
      for (int j = 0; j < kAPerThread; ++j) {
        TileSlot e = a_slot(kfast, tid, j);
        REQUIRE(e.k < kBK);
        REQUIRE(e.index < kBM);
        ++a[e.k * kBM + e.index];
        CHECK(e.k == a_slot(kfast, tid, 0).k + (kfast ? 0 : 2 * j));  // k-fast: one k per thread
      }
      for (int j = 0; j < kBPerThread; ++j) {
        TileSlot e = b_slot(kfast, tid, j);
        REQUIRE(e.k < kBK);
        REQUIRE(e.index < kBN);
        ++b[e.k * kBN + e.index];
      }
    }
    CHECK(std::all_of(a.begin(), a.end(), [](int c) { return c == 1; }));
    CHECK(std::all_of(b.begin(), b.end(), [](int c) { return c == 1; }));
  }
  std::vector<int> c(kBM * kBN, 0);
  for (int tid = 0; tid < kThreads; ++tid)
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 4; ++j) ++c[fp32_row(tid, i) * kBN + fp32_col(tid, j)];
  CHECK(std::all_of(c.begin(), c.end(), [](int v) { return v == 1; }));
  std::fill(c.begin(), c.end(), 0);
  for (int warp = 0; warp < 8; ++warp)
    for (int lane = 0; lane < 32; ++lane)
      for (int mi = 0; mi < 2; ++mi)
        for (int ni = 0; ni < 4; ++ni)
          for (int r = 0; r < 4; ++r) {
            RowCol e = mma_c_slot(lane, r);
            ++c[(warp_row(warp) + mi * 16 + e.row) * kBN + warp_col(warp) + ni * 8 + e.col];
          }
  CHECK(std::all_of(c.begin(), c.end(), [](int v) { return v == 1; }));
}

TEST_CASE("operand rounding: tf32 keeps 10 mantissa bits, bf16 7") {
  CHECK(round_tf32(1.0f + std::ldexp(1.f, -11)) == 1.0f + std::ldexp(1.f, -10));  // tie: away from zero
  CHECK(round_tf32(1.0f + std::ldexp(1.f, -12)) == 1.0f);
  CHECK(round_bf16(1.0f + std::ldexp(1.f, -8)) == 1.0f);                           // tie: to even
  CHECK(round_bf16(1.0f + 3 * std::ldexp(1.f, -8)) == 1.0f + std::ldexp(1.f, -6));
}

// ---- the convolution kernels, emulated ----------------------------------------------------------------

TEST_CASE("emulated implicit-GEMM conv3d, fp32: forward, backward data and weight match float64") {
  // Odd sizes, stride 2, padding, kernels 1, 3 and 4, a split-K weight gradient, several M tiles.
  check_conv(conv_shape(2, 3, 5, {7, 9, 8}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}), Precision::fp32_exact, 1);
  check_conv(conv_shape(1, 4, 3, {9, 7, 10}, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}), Precision::fp32_exact, 2);
  check_conv(conv_shape(2, 5, 70, {5, 6, 7}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}), Precision::fp32_exact, 3);
  check_conv(conv_shape(1, 3, 4, {8, 7, 6}, {4, 3, 3}, {2, 1, 1}, {1, 1, 1}), Precision::fp32_exact, 4);
  check_conv(conv_shape(1, 2, 3, {6, 5, 9}, {3, 2, 1}, {1, 2, 3}, {2, 0, 1}), Precision::fp32_exact, 5);
}

TEST_CASE("emulated implicit-GEMM conv3d, tf32 and bf16: within the operand-rounding bound") {
  for (Precision p : {Precision::tf32, Precision::bf16}) {
    check_conv(conv_shape(2, 3, 5, {7, 9, 8}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}), p, 11);
    check_conv(conv_shape(1, 4, 3, {9, 7, 10}, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}), p, 12);
    check_conv(conv_shape(1, 6, 66, {4, 5, 6}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}), p, 13);
  }
}

TEST_CASE("emulated conv3d, fp32, the model's first conv (1→64, 3³ pad 1) on a small volume") {
  check_conv(conv_shape(2, 1, 64, {6, 8, 6}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}), Precision::fp32_exact, 21);
}

TEST_CASE("narrow conv3d kernels (N ≤ 8): output heads, single-channel inputs, strided and split") {
  // 32→1 output head, 1→64 discriminator input (4³ stride 2), 5→3 odd, 3→8 with a split dW.
  check_conv(conv_shape(2, 32, 1, {6, 8, 6}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}), Precision::fp32_exact, 31);
  check_conv(conv_shape(1, 1, 64, {9, 8, 10}, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}), Precision::fp32_exact, 32);
  check_conv(conv_shape(1, 5, 3, {7, 6, 9}, {3, 2, 3}, {2, 1, 2}, {1, 0, 2}), Precision::fp32_exact, 33);
  ConvGeom big = to_geom(conv_shape(2, 3, 8, {20, 22, 21}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}));
  CHECK(weight_split_plan(big).splits > 1);
  check_conv(conv_shape(2, 3, 8, {20, 22, 21}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}), Precision::fp32_exact, 34);
}

// ---- attention: the kernels' algorithm on the host ------------------------------------------------

namespace {

// Forward of one (b, h) as flash_forward does it: four lanes per query, lane s takes keys s, s+4, …
// of each 64-key tile, online softmax per lane, then the merge with merge_weight.
void emulate_attention_forward(const cpu::AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                               float* lse) {
  using namespace attn;
  const int64_t C = s.channels, d = s.head_dim();
  const float scale2 = 1.f / std::sqrt(float(d)) * kLog2e;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.nq; ++i) {
        float m[kLanesPerRow], l[kLanesPerRow];
        std::vector<float> o(kLanesPerRow * d, 0.f);
        const float* qi = q + (b * s.nq + i) * C + h * d;
        for (int lane = 0; lane < kLanesPerRow; ++lane) {
          m[lane] = -INFINITY;
          l[lane] = 0.f;
          for (int64_t k0 = 0; k0 < s.nk; k0 += kTile) {
            float sc[kPerLane], tile_max = -INFINITY;
            for (int jj = 0; jj < kPerLane; ++jj) {
              int64_t j = k0 + jj * kLanesPerRow + lane;
              sc[jj] = -INFINITY;
              if (j < s.nk) {
                float acc = 0.f;
                for (int64_t c = 0; c < d; ++c) acc = std::fma(qi[c] * scale2, k[(b * s.nk + j) * C + h * d + c], acc);
                sc[jj] = acc;
              }
              tile_max = std::max(tile_max, sc[jj]);
            }
            float alpha = online_rescale(m[lane], tile_max);
            l[lane] *= alpha;
            for (int64_t c = 0; c < d; ++c) o[lane * d + c] *= alpha;
            if (m[lane] == -INFINITY) continue;
            for (int jj = 0; jj < kPerLane; ++jj) {
              int64_t j = k0 + jj * kLanesPerRow + lane;
              float pj = exp2f(sc[jj] - m[lane]);
              l[lane] += pj;
              if (j < s.nk)
                for (int64_t c = 0; c < d; ++c) o[lane * d + c] = std::fma(pj, v[(b * s.nk + j) * C + h * d + c], o[lane * d + c]);
            }
          }
        }
        float m_all = std::max(std::max(m[0], m[1]), std::max(m[2], m[3]));
        float wgt[kLanesPerRow], l_all = 0.f;
        for (int lane = 0; lane < kLanesPerRow; ++lane) wgt[lane] = merge_weight(m[lane], m_all);
        l_all = (l[0] * wgt[0] + l[1] * wgt[1]) + (l[2] * wgt[2] + l[3] * wgt[3]);
        for (int64_t c = 0; c < d; ++c) {
          float oc = (o[0 * d + c] * wgt[0] + o[1 * d + c] * wgt[1]) + (o[2 * d + c] * wgt[2] + o[3 * d + c] * wgt[3]);
          out[(b * s.nq + i) * C + h * d + c] = oc / l_all;
        }
        lse[(b * s.heads + h) * s.nq + i] = (m_all + std::log2(l_all)) * kLn2;
      }
}

}  // namespace

// ---- our SGEMM (kernels/cuda/gemm.cu), emulated ------------------------------------------------

struct GemmCase {
  bool ta, tb;
  int64_t batch, M, N, K;
  float alpha, beta;
  bool share_b;  // stride_b = 0: every batch multiplies by the same B
};

// sgemm_batched as gemm.cu runs it: the split plan, per block the 256 threads' loads into the
// padded k-major tiles (rounded to the precision), the fp32 threads' FMAs in k order or the
// warps' mma tiles, the stores through alpha/beta or into the split partials, and the combine
// kernel's in-order sum. Row-major operands with the tightest leading dimensions.
std::vector<float> emulate_sgemm(Precision p, const GemmCase& g, const std::vector<float>& A,
                                 const std::vector<float>& B, std::vector<float> C) {
  namespace gt = gemm_tile;
  const int64_t M = g.M, N = g.N, K = g.K;
  const int64_t lda = g.ta ? M : K, ldb = g.tb ? K : N, ldc = N;
  const int64_t sa = M * K, sb = g.share_b ? 0 : K * N, sc = M * N;
  const gt::SplitPlan plan = gt::split_plan(g.batch, M, N, K);
  const int ld = gt::lead(p);
  std::vector<float> partial(plan.splits > 1 ? g.batch * plan.splits * M * N : 0, NAN);
  for (int64_t z = 0; z < g.batch * plan.splits; ++z) {
    const int64_t b = z / plan.splits, part = z % plan.splits;
    const float* Ab = A.data() + b * sa;
    const float* Bb = B.data() + b * sb;
    const int64_t k_begin = part * plan.chunk, k_end = std::min(K, k_begin + plan.chunk);
    for (int64_t m0 = 0; m0 < M; m0 += gt::kBM)
      for (int64_t n0 = 0; n0 < N; n0 += gt::kBN) {
        std::vector<float> acc(gt::kBM * gt::kBN, 0.f);
        for (int64_t k0 = k_begin; k0 < k_end; k0 += gt::kBK) {
          std::vector<float> As(gt::kBK * ld, NAN), Bs(gt::kBK * ld, NAN);
          for (int t = 0; t < gt::kThreads; ++t)
            for (int j = 0; j < gt::kLoadsPerThread; ++j) {
              const gt::Slot a = gt::a_slot(g.ta, t, j);
              const int64_t gm = m0 + a.index, gk = k0 + a.k;
              As[a.k * ld + a.index] =
                  round_operand(p, (gm < M && gk < k_end) ? (g.ta ? Ab[gk * lda + gm] : Ab[gm * lda + gk]) : 0.f);
              const gt::Slot e = gt::b_slot(g.tb, t, j);
              const int64_t gn = n0 + e.index, gk2 = k0 + e.k;
              Bs[e.k * ld + e.index] =
                  round_operand(p, (gn < N && gk2 < k_end) ? (g.tb ? Bb[gn * ldb + gk2] : Bb[gk2 * ldb + gn]) : 0.f);
            }
          if (p == Precision::fp32_exact) {
            for (int t = 0; t < gt::kThreads; ++t)
              for (int kk = 0; kk < gt::kBK; ++kk)
                for (int i = 0; i < 4; ++i)
                  for (int j = 0; j < 4; ++j) {
                    const int r = gt::fp32_row(t, i), c = gt::fp32_col(t, j);
                    acc[r * gt::kBN + c] = std::fma(As[kk * ld + r], Bs[kk * ld + c], acc[r * gt::kBN + c]);
                  }
          } else {
            emulate_warp_mma(p, As, ld, Bs, ld, gt::kThreads / 32, gt::kWarpTilesM, gt::kWarpTilesN, gt::warp_row,
                             gt::warp_col, acc, gt::kBN);
          }
        }
        for (int r = 0; r < gt::kBM; ++r)
          for (int c = 0; c < gt::kBN; ++c) {
            const int64_t m = m0 + r, n = n0 + c;
            if (m >= M || n >= N) continue;
            const float v = acc[r * gt::kBN + c];
            if (plan.splits > 1) {
              partial[(z * M + m) * N + n] = v;
            } else {
              float& dst = C[b * sc + m * ldc + n];
              dst = g.beta == 0.f ? g.alpha * v : g.alpha * v + g.beta * dst;
            }
          }
      }
  }
  if (plan.splits > 1)
    for (int64_t b = 0; b < g.batch; ++b)
      for (int64_t mn = 0; mn < M * N; ++mn) {
        float s = 0.f;
        for (int64_t q = 0; q < plan.splits; ++q) s += partial[(b * plan.splits + q) * M * N + mn];
        float& dst = C[b * sc + mn];
        dst = g.beta == 0.f ? g.alpha * s : g.alpha * s + g.beta * dst;
      }
  return C;
}

void check_sgemm(Precision p, const GemmCase& g, uint32_t seed) {
  const int64_t M = g.M, N = g.N, K = g.K;
  const std::vector<float> A = random_vector(g.batch * M * K, seed), B = random_vector(g.batch * K * N, seed + 1),
                           C0 = random_vector(g.batch * M * N, seed + 2);
  const std::vector<float> C = emulate_sgemm(p, g, A, B, C0);
  std::vector<double> want(C.size()), scale(C.size());
  for (int64_t b = 0; b < g.batch; ++b)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0, s_abs = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double a = g.ta ? A[b * M * K + k * M + m] : A[b * M * K + m * K + k];
          const int64_t bb = g.share_b ? 0 : b * K * N;
          const double v = g.tb ? B[bb + n * K + k] : B[bb + k * N + n];
          s += a * v;
          s_abs += std::fabs(a * v);
        }
        const int64_t i = (b * M + m) * N + n;
        want[i] = g.alpha * s + g.beta * double(C0[i]);
        scale[i] = std::fabs(g.alpha) * s_abs + std::fabs(g.beta * double(C0[i]));
      }
  INFO("precision " << precision_name(p) << (g.ta ? " Aᵀ" : " A") << (g.tb ? "·Bᵀ" : "·B") << ", batch " << g.batch
                    << " " << M << "×" << N << "×" << K << ", splits " << gemm_tile::split_plan(g.batch, M, N, K).splits);
  CHECK(worst_relative_error(C, want, scale) <= bound(p, K + 2));
  for (float v : C) REQUIRE(std::isfinite(v));
}

TEST_CASE("SGEMM tile maps: the 256 threads load each operand tile once, warps and threads cover C once") {
  namespace gt = gemm_tile;
  for (bool trans : {false, true}) {
    std::vector<int> a(gt::kBK * gt::kBM, 0), b(gt::kBK * gt::kBN, 0);
    for (int t = 0; t < gt::kThreads; ++t)
      for (int j = 0; j < gt::kLoadsPerThread; ++j) {
        const gt::Slot ea = gt::a_slot(trans, t, j), eb = gt::b_slot(trans, t, j);
        REQUIRE((ea.k < gt::kBK && ea.index < gt::kBM && eb.k < gt::kBK && eb.index < gt::kBN));
        ++a[ea.k * gt::kBM + ea.index];
        ++b[eb.k * gt::kBN + eb.index];
      }
    CHECK(std::all_of(a.begin(), a.end(), [](int c) { return c == 1; }));
    CHECK(std::all_of(b.begin(), b.end(), [](int c) { return c == 1; }));
  }
  std::vector<int> c(gt::kBM * gt::kBN, 0);
  for (int t = 0; t < gt::kThreads; ++t)
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) ++c[gt::fp32_row(t, i) * gt::kBN + gt::fp32_col(t, j)];
  CHECK(std::all_of(c.begin(), c.end(), [](int v) { return v == 1; }));
  std::fill(c.begin(), c.end(), 0);
  for (int warp = 0; warp < gt::kThreads / 32; ++warp)
    for (int lane = 0; lane < 32; ++lane)
      for (int mi = 0; mi < gt::kWarpTilesM; ++mi)
        for (int ni = 0; ni < gt::kWarpTilesN; ++ni)
          for (int r = 0; r < 4; ++r) {
            RowCol e = mma_c_slot(lane, r);
            ++c[(gt::warp_row(warp) + mi * 16 + e.row) * gt::kBN + gt::warp_col(warp) + ni * 8 + e.col];
          }
  CHECK(std::all_of(c.begin(), c.end(), [](int v) { return v == 1; }));
  // The tensor-core tiles' leading dimension puts a fragment load's 32 lanes in 32 banks.
  CHECK(gt::lead(Precision::tf32) % 32 == 8);
  CHECK(gt::lead(Precision::bf16) % 32 == 8);
}

TEST_CASE("emulated SGEMM, fp32, tf32 and bf16: every transpose, edge tiles, batches, split K, alpha/beta") {
  const std::vector<GemmCase> cases = {
      {false, false, 1, 7, 5, 13, 1.f, 0.f, false},       {false, true, 2, 70, 67, 45, 1.f, 0.f, false},
      {true, false, 3, 33, 65, 17, 0.5f, 0.25f, true},     {true, true, 1, 64, 64, 32, -1.f, 1.f, false},
      {false, true, 1, 33, 20, 5000, 1.f, 0.f, false} /* split K */,
      {true, false, 2, 17, 9, 4100, 0.5f, 0.5f, false} /* split K with beta */};
  CHECK(gemm_tile::split_plan(1, 33, 20, 5000).splits > 1);
  CHECK(gemm_tile::split_plan(2, 17, 9, 4100).splits > 1);
  uint32_t seed = 700;
  for (Precision p : {Precision::fp32_exact, Precision::tf32, Precision::bf16})
    for (const GemmCase& g : cases) check_sgemm(p, g, seed += 3);
}

TEST_CASE("attention split plan: query chunks cover Nq in whole tiles") {
  using namespace attn;
  for (int64_t nq : {1, 63, 64, 65, 2304})
    for (int64_t nk : {1, 8, 33, 2304}) {
      QuerySplit p = plan_query_split(2, 4, nq, nk);
      INFO("nq " << nq << " nk " << nk);
      CHECK(p.chunk % kTile == 0);
      CHECK(int64_t(p.splits) * p.chunk >= nq);
      CHECK(int64_t(p.splits - 1) * p.chunk < nq);
      CHECK(p.splits <= 64);
    }
  CHECK(plan_query_split(2, 4, 2304, 2304).splits == 1);  // self-attention fills the GPU by itself
  CHECK(plan_query_split(2, 4, 2304, 8).splits > 1);      // cross-attention to 8 tokens is split
  CHECK(padded_head_dim(8) == 8);
  CHECK(padded_head_dim(9) == 16);
  CHECK(padded_head_dim(32) == 32);
  CHECK(padded_head_dim(65) == 0);
}

TEST_CASE("attention: the kernels' lane-split online softmax matches kernels/cpu") {
  struct Case {
    int64_t batch, nq, nk, channels, heads;
  };
  for (Case c : {Case{2, 70, 130, 32, 4}, Case{1, 33, 1, 16, 2}, Case{2, 65, 8, 24, 3}, Case{1, 5, 200, 64, 2}}) {
    cpu::AttentionShape s{c.batch, c.nq, c.nk, c.channels, c.heads};
    auto q = random_vector(s.batch * s.nq * s.channels, 31);
    auto k = random_vector(s.batch * s.nk * s.channels, 32);
    auto v = random_vector(s.batch * s.nk * s.channels, 33);
    for (auto& x : q) x *= 3.f;  // peaked rows: the running max matters
    std::vector<float> out(q.size()), lse(s.batch * s.heads * s.nq), out_ref(q.size()), lse_ref(lse.size());
    std::vector<float> scratch(cpu::attention_forward_scratch_floats(s));
    cpu::attention_forward(s, q.data(), k.data(), v.data(), out_ref.data(), lse_ref.data(), scratch.data());
    emulate_attention_forward(s, q.data(), k.data(), v.data(), out.data(), lse.data());
    INFO("Nq " << s.nq << " Nk " << s.nk << " C " << s.channels << " heads " << s.heads);
    for (size_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == doctest::Approx(out_ref[i]).epsilon(2e-5).scale(1));
    for (size_t i = 0; i < lse.size(); ++i) REQUIRE(lse[i] == doctest::Approx(lse_ref[i]).epsilon(1e-5).scale(1));
  }
}

TEST_CASE("attention online softmax helpers: rescale and merge weights") {
  using namespace attn;
  float m = -INFINITY;
  CHECK(online_rescale(m, -INFINITY) == 1.f);  // nothing seen: state untouched
  CHECK(m == -INFINITY);
  CHECK(online_rescale(m, 2.f) == 0.f);  // first tile: the empty state is scaled away
  CHECK(m == 2.f);
  CHECK(online_rescale(m, 1.f) == 1.f);  // smaller tile max: no change
  CHECK(online_rescale(m, 3.f) == doctest::Approx(0.5f));
  CHECK(m == 3.f);
  CHECK(merge_weight(-INFINITY, 1.f) == 0.f);
  CHECK(merge_weight(1.f, 2.f) == doctest::Approx(0.5f));
}
