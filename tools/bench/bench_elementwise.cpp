// Elementwise ops at the model's activation size (2,32,48,64,48) = 9.4 M floats: SiLU forward and
// backward, and add with a per-channel (1,32,1,1,1) broadcast forward and backward (the backward
// is the bias-style reduction of the gradient over batch and space). Plus the reductions and the
// attention-layout transpose they sit next to. Backward times are the op's own backward node
// (Node::apply), the forward untimed. Bytes are our memory traffic: every float read or written.
#include <algorithm>
#include <chrono>
#include <functional>
#include <random>

#include "bench/bench.h"
#include "engine/autograd.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_loss.h"
#include "engine/ops_reduce.h"
#include "engine/ops_shape.h"

using namespace cpets;

namespace {

using bench::median_backward_seconds;
using bench::random_input;

const Shape kAct{2, 32, 48, 64, 48};

template <class F>
double median_forward_seconds(F&& forward, int repeats) {
  NoGradGuard ng;
  return bench::median_seconds([&] { forward(); }, repeats);
}

}  // namespace

CPETS_BENCH("ops", "silu") {
  Tensor x = random_input(kAct, 1).set_requires_grad(true);
  Tensor gy = random_input(kAct, 2);
  const double bytes = 4.0 * double(x.numel());
  auto forward = [&] { return silu(x); };
  out.push_back({"silu fwd (2,32,48,64,48)", median_forward_seconds(forward, ctx.repeats), 0, 2 * bytes,
                 "silu_fwd_2x32x48x64x48"});
  out.push_back({"silu bwd (2,32,48,64,48)", median_backward_seconds(forward, gy, ctx.repeats), 0, 3 * bytes,
                 "silu_bwd_2x32x48x64x48"});
}

CPETS_BENCH("ops", "add_channel") {
  Tensor x = random_input(kAct, 3).set_requires_grad(true);
  Tensor b = random_input({1, 32, 1, 1, 1}, 4).set_requires_grad(true);
  Tensor gy = random_input(kAct, 5);
  const double bytes = 4.0 * double(x.numel());
  auto forward = [&] { return add(x, b); };
  out.push_back({"add fwd (2,32,48,64,48)+(1,32,1,1,1)", median_forward_seconds(forward, ctx.repeats), 0,
                 2 * bytes, "add_chan_fwd_2x32x48x64x48"});
  // dx is dy itself (no copy); db reads dy once.
  out.push_back({"add bwd (2,32,48,64,48)+(1,32,1,1,1)", median_backward_seconds(forward, gy, ctx.repeats), 0,
                 bytes, "add_chan_bwd_2x32x48x64x48"});
  Tensor s = random_input({2, 32, 1, 1, 1}, 6);
  out.push_back({"mul fwd (2,32,48,64,48)*(2,32,1,1,1)", median_forward_seconds([&] { return mul(x, s); }, ctx.repeats),
                 0, 2 * bytes, "mul_chan_fwd_2x32x48x64x48"});
}

CPETS_BENCH("ops", "reduce") {
  Tensor x = random_input(kAct, 7);
  Tensor y = random_input(kAct, 8);
  const double bytes = 4.0 * double(x.numel());
  out.push_back({"sum all (2,32,48,64,48)", median_forward_seconds([&] { return sum(x); }, ctx.repeats), 0, bytes,
                 "sum_all_2x32x48x64x48"});
  out.push_back({"sum axes (0,2,3,4) of (2,32,48,64,48)",
                 median_forward_seconds([&] { return sum(x, {0, 2, 3, 4}); }, ctx.repeats), 0, bytes,
                 "sum_chan_2x32x48x64x48"});
  out.push_back({"l1_loss (2,32,48,64,48)", median_forward_seconds([&] { return l1_loss(x, y); }, ctx.repeats), 0,
                 2 * bytes, "l1_2x32x48x64x48"});
}

CPETS_BENCH("ops", "transpose") {
  Tensor x = random_input({2, 256, 2304}, 9);  // (B, C, N) tokens of a 12x16x12 feature map
  const double bytes = 4.0 * double(x.numel());
  out.push_back({"transpose (2,256,2304)->(2,2304,256)",
                 median_forward_seconds([&] { return transpose(x, 1, 2); }, ctx.repeats), 0, 2 * bytes,
                 "transpose_2x256x2304"});
}

namespace {

// The GEGLU feed-forward's activation sizes in the full preset: 2 × 2304 tokens, 8C = 2048 hidden
// channels chunked into halves a, b of 1024 (y = a · GELU(b)).
const Shape kHidden{2 * 2304, 2048};
const Shape kHalf{2 * 2304, 1024};

// Median time of a whole backward pass from `forward()`'s output to the leaves (forward untimed),
// for ops whose backward spans several nodes (chunk, the composed GEGLU). Includes the leaves'
// gradient accumulation (one copy of each leaf gradient).
double median_graph_backward_seconds(const std::function<Tensor()>& forward, const Tensor& grad_out,
                                     const std::vector<Tensor>& leaves, int repeats) {
  std::vector<double> times;
  for (int r = 0; r < repeats + 1; ++r) {
    for (Tensor leaf : leaves) leaf.zero_grad();
    Tensor y = forward();
    const auto t0 = std::chrono::steady_clock::now();
    y.backward(grad_out);
    const auto t1 = std::chrono::steady_clock::now();
    if (r > 0) times.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

// Uniform in [−4, 4): a quarter of the values beyond ±3, so nearly every block of 16 takes GELU's
// full path (the worst case).
Tensor wide_input(const Shape& shape, uint32_t seed) {
  Tensor x = random_input(shape, seed);
  float* p = x.data();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] *= 4.f;
  return x;
}

// Standard normal (fixed seed): like a normalised layer's pre-activations, mostly within ±3 with
// a thin tail beyond (GELU's cheap path covers blocks of 16 that lie within ±3).
Tensor normal_input(const Shape& shape, uint32_t seed) {
  Tensor x = Tensor::empty(shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  float* p = x.data();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = normal(rng);
  return x;
}

CPETS_BENCH("ops", "gelu") {
  Tensor x = wide_input(kHalf, 10).set_requires_grad(true);
  Tensor gy = random_input(kHalf, 11);
  const double bytes = 4.0 * double(x.numel());
  auto forward = [&] { return gelu(x); };
  out.push_back({"gelu fwd (4608,1024)", median_forward_seconds(forward, ctx.repeats), 0, 2 * bytes,
                 "gelu_fwd_4608x1024"});
  out.push_back({"gelu bwd (4608,1024)", median_backward_seconds(forward, gy, ctx.repeats), 0, 3 * bytes,
                 "gelu_bwd_4608x1024"});
  Tensor z = normal_input(kHalf, 17).set_requires_grad(true);
  auto forward_normal = [&] { return gelu(z); };
  out.push_back({"gelu fwd (4608,1024) N(0,1)", median_forward_seconds(forward_normal, ctx.repeats), 0, 2 * bytes,
                 "gelu_fwd_4608x1024_normal"});
  out.push_back({"gelu bwd (4608,1024) N(0,1)", median_backward_seconds(forward_normal, gy, ctx.repeats), 0,
                 3 * bytes, "gelu_bwd_4608x1024_normal"});
}

CPETS_BENCH("ops", "chunk") {
  Tensor x = random_input(kHidden, 12).set_requires_grad(true);
  Tensor ga = random_input(kHalf, 13), gb = random_input(kHalf, 14);
  const double bytes = 4.0 * double(x.numel());
  // Both halves used, as in GEGLU: (a·ga + b·gb).sum() has gradient (ga | gb) through chunk.
  auto forward = [&] {
    std::vector<Tensor> parts = chunk(x, 2, -1);
    return add(mul(parts[0], ga), mul(parts[1], gb));
  };
  out.push_back({"chunk(2,-1) (4608,2048) fwd", median_forward_seconds([&] { return chunk(x, 2, -1); }, ctx.repeats),
                 0, 2 * bytes, "chunk_fwd_4608x2048"});
  out.push_back({"a*ga + b*gb, (a,b)=chunk (4608,2048): full bwd",
                 median_graph_backward_seconds(forward, Tensor::ones(kHalf), {x}, ctx.repeats), 0, 0,
                 "chunk_mul_bwd_4608x2048"});
}

CPETS_BENCH("ops", "geglu") {
  Tensor x = normal_input(kHidden, 15).set_requires_grad(true);
  Tensor gy = random_input(kHalf, 16);
  const double bytes = 4.0 * double(x.numel());
  auto composed = [&] {
    std::vector<Tensor> ab = chunk(x, 2, -1);
    return mul(ab[0], gelu(ab[1]));
  };
  out.push_back({"chunk->gelu->mul fwd (4608,2048)", median_forward_seconds(composed, ctx.repeats), 0, 1.5 * bytes,
                 "geglu_fwd_4608x2048"});
  out.push_back({"chunk->gelu->mul full bwd (4608,2048)",
                 median_graph_backward_seconds(composed, gy, {x}, ctx.repeats), 0, 2.5 * bytes,
                 "geglu_bwd_4608x2048"});
  auto fused = [&] { return geglu(x); };
  out.push_back({"geglu fwd (4608,2048)", median_forward_seconds(fused, ctx.repeats), 0, 1.5 * bytes,
                 "geglu_fwd_4608x2048"});
  out.push_back({"geglu full bwd (4608,2048)", median_graph_backward_seconds(fused, gy, {x}, ctx.repeats), 0,
                 2.5 * bytes, "geglu_bwd_4608x2048"});
}
