// Memory-layout kernels on raw float buffers (contiguous, row-major): permuted copies and strided
// block copies (the building blocks of concat and slice). Copies only, so results never depend on
// the thread count.
#pragma once
#include <cstdint>
#include <vector>

namespace cpets::kernels::cpu {

// out = x with its dimensions reordered: out dimension i is x dimension perm[i]. Dimensions that
// stay contiguous in x are merged first; a permutation that keeps x's innermost dimension last
// becomes row copies, any other (e.g. the (B,C,N)→(B,N,C) transposes of attention layouts) a
// cache-blocked tiled transpose.
void permute_copy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& perm, float* out);

// dst[r·dst_stride + i] = src[r·src_stride + i] for r < rows, i < len.
void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows, int64_t len);

// Rows made of consecutive blocks: dst row r (length Σ lens) is block 0 row r, block 1 row r, …,
// where block p row r is src[p][r·lens[p] … +lens[p]) or zeros where src[p] is null. Each dst
// element is written once: the backward of chunk/slice assembles a full gradient this way, with
// zeros only in the parts that have none.
void assemble_rows(const std::vector<const float*>& src, const std::vector<int64_t>& lens, float* dst, int64_t rows);

}  // namespace cpets::kernels::cpu
