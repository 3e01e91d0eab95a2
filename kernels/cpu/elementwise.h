// Elementwise kernels on raw float buffers: binary ops with NumPy broadcasting, broadcast copies,
// and unary maps (activations, scalar affine ops) with their derivatives.
//
// Broadcast shapes are passed right-aligned to the output's rank: a_shape[i] is 1 or
// out_shape[i]. The kernels merge neighbouring dimensions that broadcast alike, so the model's
// common cases — same shape, per-channel (B,C,D,H,W) ⊕ (1|B,C,1,1,1) and per-last-dim (…,C) ⊕ (C)
// — all run as contiguous vectorised rows. Work is split in fixed chunks (parallel.h), and
// nothing here reduces across chunks, so results never depend on the thread count.
#pragma once
#include <cstdint>
#include <vector>

namespace cpets::kernels::cpu {

enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };

// out = a op b, elementwise over out_shape, a and b broadcast. All three shapes have the same
// rank; a_shape[i], b_shape[i] ∈ {1, out_shape[i]}.
void binary_broadcast(BinaryOp op, const float* a, const std::vector<int64_t>& a_shape, const float* b,
                      const std::vector<int64_t>& b_shape, float* out, const std::vector<int64_t>& out_shape);

// out = x · scale broadcast to out_shape (same rank; x_shape[i] ∈ {1, out_shape[i]}).
void broadcast_to(const float* x, const std::vector<int64_t>& x_shape, float* out,
                  const std::vector<int64_t>& out_shape, float scale = 1.f);

enum class UnaryOp : uint8_t {
  Neg,        // −x
  AddScalar,  // x + p0
  MulScalar,  // x · p0
  Silu,       // x·σ(x)
  Gelu,       // x·Φ(x) = ½x(1 + erf(x/√2)), exact erf
  LeakyRelu,  // x > 0 ? x : p0·x   (derivative at 0 is p0, as PyTorch)
  Relu,       // max(x, 0)          (derivative at 0 is 0, as PyTorch)
  Sigmoid,
  Tanh,
  Exp,
  Log,
  Clamp,      // min(max(x, p0), p1); derivative 1 on [p0, p1] (ends included, as PyTorch), else 0
};

// y = f(x) for n elements; y may alias x.
void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float p0 = 0.f, float p1 = 0.f);

// Whether the derivative is computed from the output y (Sigmoid, Tanh, Exp) rather than the input x.
bool unary_backward_uses_output(UnaryOp op);

// dx = dy · f'(·). `xy` is the input x, or the output y where unary_backward_uses_output(op).
// dx may alias dy.
void unary_backward(UnaryOp op, const float* xy, const float* dy, float* dx, int64_t n, float p0 = 0.f,
                    float p1 = 0.f);

// GEGLU on rows of 2F: y[r, i] = a·GELU(b) with a = x[r, i], b = x[r, F + i] (exact erf), y of
// shape (rows, F). The backward writes dx (rows, 2F): dy·GELU(b) into the a half and
// dy·a·GELU'(b) into the b half.
void geglu_forward(const float* x, float* y, int64_t rows, int64_t F);
void geglu_backward(const float* x, const float* dy, float* dx, int64_t rows, int64_t F);

}  // namespace cpets::kernels::cpu
