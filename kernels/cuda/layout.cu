// Layout kernels. Row copies are 2-D memcpys (cudaMemcpy2DAsync: the copy engines' strided path,
// at full bandwidth, no kernel needed), zero blocks 2-D memsets. Permutes: one thread per output
// element, which reads its source through the permuted strides; writes are coalesced, and the
// dimensions that stay adjacent are merged first so that the common "keep the last dimension"
// permutes read contiguous runs too. (A shared-memory tiled transpose would make the
// last-dimension-moving case coalesced on both sides; the attention layouts use it rarely.)
#include <stdexcept>
#include <string>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/layout.h"

namespace cpets::kernels::cuda {
namespace {

struct PermuteIndex {
  int rank = 0;
  int64_t out_size[kMaxRank] = {};
  int64_t in_stride[kMaxRank] = {};  // stride in x of out dimension i
};

// I: 32-bit indices when they fit (a division per dimension and element).
template <class I>
__global__ void permute_kernel(const float* __restrict__ x, float* __restrict__ out, I n, PermuteIndex ix) {
  const I step = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    I t = i, off = 0;
    for (int d = ix.rank - 1; d >= 0; --d) {
      const I size = I(ix.out_size[d]);
      const I q = t / size;
      off += (t - q * size) * I(ix.in_stride[d]);
      t = q;
    }
    out[i] = x[off];
  }
}

}  // namespace

void permute_copy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& perm, float* out,
                  cudaStream_t stream) {
  const size_t rank = shape.size();
  std::vector<int64_t> stride(rank);
  int64_t n = 1;
  for (size_t i = rank; i-- > 0;) {
    stride[i] = n;
    n *= shape[i];
  }
  if (n == 0) return;
  // Output dimensions in order, dropping size 1 and merging i-1, i when perm[i] = perm[i-1] + 1.
  std::vector<int64_t> size, in_stride;
  int64_t prev = -2;
  for (size_t i = 0; i < rank; ++i) {
    const int64_t d = perm[i];
    if (shape[d] == 1) continue;
    if (!size.empty() && d == prev + 1) {
      size.back() *= shape[d];
      in_stride.back() = stride[d];
    } else {
      size.push_back(shape[d]);
      in_stride.push_back(stride[d]);
    }
    prev = d;
  }
  if (size.size() > size_t(kMaxRank))
    throw std::invalid_argument("cuda permute: more than " + std::to_string(kMaxRank) + " separate dimensions");
  PermuteIndex ix;
  ix.rank = int(size.size());
  for (int i = 0; i < ix.rank; ++i) {
    ix.out_size[i] = size[i];
    ix.in_stride[i] = in_stride[i];
  }
  if (n < (int64_t(1) << 31) - int64_t(65536) * kBlock)
    permute_kernel<uint32_t><<<grid_for(n), kBlock, 0, stream>>>(x, out, uint32_t(n), ix);
  else
    permute_kernel<int64_t><<<grid_for(n), kBlock, 0, stream>>>(x, out, n, ix);
  CPETS_CHECK_LAUNCH("permute_kernel");
}

void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows, int64_t len,
               cudaStream_t stream) {
  if (rows <= 0 || len <= 0) return;
  CPETS_CUDA_CHECK(cudaMemcpy2DAsync(dst, size_t(dst_stride) * sizeof(float), src, size_t(src_stride) * sizeof(float),
                                     size_t(len) * sizeof(float), size_t(rows), cudaMemcpyDeviceToDevice, stream));
}

void assemble_rows(const std::vector<const float*>& src, const std::vector<int64_t>& lens, float* dst, int64_t rows,
                   cudaStream_t stream) {
  int64_t total = 0;
  for (int64_t l : lens) total += l;
  int64_t offset = 0;
  for (size_t p = 0; p < src.size(); ++p) {
    if (rows > 0 && lens[p] > 0) {
      if (src[p])
        copy_rows(src[p], lens[p], dst + offset, total, rows, lens[p], stream);
      else
        CPETS_CUDA_CHECK(cudaMemset2DAsync(dst + offset, size_t(total) * sizeof(float), 0,
                                           size_t(lens[p]) * sizeof(float), size_t(rows), stream));
    }
    offset += lens[p];
  }
}

}  // namespace cpets::kernels::cuda
