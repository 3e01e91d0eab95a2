// Winograd F(2³, 3³) against the direct conv3d kernel, forward and input gradient, at the
// training shapes (batch 2, 3×3×3, stride 1, pad 1), both timed in the same process. FLOPs
// are the direct convolution's (2·B·Cout·Cin·27 per voxel) for both, so GFLOP/s compare as
// "effective" rates.
#include <string>

#include "bench/bench.h"
#include "kernels/cpu/conv3d.h"
#include "kernels/cpu/conv3d_winograd.h"

namespace {

using namespace cpets;
namespace kc = cpets::kernels::cpu;

kc::Conv3dShape wino_shape(int64_t cin, int64_t cout, int64_t D, int64_t H, int64_t W) {
  kc::Conv3dShape s;
  s.batch = 2;
  s.in_channels = cin;
  s.out_channels = cout;
  s.in[0] = D;
  s.in[1] = H;
  s.in[2] = W;
  for (int a = 0; a < 3; ++a) {
    s.kernel[a] = 3;
    s.padding[a] = 1;
  }
  return s;
}

void bench_pair(const bench::Context& ctx, std::vector<bench::Result>& out, const kc::Conv3dShape& s) {
  if (!kc::conv3d_winograd_available()) return;
  Tensor x = bench::random_input({s.batch, s.in_channels, s.in[0], s.in[1], s.in[2]}, 1);
  Tensor w = bench::random_input({s.out_channels, s.in_channels, 3, 3, 3}, 2);
  Tensor b = bench::random_input({s.out_channels}, 3);
  Tensor y = Tensor::empty({s.batch, s.out_channels, s.in[0], s.in[1], s.in[2]});
  Tensor dx = Tensor::empty(x.shape());
  Tensor dw = Tensor::empty(w.shape());
  const double flops = 2.0 * double(s.batch) * double(s.out_channels) * double(s.in_channels) * 27.0 *
                       double(s.out_voxels());
  const std::string tag = std::to_string(s.batch) + "x" + std::to_string(s.in_channels) + "x" +
                          std::to_string(s.out_channels) + "_" + std::to_string(s.in[0]) + "x" +
                          std::to_string(s.in[1]) + "x" + std::to_string(s.in[2]);
  const int reps = ctx.repeats;
  // The direct kernel even where conv3d_forward / conv3d_backward_data route to Winograd.
  const bool routed = kc::conv3d_winograd_enabled();
  kc::conv3d_set_winograd_enabled(false);
  const double direct_f = bench::median_seconds([&] { kc::conv3d_forward(s, x.data(), w.data(), b.data(), y.data()); }, reps);
  const double direct_b = bench::median_seconds([&] { kc::conv3d_backward_data(s, y.data(), w.data(), dx.data()); }, reps);
  const double direct_w =
      bench::median_seconds([&] { kc::conv3d_backward_weight(s, x.data(), y.data(), dw.data(), nullptr); }, reps);
  kc::conv3d_set_winograd_enabled(routed);
  const double wino_f =
      bench::median_seconds([&] { kc::conv3d_winograd_forward(s, x.data(), w.data(), b.data(), y.data()); }, reps);
  const double wino_b =
      bench::median_seconds([&] { kc::conv3d_winograd_backward_data(s, y.data(), w.data(), dx.data()); }, reps);
  const double wino_w =
      bench::median_seconds([&] { kc::conv3d_winograd_backward_weight(s, x.data(), y.data(), dw.data()); }, reps);
  out.push_back({"conv3d fwd direct   " + tag, direct_f, flops, 0, ""});
  out.push_back({"conv3d fwd winograd " + tag, wino_f, flops, 0, ""});
  out.push_back({"conv3d dgrad direct   " + tag, direct_b, flops, 0, ""});
  out.push_back({"conv3d dgrad winograd " + tag, wino_b, flops, 0, ""});
  out.push_back({"conv3d wgrad direct   " + tag, direct_w, flops, 0, ""});
  out.push_back({"conv3d wgrad winograd " + tag, wino_w, flops, 0, ""});
}

}  // namespace

CPETS_BENCH("ops", "winograd vs direct 16x16 48x64x48") { bench_pair(ctx, out, wino_shape(16, 16, 48, 64, 48)); }
CPETS_BENCH("ops", "winograd vs direct 32x32 48x64x48") { bench_pair(ctx, out, wino_shape(32, 32, 48, 64, 48)); }
CPETS_BENCH("ops", "winograd vs direct 32x16 48x64x48") { bench_pair(ctx, out, wino_shape(32, 16, 48, 64, 48)); }
CPETS_BENCH("ops", "winograd vs direct 16x16 24x32x24") { bench_pair(ctx, out, wino_shape(16, 16, 24, 32, 24)); }
CPETS_BENCH("ops", "winograd vs direct 32x32 24x32x24") { bench_pair(ctx, out, wino_shape(32, 32, 24, 32, 24)); }
CPETS_BENCH("ops", "winograd vs direct 32x32 12x16x12") { bench_pair(ctx, out, wino_shape(32, 32, 12, 16, 12)); }
CPETS_BENCH("ops", "winograd vs direct 32x32 6x8x6") { bench_pair(ctx, out, wino_shape(32, 32, 6, 8, 6)); }
