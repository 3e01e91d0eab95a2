// Kernel lab, engine-op part: the hand-written kernels behind the engine's non-convolution ops,
// run through the engine on CUDA tensors at the model's shapes (full preset: 96×128×96, batch 2),
// next to the vendor reference where there is one:
//   GroupNorm+SiLU forward and backward (memory-bound: GB/s and the fraction of the card's
//   bandwidth, the target is ≥ 80 %), SiLU, the loss reductions, our SGEMM vs cuBLAS on
//   the token projections and their weight gradients (split-K), and the fused Adam step over a
//   model-sized parameter set.
// Timing: the engine's compute-stream events around each run, L2 flushed (a fill of twice its
// size) before every repeat, median after one warm-up; NVTX ranges name every timed run.
#include <cstdio>
#include <string>

#include "bench/bench.h"

#ifdef CPETS_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <array>
#include <functional>
#include <vector>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/device.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/optim.h"
#endif

namespace {

#ifndef CPETS_HAVE_CUDA

CPETS_BENCH("kernels", "engine ops") {
  std::printf("cpets-bench kernels (engine ops): skipped — this build has no CUDA backend (configure with "
              "-DCPETS_CUDA=ON)\n");
}

#else

using namespace cpets;

double bandwidth_peak() {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return 0;
  const std::string name = prop.name;
  if (name.find("H200") != std::string::npos) return 4.8e12;
  if (name.find("H100") != std::string::npos) return name.find("PCIe") != std::string::npos ? 2.0e12 : 3.35e12;
  return 0;  // unknown card: no fraction printed
}

double median_gpu_seconds(const std::string& name, int repeats, const std::function<void()>& run) {
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  Tensor flush = Tensor::empty({std::max<int64_t>(2 * int64_t(prop.l2CacheSize), 64 << 20) / 4}, Device::cuda());
  run();
  cuda_synchronize();
  std::vector<double> t;
  CudaEvent start, stop;
  for (int r = 0; r < repeats; ++r) {
    flush.fill_(float(r));
    nvtxRangePushA(name.c_str());
    start.record();
    run();
    stop.record();
    nvtxRangePop();
    stop.synchronize();
    t.push_back(stop.elapsed_ms(start) * 1e-3);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

Tensor device_random(const Shape& s, uint32_t seed) { return bench::random_input(s, seed).to(Device::cuda()).detach(); }

void print_row(const std::string& name, double seconds, double bytes, double flops, double peak_bw,
               const std::string& vs = "") {
  std::printf("%-58s %9.3f", name.c_str(), seconds * 1e3);
  if (bytes > 0) std::printf(" %8.0f GB/s", bytes / seconds * 1e-9);
  if (bytes > 0 && peak_bw > 0) std::printf(" %5.1f%% of peak", 100.0 * bytes / seconds / peak_bw);
  if (flops > 0) std::printf(" %8.2f TFLOP/s", flops / seconds * 1e-12);
  std::printf("%s\n", vs.c_str());
}

CPETS_BENCH("kernels", "engine ops") {
  std::string why;
  if (!cuda_available(&why)) {
    std::printf("cpets-bench kernels (engine ops): skipped — %s\n", why.c_str());
    return;
  }
  const double bw = bandwidth_peak();
  const int reps = ctx.quick ? 3 : 10;
  std::printf("\nengine ops on %s (bandwidth peak assumed %.2f TB/s)\n", cuda_device_description().c_str(), bw * 1e-12);
  std::printf("%-58s %9s\n", "op", "ms");

  // GroupNorm+SiLU at the full resolution: 2 × 64 × 96×128×96 (1.2 GB per tensor).
  const Shape big = ctx.quick ? Shape{2, 32, 48, 64, 48} : Shape{2, 64, 96, 128, 96};
  {
    Tensor x = device_random(big, 1), gamma = device_random({big[1]}, 2), beta = device_random({big[1]}, 3);
    const double n = double(shape_numel(big)) * 4;
    const double t = median_gpu_seconds("group_norm_silu fwd", reps, [&] {
      NoGradGuard no_grad;
      group_norm_silu(x, 32, gamma, beta, 1e-6f);
    });
    print_row("group_norm_silu forward " + shape_str(big), t, 3 * n, 0, bw);  // stats read, apply read+write
    Tensor gy = device_random(big, 4);
    const double tb = median_gpu_seconds("group_norm_silu fwd+bwd", reps, [&] {
      Tensor xg = x.detach();  // a fresh leaf on the same storage
      xg.set_requires_grad(true);
      group_norm_silu(xg, 32, gamma, beta, 1e-6f).backward(gy);
    });
    // Backward: row sums read x and dy, the apply pass reads both and writes dx; autograd then
    // copies dx into the leaf's .grad (read + write): 3n + 2n + 3n + 2n with the forward's 3n.
    print_row("group_norm_silu forward+backward (+ grad copy)", tb, 13 * n, 0, bw);
    const double ts = median_gpu_seconds("silu", reps, [&] { silu(x); });
    print_row("silu " + shape_str(big), ts, 2 * n, 0, bw);
    const double tl = median_gpu_seconds("l1_loss", reps, [&] { l1_loss(x, gy); });
    print_row("l1_loss (one pass over both inputs) " + shape_str(big), tl, 2 * n, 0, bw);
    const double tr = median_gpu_seconds("sum", reps, [&] { sum(x, {0, 2, 3, 4}); });
    print_row("sum over (B, D, H, W) (a bias gradient) " + shape_str(big), tr, n, 0, bw);
  }

  // Token projections of the transformer at the bottleneck and their weight gradient (split-K),
  // ours and cuBLAS's in each precision (fp32 on the CUDA cores, tf32/bf16 on the tensor cores).
  for (const auto& [rows, in, outf] : std::vector<std::array<int64_t, 3>>{{36864, 512, 512}, {36864, 512, 2048}}) {
    Tensor x = device_random({rows, in}, 5), w = device_random({outf, in}, 6), g = device_random({rows, outf}, 7);
    const double flops = 2.0 * double(rows) * double(in) * double(outf);
    for (const char* precision : {"fp32", "tf32", "bf16"}) {
      set_backend("precision", precision);
      double ours = 0;
      for (const char* backend : {"cuda", "cublas"}) {
        set_backend("gemm", backend);
        // The exact calls linear() and its backward make (engine/ops_linalg.cpp).
        Tensor y = Tensor::empty({rows, outf}, Device::cuda()), dw = Tensor::empty({outf, in}, Device::cuda());
        const double tf = median_gpu_seconds(std::string("linear ") + backend, reps, [&] {
          dispatch::sgemm(Device::cuda(), false, true, rows, outf, in, 1.f, x.data(), in, w.data(), in, 0.f, y.data(), outf);
        });
        const double tw = median_gpu_seconds(std::string("dW ") + backend, reps, [&] {
          dispatch::sgemm(Device::cuda(), true, false, outf, in, rows, 1.f, g.data(), outf, x.data(), in, 0.f, dw.data(), in);
        });
        const std::string tag = std::string(" [") + backend + ", " + precision + "]";
        char ratio[64] = "";
        if (std::string(backend) == "cuda") ours = tf + tw;
        else std::snprintf(ratio, sizeof ratio, "   ours/cuBLAS %.2fx", ours / (tf + tw));
        print_row("x·Wᵀ " + std::to_string(rows) + "×" + std::to_string(in) + "→" + std::to_string(outf) + tag, tf, 0,
                  flops, bw);
        print_row("dW = gᵀ·x (K = " + std::to_string(rows) + ")" + tag, tw, 0, flops, bw, ratio);
      }
    }
    set_backend("gemm", "cuda");
    set_backend("precision", "fp32");
  }

  // Fused Adam over ~60 M parameters in 400 tensors (a model-sized step: one launch).
  {
    NamedTensors params;
    for (int i = 0; i < 400; ++i) {
      Tensor p = device_random({150000}, uint32_t(100 + i)).set_requires_grad(true);
      p.set_grad(device_random({150000}, uint32_t(1000 + i)));
      params.emplace_back("p" + std::to_string(i), p);
    }
    Adam opt(params);
    const double t = median_gpu_seconds("adam", reps, [&] { opt.step(); });
    print_row("Adam step, 400 tensors, 60 M parameters (fused)", t, 400.0 * 150000 * 4 * 7, 0, bw);
  }
}

#endif

}  // namespace
