// sum over axes. The host merges neighbouring dimensions that are both kept or both reduced, so
// the problem becomes "O outputs, each the sum of R inputs" with ≤ 8 kept and ≤ 8 reduced
// dimensions, and picks one of two decompositions by where the contiguous (last) dimension is:
//   rows    the last dimension is reduced: the R inputs of an output are (mostly) contiguous, so
//           blocks of 256 threads each sum a chunk of kRowChunk of them (coalesced, strided by
//           the thread count) into a double partial — grid = O × ceil(R / kRowChunk) blocks;
//   columns the last dimension is kept (e.g. a bias gradient summed over rows, or sum over the
//           batch): threads own consecutive outputs, so a warp reads 32 consecutive floats, and
//           each thread sums a chunk of kColChunk reduced positions — grid = ceil(O/256) ×
//           ceil(R / kColChunk).
// A second kernel adds each output's partials in chunk order and scales once, in double.
#include <stdexcept>
#include <string>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.h"

namespace cpets::kernels::cuda {
namespace {

constexpr int64_t kRowChunk = 8192;
constexpr int64_t kColChunk = 256;

struct Dims {
  int n = 0;
  int64_t size[kMaxRank] = {};
  int64_t stride[kMaxRank] = {};
};

// Offset of item i of the row-major iteration over `d`.
__device__ __forceinline__ int64_t offset_of(const Dims& d, int64_t i) {
  int64_t off = 0;
  for (int k = d.n - 1; k >= 0; --k) {
    const int64_t q = i / d.size[k];
    off += (i - q * d.size[k]) * d.stride[k];
    i = q;
  }
  return off;
}

struct Plan {
  Dims kept, reduced;
  int64_t O = 1, R = 1, P = 1, chunk = kRowChunk;
  bool rows = true;
};

Plan make_plan(const std::vector<int64_t>& shape, const std::vector<bool>& reduce) {
  if (reduce.size() != shape.size()) throw std::invalid_argument("cuda sum_axes: one flag per dimension needed");
  std::vector<int64_t> size, stride;
  std::vector<bool> red;
  int64_t st = 1;
  std::vector<int64_t> strides(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = st;
    st *= shape[i];
  }
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1) continue;
    if (!red.empty() && red.back() == reduce[i]) {
      size.back() *= shape[i];
      stride.back() = strides[i];
    } else {
      size.push_back(shape[i]);
      stride.push_back(strides[i]);
      red.push_back(reduce[i]);
    }
  }
  Plan p;
  for (size_t i = 0; i < size.size(); ++i) {
    Dims& d = red[i] ? p.reduced : p.kept;
    if (d.n == kMaxRank) throw std::invalid_argument("cuda sum_axes: too many alternating reduced/kept dimensions");
    d.size[d.n] = size[i];
    d.stride[d.n] = stride[i];
    d.n++;
    (red[i] ? p.R : p.O) *= size[i];
  }
  p.rows = red.empty() || red.back();
  // Columns: grid.y holds the chunks (at most 65535), so very long columns get longer chunks.
  p.chunk = p.rows ? kRowChunk : std::max(kColChunk, ceil_div(p.R, 32768));
  p.P = std::max<int64_t>(1, ceil_div(p.R, p.chunk));
  return p;
}

__global__ void sum_rows_kernel(const float* __restrict__ x, Dims kept, Dims reduced, int64_t R, int64_t P,
                                double* __restrict__ partial) {
  const int64_t o = blockIdx.x / P, p = blockIdx.x - o * P;
  const float* base = x + offset_of(kept, o);
  const int64_t b = p * kRowChunk, e = min(R, b + kRowChunk);
  double acc = 0.0;
  if (reduced.n == 1 && reduced.stride[0] == 1) {
    for (int64_t r = b + threadIdx.x; r < e; r += blockDim.x) acc += double(base[r]);
  } else {
    for (int64_t r = b + threadIdx.x; r < e; r += blockDim.x) acc += double(base[offset_of(reduced, r)]);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;  // = partial[o·P + p]
}

__global__ void sum_cols_kernel(const float* __restrict__ x, Dims kept, Dims reduced, int64_t O, int64_t R,
                                int64_t chunk, double* __restrict__ partial) {
  const int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= O) return;
  const float* base = x + offset_of(kept, o);
  const int64_t b = int64_t(blockIdx.y) * chunk, e = min(R, b + chunk);
  double acc = 0.0;
  for (int64_t r = b; r < e; ++r) acc += double(base[offset_of(reduced, r)]);
  partial[int64_t(blockIdx.y) * O + o] = acc;
}

// out[o] = scale · Σ_p partial[o·so + p·sp], p in order.
__global__ void combine_kernel(const double* __restrict__ partial, int64_t O, int64_t P, int64_t so, int64_t sp,
                               double scale, float* __restrict__ out) {
  const int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= O) return;
  double s = 0.0;
  for (int64_t p = 0; p < P; ++p) s += partial[o * so + p * sp];
  out[o] = float(s * scale);
}

}  // namespace

size_t sum_axes_workspace_bytes(const std::vector<int64_t>& shape, const std::vector<bool>& reduce) {
  const Plan p = make_plan(shape, reduce);
  return size_t(p.O * p.P) * sizeof(double);
}

void sum_axes(const float* x, const std::vector<int64_t>& shape, const std::vector<bool>& reduce, float* out,
              double scale, Workspace ws, cudaStream_t stream) {
  const Plan p = make_plan(shape, reduce);
  if (p.O == 0) return;
  for (int64_t d : shape)
    if (d == 0) {  // nothing to add: every output is an empty sum
      CPETS_CUDA_CHECK(cudaMemsetAsync(out, 0, size_t(p.O) * sizeof(float), stream));
      return;
    }
  if (ws.bytes < size_t(p.O * p.P) * sizeof(double))
    throw std::invalid_argument("cuda sum_axes: workspace of " + std::to_string(ws.bytes) + " bytes is too small");
  double* partial = static_cast<double*>(ws.ptr);
  if (p.rows) {
    sum_rows_kernel<<<unsigned(p.O * p.P), kBlock, 0, stream>>>(x, p.kept, p.reduced, p.R, p.P, partial);
    CPETS_CHECK_LAUNCH("sum_rows_kernel");
    combine_kernel<<<unsigned(ceil_div(p.O, kBlock)), kBlock, 0, stream>>>(partial, p.O, p.P, p.P, 1, scale, out);
  } else {
    const dim3 grid(unsigned(ceil_div(p.O, kBlock)), unsigned(p.P));
    sum_cols_kernel<<<grid, kBlock, 0, stream>>>(x, p.kept, p.reduced, p.O, p.R, p.chunk, partial);
    CPETS_CHECK_LAUNCH("sum_cols_kernel");
    combine_kernel<<<unsigned(ceil_div(p.O, kBlock)), kBlock, 0, stream>>>(partial, p.O, p.P, 1, p.O, scale, out);
  }
  CPETS_CHECK_LAUNCH("combine_kernel");
}

}  // namespace cpets::kernels::cuda
