// GroupNorm (plain and fused with SiLU) and LayerNorm at the model's shapes. Backward times are
// the op's own backward node (Node::apply), without the forward and without .grad accumulation.
// Bytes are the memory traffic of our implementation: forward reads x twice (statistics, then
// normalise) and writes y; backward reads dy and x twice (row sums, then dx) and writes dx.
#include <algorithm>
#include <chrono>
#include <random>

#include "bench/bench.h"
#include "engine/autograd.h"
#include "engine/ops_norm.h"

using namespace cpets;

namespace {

using bench::median_backward_seconds;
using bench::random_input;

void bench_group_norm(const bench::Context& ctx, std::vector<bench::Result>& out, bool silu) {
  const Shape shape{2, 32, 48, 64, 48};
  const int64_t groups = 8;
  Tensor x = random_input(shape, 1).set_requires_grad(true);
  Tensor gamma = random_input({32}, 2).set_requires_grad(true);
  Tensor beta = random_input({32}, 3).set_requires_grad(true);
  Tensor gy = random_input(shape, 4);
  const double bytes = 4.0 * double(x.numel());
  auto forward = [&] {
    return silu ? group_norm_silu(x, groups, gamma, beta, 1e-5f) : group_norm(x, groups, gamma, beta, 1e-5f);
  };
  const std::string tag = silu ? "groupnorm+silu" : "groupnorm";
  double fwd;
  {
    NoGradGuard ng;
    fwd = bench::median_seconds([&] { forward(); }, ctx.repeats);
  }
  out.push_back({tag + " fwd (2,32,8 groups,48x64x48) affine", fwd, 0, 3 * bytes,
                 silu ? "" : "groupnorm_fwd_2x32g8_48x64x48"});
  const double bwd = median_backward_seconds(forward, gy, ctx.repeats);
  out.push_back({tag + " bwd (2,32,8 groups,48x64x48) x,gamma,beta", bwd, 0, 5 * bytes,
                 silu ? "" : "groupnorm_bwd_2x32g8_48x64x48"});
}

}  // namespace

CPETS_BENCH("ops", "groupnorm") { bench_group_norm(ctx, out, false); }

CPETS_BENCH("ops", "groupnorm_silu") { bench_group_norm(ctx, out, true); }

CPETS_BENCH("ops", "layernorm") {
  const Shape shape{2 * 2304, 128};
  Tensor x = random_input(shape, 5).set_requires_grad(true);
  Tensor gamma = random_input({128}, 6).set_requires_grad(true);
  Tensor beta = random_input({128}, 7).set_requires_grad(true);
  Tensor gy = random_input(shape, 8);
  const double bytes = 4.0 * double(x.numel());
  auto forward = [&] { return layer_norm(x, gamma, beta, 1e-5f); };
  double fwd;
  {
    NoGradGuard ng;
    fwd = bench::median_seconds([&] { forward(); }, std::max(ctx.repeats, 20));
  }
  // Rows sit in cache between the statistics and the normalisation: one read, one write.
  out.push_back({"layernorm fwd (4608,128) affine", fwd, 0, 2 * bytes, ""});
  const double bwd = median_backward_seconds(forward, gy, std::max(ctx.repeats, 20));
  out.push_back({"layernorm bwd (4608,128) x,gamma,beta", bwd, 0, 3 * bytes, ""});
}

// PatchGAN's second BatchNorm3d in the full preset (128 channels at 24×32×24), training mode.
CPETS_BENCH("ops", "batchnorm3d") {
  const Shape shape{2, 128, 24, 32, 24};
  Tensor x = random_input(shape, 9).set_requires_grad(true);
  Tensor gamma = random_input({128}, 10).set_requires_grad(true);
  Tensor beta = random_input({128}, 11).set_requires_grad(true);
  Tensor rm = Tensor::zeros({128}), rv = Tensor::ones({128});
  Tensor gy = random_input(shape, 12);
  const double bytes = 4.0 * double(x.numel());
  auto forward = [&] { return batch_norm3d(x, gamma, beta, rm, rv, true, 0.1f, 1e-5f); };
  double fwd;
  {
    NoGradGuard ng;
    fwd = bench::median_seconds([&] { forward(); }, ctx.repeats);
  }
  out.push_back({"batchnorm3d train fwd (2,128,24x32x24)", fwd, 0, 3 * bytes, ""});
  out.push_back({"batchnorm3d train bwd (2,128,24x32x24) x,gamma,beta",
                 median_backward_seconds(forward, gy, ctx.repeats), 0, 5 * bytes, ""});
}

// Attention scores of the full preset's latent grid (12×16×12 = 2304 tokens), 4 (batch·head)
// slices; the whole model has 2·8 of them.
CPETS_BENCH("ops", "softmax") {
  const Shape shape{4, 2304, 2304};
  Tensor x = random_input(shape, 13).set_requires_grad(true);
  Tensor gy = random_input(shape, 14);
  const double bytes = 4.0 * double(x.numel());
  auto forward = [&] { return softmax(x, -1); };
  double fwd;
  {
    NoGradGuard ng;
    fwd = bench::median_seconds([&] { forward(); }, ctx.repeats);
  }
  // Rows (9 KB) stay in cache: forward reads x once and writes y; backward reads y, dy, writes dx.
  out.push_back({"softmax fwd (4,2304,2304) last dim", fwd, 0, 2 * bytes, ""});
  out.push_back({"softmax bwd (4,2304,2304) last dim", median_backward_seconds(forward, gy, ctx.repeats), 0,
                 3 * bytes, ""});
}
