// conv3d forward and backward (input + weight gradients) at the model's shapes, the Winograd
// kernel against the direct one pass by pass, plus pooling and upsampling. FLOPs: 2·B·Cout·Cin·k³
// per output voxel for one pass (for Winograd too, so its GFLOP/s are "effective" rates);
// backward = 2 passes.
#include <string>

#include "bench/bench.h"
#include "kernels/cpu/conv3d.h"
#include "kernels/cpu/conv3d_winograd.h"
#include "kernels/cpu/pool.h"
#include "engine/tensor.h"

namespace {

using namespace cpets;
namespace kc = cpets::kernels::cpu;

Tensor filled(const Shape& shape, float scale) {
  Tensor t = Tensor::empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = scale * float((i * 7919) % 2003 - 1001) / 1001.f;
  return t;
}

kc::Conv3dShape cube_conv(int64_t B, int64_t cin, int64_t cout, int64_t D, int64_t H, int64_t W, int64_t k, int64_t pad) {
  return kc::Conv3dShape::of(B, cin, cout, {D, H, W}, {k, k, k}, {1, 1, 1}, {pad, pad, pad});
}

std::string label(const kc::Conv3dShape& s) {
  return std::to_string(s.batch) + "x" + std::to_string(s.in_channels) + "x" + std::to_string(s.out_channels) + "_" +
         std::to_string(s.in[0]) + "x" + std::to_string(s.in[1]) + "x" + std::to_string(s.in[2]);
}

// Forward, then (unless skipped) backward = input gradient + weight and bias gradients.
void bench_conv(const bench::Context& ctx, std::vector<bench::Result>& out, const kc::Conv3dShape& s, bool with_backward,
                int repeats) {
  Tensor x = filled({s.batch, s.in_channels, s.in[0], s.in[1], s.in[2]}, 1.f);
  Tensor w = filled({s.out_channels, s.in_channels, s.kernel[0], s.kernel[1], s.kernel[2]}, 0.05f);
  Tensor b = filled({s.out_channels}, 0.1f);
  Tensor y = Tensor::empty({s.batch, s.out_channels, s.out_size(0), s.out_size(1), s.out_size(2)});
  const double flops = 2.0 * double(s.batch) * double(s.out_channels) * double(s.in_channels) * double(s.taps()) *
                       double(s.out_voxels());
  const std::string tag = label(s);
  const double fwd = bench::median_seconds([&] { kc::conv3d_forward(s, x.data(), w.data(), b.data(), y.data()); }, repeats);
  out.push_back({"conv3d fwd 3x3x3 " + tag, fwd, flops, 0, "conv3d_fwd_" + tag});
  if (!with_backward) return;
  Tensor dx = Tensor::empty(x.shape()), dw = Tensor::empty(w.shape()), db = Tensor::empty(b.shape());
  const double bwd = bench::median_seconds(
      [&] {
        kc::conv3d_backward_data(s, y.data(), w.data(), dx.data());
        kc::conv3d_backward_weight(s, x.data(), y.data(), dw.data(), db.data());
      },
      repeats);
  out.push_back({"conv3d bwd 3x3x3 (input+weight grads) " + tag, bwd, 2 * flops, 0, "conv3d_bwd_" + tag});
}

// The direct kernel and the Winograd one for each pass, timed in the same process.
// At batch 2, 3×3×3, stride 1, padding 1.
void winograd_vs_direct(const bench::Context& ctx, std::vector<bench::Result>& out, int64_t cin, int64_t cout,
                        int64_t D, int64_t H, int64_t W) {
  const kc::Conv3dShape s = cube_conv(2, cin, cout, D, H, W, 3, 1);
  Tensor x = bench::random_input({s.batch, s.in_channels, s.in[0], s.in[1], s.in[2]}, 1);
  Tensor w = bench::random_input({s.out_channels, s.in_channels, 3, 3, 3}, 2);
  Tensor b = bench::random_input({s.out_channels}, 3);
  Tensor y = Tensor::empty({s.batch, s.out_channels, s.in[0], s.in[1], s.in[2]});
  Tensor dx = Tensor::empty(x.shape());
  Tensor dw = Tensor::empty(w.shape());
  const double flops = 2.0 * double(s.batch) * double(s.out_channels) * double(s.in_channels) * 27.0 *
                       double(s.out_voxels());
  const std::string tag = label(s);
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

CPETS_BENCH("ops", "conv3d 2x16x16 48x64x48") {
  bench_conv(ctx, out, cube_conv(2, 16, 16, 48, 64, 48, 3, 1), true, ctx.repeats);
}

CPETS_BENCH("ops", "conv3d 1x64x64 96x128x96") {
  // About a second per pass: fewer repeats; backward only in the full run.
  bench_conv(ctx, out, cube_conv(1, 64, 64, 96, 128, 96, 3, 1), !ctx.quick, ctx.quick ? 1 : 3);
}

CPETS_BENCH("ops", "conv3d PatchGAN 4x4x4 stride 2") {
  kc::Conv3dShape s = cube_conv(1, 16, 32, 48, 64, 48, 4, 1);
  for (int a = 0; a < 3; ++a) s.stride[a] = 2;
  Tensor x = filled({1, 16, 48, 64, 48}, 1.f), w = filled({32, 16, 4, 4, 4}, 0.05f);
  Tensor y = Tensor::empty({1, 32, s.out_size(0), s.out_size(1), s.out_size(2)});
  Tensor dx = Tensor::empty(x.shape()), dw = Tensor::empty(w.shape());
  const double flops = 2.0 * 32 * 16 * 64 * double(s.out_voxels());
  out.push_back({"conv3d fwd 4x4x4 s2 1x16x32_48x64x48",
                 bench::median_seconds([&] { kc::conv3d_forward(s, x.data(), w.data(), nullptr, y.data()); }, ctx.repeats),
                 flops, 0, ""});
  out.push_back({"conv3d bwd 4x4x4 s2 1x16x32_48x64x48",
                 bench::median_seconds(
                     [&] {
                       kc::conv3d_backward_data(s, y.data(), w.data(), dx.data());
                       kc::conv3d_backward_weight(s, x.data(), y.data(), dw.data(), nullptr);
                     },
                     ctx.repeats),
                 2 * flops, 0, ""});
}

CPETS_BENCH("ops", "avg_pool3d / upsample_nearest2x 2x32 48x64x48") {
  const int64_t planes = 2 * 32, D = 48, H = 64, W = 48;
  Tensor x = filled({planes, D, H, W}, 1.f);
  Tensor y = Tensor::empty({planes, D / 2, H / 2, W / 2});
  Tensor dx = Tensor::empty(x.shape());
  const double big = double(x.numel()) * 4, small = big / 8;
  out.push_back({"avg_pool3d fwd k2s2 2x32_48x64x48",
                 bench::median_seconds([&] { kc::avg_pool3d_forward(x.data(), planes, D, H, W, 2, 2, y.data()); }, ctx.repeats), 0,
                 big + small, ""});
  out.push_back({"avg_pool3d bwd k2s2 2x32_48x64x48",
                 bench::median_seconds([&] { kc::avg_pool3d_backward(y.data(), planes, D, H, W, 2, 2, dx.data()); }, ctx.repeats), 0,
                 big + small, ""});
  out.push_back({"upsample_nearest2x fwd 2x32_24x32x24->48x64x48",
                 bench::median_seconds([&] { kc::upsample_nearest2x_forward(y.data(), planes, D / 2, H / 2, W / 2, dx.data()); },
                                       ctx.repeats),
                 0, big + small, ""});
  out.push_back({"upsample_nearest2x bwd 2x32_48x64x48->24x32x24",
                 bench::median_seconds([&] { kc::upsample_nearest2x_backward(dx.data(), planes, D / 2, H / 2, W / 2, y.data()); },
                                       ctx.repeats),
                 0, big + small, ""});
}

CPETS_BENCH("ops", "winograd vs direct 16x16 48x64x48") { winograd_vs_direct(ctx, out, 16, 16, 48, 64, 48); }
CPETS_BENCH("ops", "winograd vs direct 32x32 48x64x48") { winograd_vs_direct(ctx, out, 32, 32, 48, 64, 48); }
CPETS_BENCH("ops", "winograd vs direct 32x16 48x64x48") { winograd_vs_direct(ctx, out, 32, 16, 48, 64, 48); }
CPETS_BENCH("ops", "winograd vs direct 16x16 24x32x24") { winograd_vs_direct(ctx, out, 16, 16, 24, 32, 24); }
CPETS_BENCH("ops", "winograd vs direct 32x32 24x32x24") { winograd_vs_direct(ctx, out, 32, 32, 24, 32, 24); }
CPETS_BENCH("ops", "winograd vs direct 32x32 12x16x12") { winograd_vs_direct(ctx, out, 32, 32, 12, 16, 12); }
CPETS_BENCH("ops", "winograd vs direct 32x32 6x8x6") { winograd_vs_direct(ctx, out, 32, 32, 6, 8, 6); }
