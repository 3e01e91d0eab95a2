// Elementwise kernels. Parallel decomposition: one thread per element (grid-stride), four
// elements at a time through float4 loads/stores when the buffers are 16-byte aligned — these
// ops are pure bandwidth, and 128-bit accesses are what reaches it. The op is a run-time switch
// inside the functor: it is the same for every thread, so it costs a uniform branch, not
// divergence, and keeps one kernel per shape of work instead of one per op.
// Broadcasting: the host merges neighbouring dimensions that broadcast alike (as the CPU kernel
// does), so the common cases become one or two dimensions; each output element then finds its
// operands through per-dimension strides, 0 along broadcast dimensions (hd_math.h).
#include <stdexcept>
#include <string>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/elementwise.h"

namespace cpets::kernels::cuda {
namespace {

struct UnaryF {
  UnaryOp op;
  float p0, p1;
  __device__ float operator()(float x) const {
    switch (op) {
      case UnaryOp::Neg: return -x;
      case UnaryOp::AddScalar: return x + p0;
      case UnaryOp::MulScalar: return x * p0;
      case UnaryOp::Silu: return silu(x);
      case UnaryOp::Gelu: return gelu(x);
      case UnaryOp::LeakyRelu: return leaky_relu(x, p0);
      case UnaryOp::Relu: return x < 0.f ? 0.f : x;
      case UnaryOp::Sigmoid: return sigmoidf_(x);
      case UnaryOp::Tanh: return tanhf(x);
      case UnaryOp::Exp: return expf(x);
      case UnaryOp::Log: return logf(x);
      case UnaryOp::Clamp: return fminf(fmaxf(x, p0), p1);
    }
    return x;
  }
};

// dx from (v, dy), v = input or output as cpu::unary_backward_uses_output says.
struct UnaryGradF {
  UnaryOp op;
  float p0, p1;
  __device__ float operator()(float v, float g) const {
    switch (op) {
      case UnaryOp::Neg: return -g;
      case UnaryOp::AddScalar: return g;
      case UnaryOp::MulScalar: return g * p0;
      case UnaryOp::Silu: return g * silu_grad(v);
      case UnaryOp::Gelu: return g * gelu_grad(v);
      case UnaryOp::LeakyRelu: return v > 0.f ? g : g * p0;
      case UnaryOp::Relu: return v > 0.f ? g : 0.f;
      case UnaryOp::Sigmoid: return g * v * (1.f - v);
      case UnaryOp::Tanh: return g * (1.f - v * v);
      case UnaryOp::Exp: return g * v;
      case UnaryOp::Log: return g / v;
      case UnaryOp::Clamp: return (v >= p0 && v <= p1) ? g : 0.f;
    }
    return g;
  }
};

struct BinaryF {
  BinaryOp op;
  __device__ float operator()(float a, float b) const {
    switch (op) {
      case BinaryOp::Add: return a + b;
      case BinaryOp::Sub: return a - b;
      case BinaryOp::Mul: return a * b;
      case BinaryOp::Div: return a / b;
    }
    return a;
  }
};

struct FillF {
  float value;
  __device__ float operator()(float) const { return value; }
};

__device__ __forceinline__ float4 apply4(const UnaryF& f, float4 v) { return {f(v.x), f(v.y), f(v.z), f(v.w)}; }
__device__ __forceinline__ float4 apply4(const FillF& f, float4 v) { return {f.value, f.value, f.value, f.value}; }
template <class F>
__device__ __forceinline__ float4 apply4(const F& f, float4 a, float4 b) {
  return {f(a.x, b.x), f(a.y, b.y), f(a.z, b.z), f(a.w, b.w)};
}

// y = f(x); x may be null for FillF (nothing is read).
template <class F, bool kVec>
__global__ void map1_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n, F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t start = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (kVec) {
    const int64_t n4 = n / 4;
    for (int64_t i = start; i < n4; i += stride) {
      const float4 v = x ? reinterpret_cast<const float4*>(x)[i] : float4{0.f, 0.f, 0.f, 0.f};
      reinterpret_cast<float4*>(y)[i] = apply4(f, v);
    }
    start += n4 * 4;
  }
  for (int64_t i = start; i < n; i += stride) y[i] = f(x ? x[i] : 0.f);
}

// out = f(a, b), all the same shape.
template <class F, bool kVec>
__global__ void map2_kernel(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, int64_t n,
                            F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t start = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (kVec) {
    const int64_t n4 = n / 4;
    for (int64_t i = start; i < n4; i += stride)
      reinterpret_cast<float4*>(out)[i] =
          apply4(f, reinterpret_cast<const float4*>(a)[i], reinterpret_cast<const float4*>(b)[i]);
    start += n4 * 4;
  }
  for (int64_t i = start; i < n; i += stride) out[i] = f(a[i], b[i]);
}

// a += b. `a` is read and written, so unlike map2_kernel's operands it carries no __restrict__
// (passing one pointer as a restrict input and as the output is undefined behaviour).
template <bool kVec>
__global__ void add_inplace_kernel(float* a, const float* __restrict__ b, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t start = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (kVec) {
    const int64_t n4 = n / 4;
    for (int64_t i = start; i < n4; i += stride) {
      float4 x = reinterpret_cast<float4*>(a)[i];
      const float4 y = reinterpret_cast<const float4*>(b)[i];
      x.x += y.x, x.y += y.y, x.z += y.z, x.w += y.w;
      reinterpret_cast<float4*>(a)[i] = x;
    }
    start += n4 * 4;
  }
  for (int64_t i = start; i < n; i += stride) a[i] += b[i];
}

// Broadcast: out[i] = f(a[off_a(i)], b[off_b(i)]) (b may be null: then out = a · scale).
template <class I>
__global__ void broadcast_kernel(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out,
                                 I n, BroadcastIndex ix, BinaryF f, float scale) {
  const I stride = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    I oa, ob;
    broadcast_offsets(ix, i, oa, ob);
    out[i] = b ? f(a[oa], b[ob]) : a[oa] * scale;
  }
}

// 32-bit index maths is safe when every index, plus one grid stride, stays below 2³¹.
bool fits32(int64_t elements) { return elements < (int64_t(1) << 31) - int64_t(65536) * kBlock; }

// 32-bit indices when the output (and so every operand) fits.
void launch_broadcast(const float* a, const float* b, float* out, int64_t n, const BroadcastIndex& ix, BinaryF f,
                      float scale, cudaStream_t stream) {
  if (fits32(n))
    broadcast_kernel<uint32_t><<<grid_for(n), kBlock, 0, stream>>>(a, b, out, uint32_t(n), ix, f, scale);
  else
    broadcast_kernel<int64_t><<<grid_for(n), kBlock, 0, stream>>>(a, b, out, n, ix, f, scale);
  CPETS_CHECK_LAUNCH("broadcast_kernel");
}

template <class F>
void launch_map1(const float* x, float* y, int64_t n, F f, cudaStream_t stream) {
  if (n <= 0) return;
  const bool vec = (!x || aligned16(x)) && aligned16(y);
  const unsigned grid = grid_for(vec ? (n + 3) / 4 : n);
  if (vec) map1_kernel<F, true><<<grid, kBlock, 0, stream>>>(x, y, n, f);
  else map1_kernel<F, false><<<grid, kBlock, 0, stream>>>(x, y, n, f);
  CPETS_CHECK_LAUNCH("map1_kernel");
}

template <class F>
void launch_map2(const float* a, const float* b, float* out, int64_t n, F f, cudaStream_t stream) {
  if (n <= 0) return;
  const bool vec = aligned16(a) && aligned16(b) && aligned16(out);
  const unsigned grid = grid_for(vec ? (n + 3) / 4 : n);
  if (vec) map2_kernel<F, true><<<grid, kBlock, 0, stream>>>(a, b, out, n, f);
  else map2_kernel<F, false><<<grid, kBlock, 0, stream>>>(a, b, out, n, f);
  CPETS_CHECK_LAUNCH("map2_kernel");
}

// Merges the dimensions of out_shape (dropping size 1) where both operands broadcast alike, and
// gives each operand's strides (0 along broadcast dimensions).
BroadcastIndex make_index(const std::vector<int64_t>& a_shape, const std::vector<int64_t>& b_shape,
                          const std::vector<int64_t>& out_shape) {
  const size_t rank = out_shape.size();
  if (a_shape.size() != rank || b_shape.size() != rank)
    throw std::invalid_argument("cuda broadcast: operand ranks differ from the output's");
  std::vector<int64_t> size;
  std::vector<int> pattern;  // bit 0: a broadcasts, bit 1: b broadcasts
  for (size_t d = 0; d < rank; ++d) {
    if (out_shape[d] == 1) continue;
    const int pat = (a_shape[d] == 1 ? 1 : 0) | (b_shape[d] == 1 ? 2 : 0);
    if (!size.empty() && pattern.back() == pat) {
      size.back() *= out_shape[d];
    } else {
      size.push_back(out_shape[d]);
      pattern.push_back(pat);
    }
  }
  BroadcastIndex ix;
  if (size.size() > size_t(kMaxRank))
    throw std::invalid_argument("cuda broadcast: more than " + std::to_string(kMaxRank) +
                                " alternating broadcast dimensions; reshape the operands first");
  ix.rank = int(size.size());
  int64_t sa = 1, sb = 1;
  for (int d = ix.rank - 1; d >= 0; --d) {
    ix.size[d] = size[d];
    ix.stride[0][d] = (pattern[d] & 1) ? 0 : sa;
    ix.stride[1][d] = (pattern[d] & 2) ? 0 : sb;
    if (!(pattern[d] & 1)) sa *= size[d];
    if (!(pattern[d] & 2)) sb *= size[d];
  }
  return ix;
}

int64_t numel_of(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

}  // namespace

void fill(float* out, int64_t n, float value, cudaStream_t stream) {
  launch_map1(nullptr, out, n, FillF{value}, stream);
}

void add_inplace(float* a, const float* b, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  const bool vec = aligned16(a) && aligned16(b);
  const unsigned grid = grid_for(vec ? (n + 3) / 4 : n);
  if (vec) add_inplace_kernel<true><<<grid, kBlock, 0, stream>>>(a, b, n);
  else add_inplace_kernel<false><<<grid, kBlock, 0, stream>>>(a, b, n);
  CPETS_CHECK_LAUNCH("add_inplace_kernel");
}

void binary_broadcast(BinaryOp op, const float* a, const std::vector<int64_t>& a_shape, const float* b,
                      const std::vector<int64_t>& b_shape, float* out, const std::vector<int64_t>& out_shape,
                      cudaStream_t stream) {
  const int64_t n = numel_of(out_shape);
  if (n == 0) return;
  if (a_shape == out_shape && b_shape == out_shape) return launch_map2(a, b, out, n, BinaryF{op}, stream);
  launch_broadcast(a, b, out, n, make_index(a_shape, b_shape, out_shape), BinaryF{op}, 1.f, stream);
}

void broadcast_to(const float* x, const std::vector<int64_t>& x_shape, float* out,
                  const std::vector<int64_t>& out_shape, float scale, cudaStream_t stream) {
  const int64_t n = numel_of(out_shape);
  if (n == 0) return;
  launch_broadcast(x, nullptr, out, n, make_index(x_shape, out_shape, out_shape), BinaryF{BinaryOp::Mul}, scale,
                   stream);
}

void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float p0, float p1, cudaStream_t stream) {
  launch_map1(x, y, n, UnaryF{op, p0, p1}, stream);
}

void unary_backward(UnaryOp op, const float* xy, const float* dy, float* dx, int64_t n, float p0, float p1,
                    cudaStream_t stream) {
  launch_map2(xy, dy, dx, n, UnaryGradF{op, p0, p1}, stream);
}

namespace {

// One thread per output (row, i): a = x[row, i], b = x[row, F + i]. Rows of F ≥ 1; consecutive
// threads read consecutive a's and b's, so both halves are coalesced. I: 32-bit index maths when
// the input (rows·2F elements) fits.
template <class I>
__global__ void geglu_forward_kernel(const float* __restrict__ x, float* __restrict__ y, I rows, I F) {
  const I n = rows * F, stride = I(gridDim.x) * blockDim.x;
  for (I o = I(blockIdx.x) * blockDim.x + threadIdx.x; o < n; o += stride) {
    const I r = o / F, i = o - r * F;
    const float* xr = x + r * 2 * F;
    y[o] = xr[i] * gelu(xr[F + i]);
  }
}

template <class I>
__global__ void geglu_backward_kernel(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
                                      I rows, I F) {
  const I n = rows * F, stride = I(gridDim.x) * blockDim.x;
  for (I o = I(blockIdx.x) * blockDim.x + threadIdx.x; o < n; o += stride) {
    const I r = o / F, i = o - r * F;
    const float* xr = x + r * 2 * F;
    float* dr = dx + r * 2 * F;
    const float a = xr[i], b = xr[F + i], g = dy[o];
    dr[i] = g * gelu(b);
    dr[F + i] = g * a * gelu_grad(b);
  }
}

}  // namespace

void geglu_forward(const float* x, float* y, int64_t rows, int64_t F, cudaStream_t stream) {
  if (rows * F == 0) return;
  if (fits32(2 * rows * F)) geglu_forward_kernel<uint32_t><<<grid_for(rows * F), kBlock, 0, stream>>>(x, y, rows, F);
  else geglu_forward_kernel<int64_t><<<grid_for(rows * F), kBlock, 0, stream>>>(x, y, rows, F);
  CPETS_CHECK_LAUNCH("geglu_forward_kernel");
}

void geglu_backward(const float* x, const float* dy, float* dx, int64_t rows, int64_t F, cudaStream_t stream) {
  if (rows * F == 0) return;
  if (fits32(2 * rows * F))
    geglu_backward_kernel<uint32_t><<<grid_for(rows * F), kBlock, 0, stream>>>(x, dy, dx, rows, F);
  else
    geglu_backward_kernel<int64_t><<<grid_for(rows * F), kBlock, 0, stream>>>(x, dy, dx, rows, F);
  CPETS_CHECK_LAUNCH("geglu_backward_kernel");
}

}  // namespace cpets::kernels::cuda
