// Elementwise ops at the model's activation size (2,32,48,64,48) = 9.4 M floats: SiLU forward and
// backward, and add with a per-channel (1,32,1,1,1) broadcast forward and backward (the backward
// is the bias-style reduction of the gradient over batch and space). Plus the reductions and the
// attention-layout transpose they sit next to. Backward times are the op's own backward node
// (Node::apply), the forward untimed. Bytes are our memory traffic: every float read or written.
#include <algorithm>
#include <chrono>
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
