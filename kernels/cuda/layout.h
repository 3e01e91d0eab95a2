// Memory-layout kernels on raw device pointers, as kernels/cpu/layout.h: permuted copies and
// strided row copies (concat, slice, chunk and their backwards).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

// out dimension i is x dimension perm[i] (rank ≤ 8 after merging dimensions that stay adjacent).
void permute_copy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& perm, float* out,
                  cudaStream_t stream);
// dst[r·dst_stride + i] = src[r·src_stride + i] for r < rows, i < len.
void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows, int64_t len,
               cudaStream_t stream);
// As cpu::assemble_rows: dst rows made of consecutive blocks, zeros where src[p] is null.
void assemble_rows(const std::vector<const float*>& src, const std::vector<int64_t>& lens, float* dst, int64_t rows,
                   cudaStream_t stream);

}  // namespace cpets::kernels::cuda
