// Elementwise kernels on raw device pointers, the CUDA counterparts of kernels/cpu/elementwise.h
// (same ops, same broadcasting rules, same enums). Launchers queue work on `stream` and return.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/cpu/elementwise.h"
#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

using cpu::BinaryOp;
using cpu::UnaryOp;

void fill(float* out, int64_t n, float value, cudaStream_t stream);
// a[i] += b[i] (gradient accumulation).
void add_inplace(float* a, const float* b, int64_t n, cudaStream_t stream);

// As cpu::binary_broadcast: shapes right-aligned to out's rank, a_shape[i], b_shape[i] ∈ {1, out_shape[i]}.
void binary_broadcast(BinaryOp op, const float* a, const std::vector<int64_t>& a_shape, const float* b,
                      const std::vector<int64_t>& b_shape, float* out, const std::vector<int64_t>& out_shape,
                      cudaStream_t stream);
// out = x · scale broadcast to out_shape.
void broadcast_to(const float* x, const std::vector<int64_t>& x_shape, float* out,
                  const std::vector<int64_t>& out_shape, float scale, cudaStream_t stream);

void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float p0, float p1, cudaStream_t stream);
// dx = dy · f'(·); `xy` is x, or y where cpu::unary_backward_uses_output(op).
void unary_backward(UnaryOp op, const float* xy, const float* dy, float* dx, int64_t n, float p0, float p1,
                    cudaStream_t stream);

void geglu_forward(const float* x, float* y, int64_t rows, int64_t F, cudaStream_t stream);
void geglu_backward(const float* x, const float* dy, float* dx, int64_t rows, int64_t F, cudaStream_t stream);

}  // namespace cpets::kernels::cuda
