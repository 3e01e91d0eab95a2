// The perceptual loss V (models/perceptual.h) and its max pooling: time of one 2.5-D LPIPS loss
// with its backward at the demo and full volume sizes, and of the SqueezeNet max pool alone.
// Weights are random (He-uniform trunk, non-negative lin): the time does not depend on them.
#include <cmath>

#include "engine/autograd.h"
#include "engine/ops_conv.h"
#include "engine/rng.h"
#include "kernels/cpu/maxpool.h"
#include "models/perceptual.h"
#include "bench/bench.h"

using namespace cpets;

namespace {

std::shared_ptr<models::LpipsSqueeze> random_lpips() {
  auto net = std::make_shared<models::LpipsSqueeze>();
  Generator gen(11);
  for (auto& [name, t] : net->state_dict()) {
    const bool lin = name.rfind("lin", 0) == 0, bias = t.dim() == 1;
    const float bound = lin ? 0.1f : bias ? 0.05f : std::sqrt(6.f / float(t.numel() / t.size(0)));
    gen.fill_uniform(t.data(), t.numel(), lin ? 0.f : -bound, bound);
  }
  return net;
}

void bench_loss(std::vector<bench::Result>& out, int64_t D, int64_t H, int64_t W, int repeats) {
  auto net = random_lpips();
  Tensor pred = bench::random_input({2, 1, D, H, W}, 1), target = bench::random_input({2, 1, D, H, W}, 2);
  Generator gen(3);
  const double s = bench::median_seconds(
      [&] {
        Tensor p = pred.detach().set_requires_grad(true);
        models::perceptual_loss_25d(*net, p, target, gen).backward();
      },
      repeats);
  out.push_back({"perceptual_loss_25d fwd+bwd 2x" + std::to_string(D) + "x" + std::to_string(H) + "x" + std::to_string(W),
                 s, 0, 0, ""});
}

}  // namespace

CPETS_BENCH("ops", "perceptual_loss_25d") {
  bench_loss(out, 48, 64, 48, ctx.repeats);
  if (!ctx.quick) bench_loss(out, 96, 128, 96, 1);
}

CPETS_BENCH("ops", "max_pool3d 1x3x3 s2 ceil") {
  // relu1 of the 96 D-axis slices of a full-size volume, as the trunk stacks them.
  Tensor x = bench::random_input({1, 64, 96, 63, 47}, 4).set_requires_grad(true);
  const double bytes = double(x.numel()) * 4 * 1.25;  // read x, write y (a quarter of x)
  out.push_back({"max_pool3d fwd (argmax kept) 64x96x63x47",
                 bench::median_seconds([&] { max_pool3d(x, {1, 3, 3}, {1, 2, 2}, true); }, ctx.repeats), 0, bytes, ""});
  Tensor y = max_pool3d(x, {1, 3, 3}, {1, 2, 2}, true);
  out.push_back({"max_pool3d bwd 64x96x63x47",
                 bench::median_backward_seconds([&] { return max_pool3d(x, {1, 3, 3}, {1, 2, 2}, true); }, y.detach(),
                                                ctx.repeats),
                 0, bytes, ""});
}
