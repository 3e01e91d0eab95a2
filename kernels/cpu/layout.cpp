#include "kernels/cpu/layout.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/parallel.h"

namespace cpets::kernels::cpu {
namespace {

constexpr int64_t kChunk = 16384;  // elements per parallel work item
constexpr int64_t kTile = 32;      // transpose tile edge: two 32×32 float tiles fit in L1

struct Dim {
  int64_t size, in_stride;
};

// Output dimensions with their input strides, size-1 dimensions dropped, and neighbours merged
// where the pair is also contiguous in the input.
std::vector<Dim> merged_output_dims(const std::vector<int64_t>& shape, const std::vector<int64_t>& perm) {
  std::vector<int64_t> stride(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    stride[i] = s;
    s *= shape[i];
  }
  std::vector<Dim> dims;
  for (int64_t p : perm) {
    const Dim d{shape[p], stride[p]};
    if (d.size == 1) continue;
    if (!dims.empty() && dims.back().in_stride == d.in_stride * d.size) {
      dims.back() = {dims.back().size * d.size, d.in_stride};
    } else {
      dims.push_back(d);
    }
  }
  if (dims.empty()) dims.push_back({1, 1});
  return dims;
}

// Input offset of outer index `o` over dims[0..n) except `skip` (row-major over those dims).
int64_t outer_offset(const std::vector<Dim>& dims, size_t n, size_t skip, int64_t o) {
  int64_t off = 0;
  for (size_t d = n; d-- > 0;) {
    if (d == skip) continue;
    off += (o % dims[d].size) * dims[d].in_stride;
    o /= dims[d].size;
  }
  return off;
}

// The innermost output dimension is contiguous in the input: copy rows.
void permute_rows(const float* x, const std::vector<Dim>& dims, float* out) {
  const size_t nd = dims.size();
  const int64_t L = dims.back().size;
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < nd; ++d) rows *= dims[d].size;
  parallel_for(rows, std::max<int64_t>(1, kChunk / L), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      std::memcpy(out + r * L, x + outer_offset(dims, nd - 1, nd, r), L * sizeof(float));
  });
}

// Tiled transpose of the plane made of the last output dimension Q and the output dimension P
// with the smallest input stride, for every index of the remaining (outer) dimensions.
void permute_tiled(const float* x, const std::vector<Dim>& dims, float* out) {
  const size_t nd = dims.size();
  size_t p_dim = 0;
  for (size_t d = 1; d + 1 < nd; ++d)
    if (dims[d].in_stride < dims[p_dim].in_stride) p_dim = d;
  const int64_t P = dims[p_dim].size, sP = dims[p_dim].in_stride;
  const int64_t Q = dims.back().size, sQ = dims.back().in_stride;
  int64_t outer = 1;
  for (size_t d = 0; d + 1 < nd; ++d)
    if (d != p_dim) outer *= dims[d].size;
  std::vector<int64_t> ostride(nd);  // output strides, row-major
  int64_t stride = 1;
  for (size_t d = nd; d-- > 0;) {
    ostride[d] = stride;
    stride *= dims[d].size;
  }
  const int64_t oP = ostride[p_dim];
  const int64_t p_tiles = (P + kTile - 1) / kTile;
  parallel_for(outer * p_tiles, std::max<int64_t>(1, kChunk / (kTile * Q)), [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      const int64_t o = it / p_tiles, p0 = (it % p_tiles) * kTile, p1 = std::min(P, p0 + kTile);
      int64_t out_base = 0, rem = o;
      for (size_t d = nd - 1; d-- > 0;) {
        if (d == p_dim) continue;
        out_base += (rem % dims[d].size) * ostride[d];
        rem /= dims[d].size;
      }
      const float* src = x + outer_offset(dims, nd - 1, p_dim, o);
      float* dst = out + out_base;
      for (int64_t q0 = 0; q0 < Q; q0 += kTile) {
        const int64_t q1 = std::min(Q, q0 + kTile);
        for (int64_t p = p0; p < p1; ++p)
          for (int64_t q = q0; q < q1; ++q) dst[p * oP + q] = src[p * sP + q * sQ];
      }
    }
  });
}

}  // namespace

void permute_copy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& perm, float* out) {
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  if (numel == 0) return;
  const std::vector<Dim> dims = merged_output_dims(shape, perm);
  if (dims.back().in_stride == 1) permute_rows(x, dims, out);
  else permute_tiled(x, dims, out);
}

void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows, int64_t len) {
  if (rows <= 0 || len <= 0) return;
  const int64_t segs = (len + kChunk - 1) / kChunk;  // long rows are split so one row still parallelises
  const int64_t seg_len = (len + segs - 1) / segs;
  parallel_for(rows * segs, std::max<int64_t>(1, kChunk / seg_len), [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      const int64_t r = it / segs, i0 = (it % segs) * seg_len, n = std::min(seg_len, len - i0);
      std::memcpy(dst + r * dst_stride + i0, src + r * src_stride + i0, n * sizeof(float));
    }
  });
}

void assemble_rows(const std::vector<const float*>& src, const std::vector<int64_t>& lens, float* dst, int64_t rows) {
  int64_t row_len = 0;
  for (int64_t l : lens) row_len += l;
  if (rows <= 0 || row_len <= 0) return;
  // Whole rows per work item (at least kChunk floats each); a row of blocks is at most a few
  // memcpy/memset calls.
  parallel_for(rows, std::max<int64_t>(1, kChunk / row_len), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float* out = dst + r * row_len;
      for (size_t p = 0; p < lens.size(); ++p) {
        const int64_t n = lens[p];
        if (src[p]) std::memcpy(out, src[p] + r * n, n * sizeof(float));
        else std::memset(out, 0, n * sizeof(float));
        out += n;
      }
    }
  });
}

}  // namespace cpets::kernels::cpu
