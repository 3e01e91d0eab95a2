// Implicit-GEMM 3-D convolution (see conv3d.h for the contract and conv3d_math.h for the index
// math). One mainloop, `implicit_gemm`, serves the three passes; each pass is an "operand policy"
// struct that says how to gather an element of A (M×K) and B (K×N) and where a result goes.
//
// Tiling: 256 threads compute a 128×64 tile of C, K in steps of 16. The next K step's operands are
// loaded into registers while the current shared-memory tile is multiplied, then stored into the
// other of two shared buffers (one barrier per step). An operand is gathered either "row-fast"
// (consecutive threads take consecutive rows; each thread keeps one row for the whole loop, so its
// index arithmetic is done once) or "k-fast" (consecutive threads take consecutive k, i.e.
// consecutive voxels, which is what makes the weight gradient's loads coalesce).
//   fp32_exact: each thread owns an 8×4 block of C and does FFMAs from float4 shared loads.
//   tf32/bf16:  8 warps as 4 (M) × 2 (N), each a 32×32 block of m16n8 mma.sync tiles; operands
//               are rounded once when stored to shared memory.
#include "kernels/cuda/conv3d.h"

#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv3d_math.h"
#include "kernels/cuda/conv3d_ops.h"
#include "kernels/cuda/mma_tile.cuh"

namespace cpets::kernels::cuda {
namespace {

using detail::cdiv;
using detail::require;

using namespace conv_tile;

// ---- the mainloop -------------------------------------------------------------------------------

template <Precision P>
struct Accumulators;

template <>
struct Accumulators<Precision::fp32_exact> {
  float c[8][4];  // rows (tid % 16)·4 + {0..3} and 64 + ..., columns (tid / 16)·4 + {0..3}
};
template <>
struct Accumulators<Precision::tf32> {
  float c[2][4][4];  // [m16 tile][n8 tile][slot]
};
template <>
struct Accumulators<Precision::bf16> {
  float c[2][4][4];
};

template <Precision P>
__device__ __forceinline__ void multiply_tile(Accumulators<P>& acc, const float (*As)[kALd], const float (*Bs)[kBLd]) {
  const int tid = threadIdx.x;
  if constexpr (P == Precision::fp32_exact) {
    const int tm = fp32_row(tid, 0), tn = fp32_col(tid, 0);
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      float4 a0 = *reinterpret_cast<const float4*>(&As[k][tm]);
      float4 a1 = *reinterpret_cast<const float4*>(&As[k][64 + tm]);
      float4 b = *reinterpret_cast<const float4*>(&Bs[k][tn]);
      const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc.c[i][j] = fmaf(av[i], bv[j], acc.c[i][j]);
    }
  } else {
    const int warp = tid / 32;
    detail::warp_mma_k16<P>(acc.c, As, Bs, warp_row(warp), warp_col(warp));
  }
}

template <Precision P, class Op>
__device__ __forceinline__ void store_tile(const Op& op, const Accumulators<P>& acc, int m0, int n0, int z, int rows) {
  const int tid = threadIdx.x;
  if constexpr (P == Precision::fp32_exact) {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        int m = m0 + fp32_row(tid, i), n = n0 + fp32_col(tid, j);
        if (m < rows && n < op.N) op.store(m, n, z, acc.c[i][j]);
      }
  } else {
    const int warp = tid / 32;
    detail::warp_mma_store(acc.c, warp_row(warp), warp_col(warp), [&](int r, int c, float v) {
      int m = m0 + r, n = n0 + c;
      if (m < rows && n < op.N) op.store(m, n, z, v);
    });
  }
}

// At most 80 registers so that 3 blocks (24 warps) share an SM: the gathers need latency hiding.
// C tile (blockIdx.x, blockIdx.y) of layer blockIdx.z: for split-K policies the K chunk z of
// length k_chunk, otherwise the whole reduction of problem z.
template <Precision P, class Op>
__global__ void __launch_bounds__(kThreads, 3) implicit_gemm(Op op, int k_chunk) {
  __shared__ __align__(16) float As[2][kBK][kALd];
  __shared__ __align__(16) float Bs[2][kBK][kBLd];
  __shared__ Coord3 taps[kMaxTaps];
  const int tid = threadIdx.x;
  const int z = blockIdx.z;
  for (int i = tid; i < op.taps_in(z); i += kThreads) taps[i] = op.tap(z, i);
  __syncthreads();

  const int m0 = blockIdx.x * kBM, n0 = blockIdx.y * kBN;
  __shared__ typename ARowInfoOf<Op>::type a_rows[kBM];  // k-fast A: per-row gather info
  if constexpr (Op::a_kfast) {
    for (int i = tid; i < kBM; i += kThreads) a_rows[i] = op.a_row_info(m0 + i, taps);
    __syncthreads();
  }
  const int rows = op.rows(z), K = op.reduction(z);
  const int k_begin = Op::split_k ? z * k_chunk : 0;
  const int k_end = Op::split_k ? min(K, k_begin + k_chunk) : K;

  // Row-fast operands keep their row's gather state for the whole loop; k-fast ones set it up
  // once per K step (every slot of a thread shares one k).
  decltype(op.a_fixed(0, 0)) a_state{};
  decltype(op.b_fixed(0, 0)) b_state{};
  ChannelTap a_cursor{0, 0};  // row-fast: (channel, tap) of the thread's next k, stepped without divisions
  if constexpr (!Op::a_kfast) {
    a_state = op.a_fixed(m0 + a_slot(false, tid, 0).index, z);
    a_cursor = start_channel_tap(k_begin + a_slot(false, tid, 0).k, op.a_taps(a_state));
  }
  ChannelTap b_cursor{0, 0};  // column-fast B of policies with b_walk: the same walk
  if constexpr (!Op::b_kfast) b_state = op.b_fixed(n0 + b_slot(false, tid, 0).index, z);
  if constexpr (!Op::b_kfast && Op::b_walk)
    b_cursor = start_channel_tap(k_begin + b_slot(false, tid, 0).k, op.b_taps(b_state));

  float a_reg[kAPerThread], b_reg[kBPerThread];
  auto load = [&](int k0) {
    if constexpr (Op::a_kfast) {
      int k = k0 + a_slot(true, tid, 0).k;
      a_state = op.a_fixed(k < k_end ? k : -1, z);
    }
#pragma unroll
    for (int j = 0; j < kAPerThread; ++j) {
      TileSlot e = a_slot(Op::a_kfast, tid, j);
      if constexpr (Op::a_kfast)
        a_reg[j] = op.a_load_row(a_state, a_rows[e.index]);
      else {
        a_reg[j] = k0 + e.k < k_end ? op.a_load_at(a_state, a_cursor, taps) : 0.f;
        advance_channel_tap(a_cursor, kThreads / kBM, op.a_taps(a_state));  // the next slot's k
      }
    }
    if constexpr (Op::b_kfast) {
      int k = k0 + b_slot(true, tid, 0).k;
      b_state = op.b_fixed(k < k_end ? k : -1, z);
    }
#pragma unroll
    for (int j = 0; j < kBPerThread; ++j) {
      TileSlot e = b_slot(Op::b_kfast, tid, j);
      if constexpr (Op::b_kfast)
        b_reg[j] = op.b_load(b_state, n0 + e.index, taps);
      else if constexpr (!Op::b_walk)
        b_reg[j] = k0 + e.k < k_end ? op.b_load(b_state, k0 + e.k, taps) : 0.f;
      else {
        b_reg[j] = k0 + e.k < k_end ? op.b_load_at(b_state, b_cursor, taps) : 0.f;
        advance_channel_tap(b_cursor, kThreads / kBN, op.b_taps(b_state));
      }
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int j = 0; j < kAPerThread; ++j) {
      TileSlot e = a_slot(Op::a_kfast, tid, j);
      As[buf][e.k][e.index] = detail::round_operand<P>(a_reg[j]);
    }
#pragma unroll
    for (int j = 0; j < kBPerThread; ++j) {
      TileSlot e = b_slot(Op::b_kfast, tid, j);
      Bs[buf][e.k][e.index] = detail::round_operand<P>(b_reg[j]);
    }
  };

  Accumulators<P> acc;
  float* flat = reinterpret_cast<float*>(&acc);
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(acc) / sizeof(float)); ++i) flat[i] = 0.f;

  if (k_begin < k_end) {
    load(k_begin);
    store(0);
    __syncthreads();
    int buf = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += kBK) {
      const bool more = k0 + kBK < k_end;
      if (more) load(k0 + kBK);  // in flight while the tensor/CUDA cores work on `buf`
      multiply_tile<P>(acc, As[buf], Bs[buf]);
      if (more) store(buf ^ 1);
      __syncthreads();
      buf ^= 1;
    }
  }
  store_tile<P>(op, acc, m0, n0, z, rows);
}

// ---- small helper kernels ---------------------------------------------------------------------

// wt[k, co] = w[co, k]: the forward's B operand with Cout contiguous.
__global__ void transpose_weight_forward(const float* w, float* wt, int cout, int K) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<int64_t>(cout) * K) return;
  int k = static_cast<int>(i / cout), co = static_cast<int>(i % cout);
  wt[i] = w[static_cast<int64_t>(co) * K + k];
}

// wt[(co, tap), ci] = w[co, ci, tap]: the backward-data B operand with Cin contiguous.
__global__ void transpose_weight_backward_data(const float* w, float* wt, int cout, int cin, int taps) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  int64_t total = static_cast<int64_t>(cout) * cin * taps;
  if (i >= total) return;
  int ci = static_cast<int>(i % cin);
  int64_t r = i / cin;
  int tap = static_cast<int>(r % taps), co = static_cast<int>(r / taps);
  wt[i] = w[(static_cast<int64_t>(co) * cin + ci) * taps + tap];
}

// out[i] = Σ_s partial[s][i], s in increasing order: the deterministic end of split-K.
__global__ void sum_splits(const float* partial, float* out, int64_t n, int splits) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  float s = 0.f;
  for (int z = 0; z < splits; ++z) s += partial[z * n + i];
  out[i] = s;
}

// dbias[co] = Σ_{b, voxel} dy[b, co, voxel]: one block per channel, each thread a fixed strided
// subset, then a fixed tree in shared memory — the same order on every run.
constexpr int kBiasThreads = 512;
__global__ void __launch_bounds__(kBiasThreads) bias_gradient(const float* dy, float* dbias, int batch, int cout,
                                                              int vox) {
  __shared__ float part[kBiasThreads];
  const int co = blockIdx.x;
  float s = 0.f;
  for (int b = 0; b < batch; ++b) {
    const float* p = dy + (static_cast<int64_t>(b) * cout + co) * vox;
    for (int i = threadIdx.x; i < vox; i += kBiasThreads) s += __ldg(p + i);
  }
  part[threadIdx.x] = s;
  __syncthreads();
  for (int width = kBiasThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) part[threadIdx.x] += part[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) dbias[co] = part[0];
}

// ---- narrow direct kernels (N ≤ kNarrow; see conv3d_ops.h) -----------------------------------------

__global__ void __launch_bounds__(kNarrowThreads) narrow_forward_kernel(ConvGeom g, const float* x, const float* w,
                                                                       const float* bias, float* y, int rows) {
  const int m = blockIdx.x * kNarrowThreads + threadIdx.x;
  if (m < rows) narrow_forward_row(g, x, w, bias, y, m);
}

__global__ void __launch_bounds__(kNarrowThreads) narrow_backward_data_kernel(ConvGeom g, const float* dy,
                                                                             const float* w, float* dx, int rows) {
  const int m = blockIdx.x * kNarrowThreads + threadIdx.x;
  if (m < rows) narrow_backward_data_row(g, dy, w, dx, m);
}

__global__ void __launch_bounds__(kNarrowThreads) narrow_backward_weight_kernel(ConvGeom g, const float* x,
                                                                               const float* dy, float* partial,
                                                                               int chunk) {
  const int m = blockIdx.x * kNarrowThreads + threadIdx.x, split = blockIdx.y;
  const int K = g.batch * g.out_vox, k_begin = split * chunk;
  if (m < g.cin * g.taps) narrow_backward_weight_row(g, x, dy, partial, m, split, k_begin, min(K, k_begin + chunk));
}

// ---- host side --------------------------------------------------------------------------------

std::string describe(const Conv3dShape& s) {
  auto tri = [](const int64_t v[3]) {
    return std::to_string(v[0]) + "x" + std::to_string(v[1]) + "x" + std::to_string(v[2]);
  };
  return "batch " + std::to_string(s.batch) + ", " + std::to_string(s.in_channels) + "→" +
         std::to_string(s.out_channels) + " channels, input " + tri(s.in) + ", kernel " + tri(s.kernel) +
         ", stride " + tri(s.stride) + ", padding " + tri(s.padding);
}

// Checks the shape and converts it to the kernels' 32-bit geometry.
ConvGeom geometry(const Conv3dShape& s, const char* who) {
  const std::string where = std::string("cuda::") + who + " (" + describe(s) + "): ";
  require(s.batch > 0 && s.in_channels > 0 && s.out_channels > 0, where + "batch and channel counts must be positive");
  for (int a = 0; a < 3; ++a) {
    require(s.in[a] > 0 && s.kernel[a] > 0 && s.stride[a] > 0 && s.padding[a] >= 0,
            where + "sizes, kernel and stride must be positive and padding non-negative");
    require(s.out_size(a) >= 1, where + "the kernel is larger than the padded input on axis " + std::to_string(a));
  }
  require(s.taps() <= kMaxTaps, where + "kernels of more than 125 taps are not supported; split the kernel");
  const int64_t lim = int64_t{1} << 30;
  require(s.batch * s.in_voxels() < lim && s.batch * s.out_voxels() < lim && s.in_channels * s.taps() < lim &&
              s.out_channels * s.taps() < lim,
          where + "too large for 32-bit voxel indices (batch·voxels and channels·taps must stay below 2^30); "
                  "split the batch");
  return to_geom(s);
}

void check_workspace(size_t have, size_t need, const char* who) {
  require(have >= need, std::string("cuda::") + who + ": workspace of " + std::to_string(have) +
                            " bytes is too small; the shape needs " + std::to_string(need) +
                            " (ask " + who + "_workspace_bytes)");
}

template <class Op>
void launch_gemm(Precision p, const Op& op, int64_t max_rows, int layers, int k_chunk, cudaStream_t stream) {
  dim3 grid(static_cast<unsigned>(cdiv(max_rows, kBM)), static_cast<unsigned>(cdiv(op.N, kBN)),
            static_cast<unsigned>(layers));
  require(grid.y <= 65535 && grid.z <= 65535, "cuda::conv3d: too many output channels for one launch");
  switch (p) {
    case Precision::fp32_exact: implicit_gemm<Precision::fp32_exact><<<grid, kThreads, 0, stream>>>(op, k_chunk); break;
    case Precision::tf32: implicit_gemm<Precision::tf32><<<grid, kThreads, 0, stream>>>(op, k_chunk); break;
    case Precision::bf16: implicit_gemm<Precision::bf16><<<grid, kThreads, 0, stream>>>(op, k_chunk); break;
  }
  CPETS_CHECK_LAUNCH("implicit_gemm");
}

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>(cdiv(n, threads)); }


}  // namespace

// ---- public entry points ------------------------------------------------------------------------

size_t conv3d_forward_workspace_bytes(const Conv3dShape& s, Precision) {
  if (narrow_forward(geometry(s, "conv3d_forward_workspace_bytes"))) return 0;
  return detail::align_bytes(sizeof(float) * s.out_channels * s.in_channels * s.taps());
}

void conv3d_forward(const Conv3dShape& s, Precision p, const float* x, const float* w, const float* bias, float* y,
                    void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  detail::NvtxRange nvtx("cuda::conv3d_forward");
  ConvGeom g = geometry(s, "conv3d_forward");
  check_workspace(workspace_bytes, conv3d_forward_workspace_bytes(s, p), "conv3d_forward");
  require(x && w && y, "cuda::conv3d_forward: x, w and y must be device pointers, not null");
  if (narrow_forward(g)) {
    const int rows = g.batch * g.out_vox;
    narrow_forward_kernel<<<blocks_for(rows, kNarrowThreads), kNarrowThreads, 0, stream>>>(g, x, w, bias, y, rows);
    CPETS_CHECK_LAUNCH("narrow_forward_kernel");
    return;
  }
  require(workspace != nullptr, "cuda::conv3d_forward: the workspace must not be null");
  float* wt = static_cast<float*>(workspace);
  const int K = g.cin * g.taps;
  transpose_weight_forward<<<blocks_for(int64_t{g.cout} * K, 256), 256, 0, stream>>>(w, wt, g.cout, K);
  CPETS_CHECK_LAUNCH("transpose_weight_forward");
  ForwardOp op{g, x, wt, bias, y, g.batch * g.out_vox, g.cout, K};
  launch_gemm(p, op, op.M, 1, K, stream);
}

size_t conv3d_backward_data_workspace_bytes(const Conv3dShape& s, Precision) {
  if (narrow_backward_data(geometry(s, "conv3d_backward_data_workspace_bytes"))) return 0;
  return detail::align_bytes(sizeof(float) * s.out_channels * s.in_channels * s.taps());
}

void conv3d_backward_data(const Conv3dShape& s, Precision p, const float* dy, const float* w, float* dx,
                          void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  detail::NvtxRange nvtx("cuda::conv3d_backward_data");
  ConvGeom g = geometry(s, "conv3d_backward_data");
  check_workspace(workspace_bytes, conv3d_backward_data_workspace_bytes(s, p), "conv3d_backward_data");
  require(dy && w && dx, "cuda::conv3d_backward_data: dy, w and dx must be device pointers, not null");
  if (narrow_backward_data(g)) {
    const int rows = g.batch * g.in_vox;
    narrow_backward_data_kernel<<<blocks_for(rows, kNarrowThreads), kNarrowThreads, 0, stream>>>(g, dy, w, dx, rows);
    CPETS_CHECK_LAUNCH("narrow_backward_data_kernel");
    return;
  }
  require(workspace != nullptr, "cuda::conv3d_backward_data: the workspace must not be null");
  float* wt = static_cast<float*>(workspace);
  transpose_weight_backward_data<<<blocks_for(int64_t{g.cout} * g.cin * g.taps, 256), 256, 0, stream>>>(
      w, wt, g.cout, g.cin, g.taps);
  CPETS_CHECK_LAUNCH("transpose_weight_backward_data");
  // One GEMM layer per output phase (stride 1: one layer); the largest phase sets the grid.
  const BackwardDataOp op = BackwardDataOp::make(g, dy, wt, dx);
  launch_gemm(p, op, int64_t{g.batch} * data_phase_max_voxels(g), data_phase_count(g), 0, stream);
}

int64_t conv3d_backward_weight_splits(const Conv3dShape& s) {
  return weight_split_plan(geometry(s, "conv3d_backward_weight_splits")).splits;
}

size_t conv3d_backward_weight_workspace_bytes(const Conv3dShape& s, Precision) {
  SplitK plan = weight_split_plan(geometry(s, "conv3d_backward_weight_workspace_bytes"));
  if (plan.splits == 1) return 0;
  return detail::align_bytes(sizeof(float) * plan.splits * s.out_channels * s.in_channels * s.taps());
}

void conv3d_backward_weight(const Conv3dShape& s, Precision p, const float* x, const float* dy, float* dw,
                            float* dbias, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  detail::NvtxRange nvtx("cuda::conv3d_backward_weight");
  ConvGeom g = geometry(s, "conv3d_backward_weight");
  check_workspace(workspace_bytes, conv3d_backward_weight_workspace_bytes(s, p), "conv3d_backward_weight");
  require(dy != nullptr, "cuda::conv3d_backward_weight: dy must be a device pointer, not null");
  if (dbias) {
    bias_gradient<<<g.cout, kBiasThreads, 0, stream>>>(dy, dbias, g.batch, g.cout, g.out_vox);
    CPETS_CHECK_LAUNCH("bias_gradient");
  }
  if (!dw) return;
  require(x != nullptr, "cuda::conv3d_backward_weight: x must be a device pointer when dw is wanted");
  SplitK plan = weight_split_plan(g);
  const int M = g.cin * g.taps, N = g.cout, K = g.batch * g.out_vox;
  require(plan.splits == 1 || workspace, "cuda::conv3d_backward_weight: the workspace must not be null");
  float* target = plan.splits == 1 ? dw : static_cast<float*>(workspace);
  if (narrow_backward_weight(g)) {
    dim3 grid(blocks_for(M, kNarrowThreads), static_cast<unsigned>(plan.splits));
    narrow_backward_weight_kernel<<<grid, kNarrowThreads, 0, stream>>>(g, x, dy, target, plan.chunk);
    CPETS_CHECK_LAUNCH("narrow_backward_weight_kernel");
  } else {
    BackwardWeightOp op{g, x, dy, target, M, N, K};
    launch_gemm(p, op, M, plan.splits, plan.chunk, stream);
  }
  if (plan.splits > 1) {
    const int64_t n = static_cast<int64_t>(M) * N;
    sum_splits<<<blocks_for(n, 256), 256, 0, stream>>>(target, dw, n, plan.splits);
    CPETS_CHECK_LAUNCH("sum_splits");
  }
}

}  // namespace cpets::kernels::cuda
