// The kernel lab: `cpets-bench kernels` runs every version of the hand-written CUDA kernels next
// to the cuDNN / cuBLAS references at the model's shapes (full preset: 96×128×96, batch 2) and
// prints time, TFLOP/s, the fraction of the card's peak and the ratio to the reference.
//
// Timing: CUDA events around each run, the L2 cache flushed (a memset of twice its size) before
// every repeat, median of the repeats after one warm-up. Every timed run sits in an NVTX range
// named like its table row, so Nsight Systems / Compute show them by name.
// FLOP counts: conv 2·B·oD·oH·oW·Cout·Cin·taps per pass (forward, backward data, backward weight
// each); attention forward 4·B·heads·Nq·Nk·d (QKᵀ and PV), backward 8·B·heads·Nq·Nk·d (dV, dP,
// dQ, dK; the recomputed QKᵀ is not counted).
#include <cstdio>
#include <string>

#include "bench/bench.h"

#ifdef CPETS_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <array>
#include <functional>
#include <stdexcept>
#include <vector>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/conv3d.h"
#include "kernels/cudnn/attention.h"
#include "kernels/cudnn/conv3d.h"
#endif

namespace {

#ifndef CPETS_HAVE_CUDA

CPETS_BENCH("kernels", "conv3d and attention") {
  std::printf("cpets-bench kernels: skipped — this build has no CUDA backend (configure with -DCPETS_CUDA=ON on a "
              "machine with nvcc)\n");
}

#else

namespace kc = cpets::kernels::cuda;
namespace kd = cpets::kernels::cudnn;
using kc::Precision;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("cpets-bench kernels: ") + what + ": " + cudaGetErrorString(e));
}

// Peak throughput assumed for the fraction-of-peak column (dense, no sparsity), from NVIDIA's
// data sheets; other cards get an FP32 estimate from SM count × clock.
struct Peaks {
  std::string card;
  double fp32 = 0, tf32 = 0, bf16 = 0, bandwidth = 0;  // FLOP/s, FLOP/s, FLOP/s, B/s
  std::string source;
};

Peaks card_peaks() {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  Peaks p;
  p.card = prop.name;
  const std::string name = prop.name;
  if (name.find("H100") != std::string::npos && name.find("PCIe") != std::string::npos) {
    p = {name, 51.2e12, 378e12, 756e12, 2.0e12, "H100 PCIe data sheet"};
  } else if (name.find("H100") != std::string::npos) {
    p = {name, 66.9e12, 494.7e12, 989.4e12, 3.35e12, "H100 SXM5 data sheet"};
  } else if (name.find("H200") != std::string::npos) {
    p = {name, 66.9e12, 494.7e12, 989.4e12, 4.8e12, "H200 SXM data sheet"};
  } else {
    int clock_khz = 0;
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
    double fp32 = 2.0 * 128 * prop.multiProcessorCount * clock_khz * 1e3;
    p = {name, fp32, 8 * fp32, 16 * fp32, 0, "estimate: 128 FP32 lanes/SM × clock; tensor cores 8×/16×"};
  }
  return p;
}

// Times `run` with CUDA events: one warm-up, then `repeats` runs each after an L2 flush.
class Timer {
 public:
  Timer() {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    flush_bytes_ = std::max<size_t>(2 * static_cast<size_t>(prop.l2CacheSize), size_t{64} << 20);
    check(cudaMalloc(&flush_, flush_bytes_), "cudaMalloc (L2 flush buffer)");
    check(cudaEventCreate(&start_), "cudaEventCreate");
    check(cudaEventCreate(&stop_), "cudaEventCreate");
  }
  ~Timer() {
    cudaFree(flush_);
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  double median_seconds(const std::string& name, int repeats, const std::function<void()>& run) {
    run();  // warm-up (also picks cuDNN's algorithm and fills its caches)
    check(cudaDeviceSynchronize(), name.c_str());
    std::vector<double> t;
    for (int r = 0; r < repeats; ++r) {
      check(cudaMemsetAsync(flush_, r & 0xff, flush_bytes_), "cudaMemsetAsync (L2 flush)");
      nvtxRangePushA(name.c_str());
      check(cudaEventRecord(start_), "cudaEventRecord");
      run();
      check(cudaEventRecord(stop_), "cudaEventRecord");
      nvtxRangePop();
      check(cudaEventSynchronize(stop_), name.c_str());
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
      t.push_back(ms * 1e-3);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }

 private:
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
  cudaEvent_t start_{}, stop_{};
};

// A device buffer of random-ish floats (a fixed pattern: the values do not change the timing).
struct Buffer {
  void* p = nullptr;
  explicit Buffer(size_t bytes) {
    check(cudaMalloc(&p, std::max<size_t>(bytes, 256)), "cudaMalloc");
    check(cudaMemset(p, 0x3c, std::max<size_t>(bytes, 256)), "cudaMemset");  // ≈ 0.0115f everywhere
  }
  ~Buffer() { cudaFree(p); }
  Buffer(const Buffer&) = delete;
  float* f() const { return static_cast<float*>(p); }
};

bool device_available(std::string& why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) why = cudaGetErrorString(e);
  else if (n == 0) why = "cudaGetDeviceCount found 0 devices";
  return e == cudaSuccess && n > 0;
}

struct Row {
  std::string name;
  double seconds, flops, peak, reference_seconds;
};

void print_rows(const std::vector<Row>& rows, const char* reference) {
  std::printf("%-62s %9s %9s %8s %10s\n", "kernel", "ms", "TFLOP/s", "%peak", reference);
  for (const Row& r : rows) {
    double tflops = r.flops / r.seconds / 1e12;
    if (r.reference_seconds > 0)
      std::printf("%-62s %9.3f %9.2f %7.1f%% %9.2fx\n", r.name.c_str(), r.seconds * 1e3, tflops,
                  100 * r.flops / r.seconds / r.peak, r.reference_seconds / r.seconds);
    else
      std::printf("%-62s %9.3f %9.2f %7.1f%% %10s\n", r.name.c_str(), r.seconds * 1e3, tflops,
                  100 * r.flops / r.seconds / r.peak, "-");
  }
}

kc::Conv3dShape conv(int64_t cin, int64_t cout, std::array<int64_t, 3> in, int64_t k, int64_t stride, int64_t pad) {
  return kc::Conv3dShape::of(2, cin, cout, in, {k, k, k}, {stride, stride, stride}, {pad, pad, pad});
}

std::string conv_name(const kc::Conv3dShape& s) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%lld→%lld %lldx%lldx%lld k%lld s%lld", (long long)s.in_channels,
                (long long)s.out_channels, (long long)s.in[0], (long long)s.in[1], (long long)s.in[2],
                (long long)s.kernel[0], (long long)s.stride[0]);
  return buf;
}

std::string why_no_device;

CPETS_BENCH("kernels", "conv3d") {
  if (!device_available(why_no_device)) {
    std::printf("cpets-bench kernels conv3d: skipped — no CUDA device (%s)\n", why_no_device.c_str());
    return;
  }
  const Peaks peaks = card_peaks();
  std::printf("conv3d on %s; peaks assumed (%s): FP32 %.1f, TF32 %.1f, BF16 %.1f TFLOP/s dense\n", peaks.card.c_str(),
              peaks.source.c_str(), peaks.fp32 / 1e12, peaks.tf32 / 1e12, peaks.bf16 / 1e12);
  const std::array<int64_t, 3> full{96, 128, 96}, half{48, 64, 48}, quarter{24, 32, 24};
  std::vector<kc::Conv3dShape> shapes = {conv(1, 64, full, 3, 1, 1),       conv(64, 64, full, 3, 1, 1),
                                         conv(64, 128, half, 3, 1, 1),     conv(128, 128, half, 3, 1, 1),
                                         conv(128, 128, quarter, 3, 1, 1), conv(64, 64, full, 4, 2, 1),
                                         conv(64, 1, full, 3, 1, 1)};
  if (ctx.quick) shapes = {shapes[2], shapes[4]};
  Timer timer;
  std::vector<Row> rows;
  for (const kc::Conv3dShape& s : shapes) {
    const double flops = 2.0 * s.batch * s.out_voxels() * s.out_channels * s.in_channels * s.taps();
    Buffer x(4 * s.batch * s.in_channels * s.in_voxels()), w(4 * s.out_channels * s.in_channels * s.taps()),
        bias(4 * s.out_channels), y(4 * s.batch * s.out_channels * s.out_voxels()), dx(4 * s.batch * s.in_channels * s.in_voxels()),
        dw(4 * s.out_channels * s.in_channels * s.taps()), db(4 * s.out_channels);
    struct Pass {
      const char* name;
      double cudnn_fp32 = 0, cudnn_tf32 = 0;
    };
    Pass passes[3] = {{"fwd"}, {"bwd-data"}, {"bwd-weight"}};
    // cuDNN first, so our rows can show the ratio.
    for (Precision p : {Precision::fp32_exact, Precision::tf32}) {
      size_t ws_bytes = std::max({kd::conv3d_forward_workspace_bytes(s, p), kd::conv3d_backward_data_workspace_bytes(s, p),
                                  kd::conv3d_backward_weight_workspace_bytes(s, p)});
      Buffer ws(ws_bytes);
      const std::string tag = conv_name(s) + " cudnn-" + kc::precision_name(p);
      std::printf("  %s: %s\n", tag.c_str(), kd::conv3d_cudnn_algorithms(s, p).c_str());
      double t[3] = {
          timer.median_seconds(tag + " fwd", ctx.repeats, [&] { kd::conv3d_forward(s, p, x.f(), w.f(), bias.f(), y.f(), ws.p, ws_bytes, nullptr); }),
          timer.median_seconds(tag + " bwd-data", ctx.repeats, [&] { kd::conv3d_backward_data(s, p, y.f(), w.f(), dx.f(), ws.p, ws_bytes, nullptr); }),
          timer.median_seconds(tag + " bwd-weight", ctx.repeats, [&] { kd::conv3d_backward_weight(s, p, x.f(), y.f(), dw.f(), db.f(), ws.p, ws_bytes, nullptr); })};
      for (int i = 0; i < 3; ++i) {
        (p == Precision::tf32 ? passes[i].cudnn_tf32 : passes[i].cudnn_fp32) = t[i];
        rows.push_back({tag + " " + passes[i].name, t[i], flops, p == Precision::tf32 ? peaks.tf32 : peaks.fp32, 0});
        out.push_back({tag + " " + passes[i].name, t[i], flops, 0, ""});
      }
    }
    for (Precision p : {Precision::fp32_exact, Precision::tf32, Precision::bf16}) {
      size_t ws_bytes = std::max({kc::conv3d_forward_workspace_bytes(s, p), kc::conv3d_backward_data_workspace_bytes(s, p),
                                  kc::conv3d_backward_weight_workspace_bytes(s, p)});
      Buffer ws(ws_bytes);
      const std::string tag = conv_name(s) + " ours-" + kc::precision_name(p);
      double t[3] = {
          timer.median_seconds(tag + " fwd", ctx.repeats, [&] { kc::conv3d_forward(s, p, x.f(), w.f(), bias.f(), y.f(), ws.p, ws_bytes, nullptr); }),
          timer.median_seconds(tag + " bwd-data", ctx.repeats, [&] { kc::conv3d_backward_data(s, p, y.f(), w.f(), dx.f(), ws.p, ws_bytes, nullptr); }),
          timer.median_seconds(tag + " bwd-weight", ctx.repeats, [&] { kc::conv3d_backward_weight(s, p, x.f(), y.f(), dw.f(), db.f(), ws.p, ws_bytes, nullptr); })};
      const double peak = p == Precision::fp32_exact ? peaks.fp32 : p == Precision::tf32 ? peaks.tf32 : peaks.bf16;
      for (int i = 0; i < 3; ++i) {
        // Reference: cuDNN at the same precision (bf16: cuDNN's TF32, the fastest it offers on FP32 data).
        double ref = p == Precision::fp32_exact ? passes[i].cudnn_fp32 : passes[i].cudnn_tf32;
        rows.push_back({tag + " " + passes[i].name, t[i], flops, peak, ref});
        out.push_back({tag + " " + passes[i].name, t[i], flops, 0, ""});
      }
    }
  }
  print_rows(rows, "vs cuDNN");
  std::printf("vs cuDNN = cuDNN time / our time at the same precision (bf16 rows: vs cuDNN TF32); > 1: ours is faster\n\n");
}

kc::AttentionShape attn(int64_t nq, int64_t nk, int64_t channels, int64_t heads) {
  return kc::AttentionShape{2, nq, nk, channels, heads};
}

CPETS_BENCH("kernels", "attention") {
  if (!device_available(why_no_device)) {
    std::printf("cpets-bench kernels attention: skipped — no CUDA device (%s)\n", why_no_device.c_str());
    return;
  }
  const Peaks peaks = card_peaks();
  std::printf("attention on %s; FP32 peak %.1f TFLOP/s (%s)\n", peaks.card.c_str(), peaks.fp32 / 1e12, peaks.source.c_str());
  std::vector<kc::AttentionShape> shapes = {attn(2304, 2304, 128, 4), attn(2304, 2304, 64, 8), attn(2304, 8, 128, 4),
                                            attn(2304, 8, 64, 8)};
  Timer timer;
  std::vector<Row> rows;
  for (const kc::AttentionShape& s : shapes) {
    char label[96];
    std::snprintf(label, sizeof label, "B2 Nq %lld Nk %lld %lldx%lld", (long long)s.nq, (long long)s.nk,
                  (long long)s.heads, (long long)s.head_dim());
    const double fwd_flops = 4.0 * s.batch * s.heads * s.nq * s.nk * s.head_dim(), bwd_flops = 2 * fwd_flops;
    const size_t act = 4 * s.batch * s.nq * s.channels, kv = 4 * s.batch * s.nk * s.channels;
    Buffer q(act), k(kv), v(kv), o(act), lse(4 * s.batch * s.heads * s.nq), dout(act), dq(act), dk(kv), dv(kv);
    double ref_fwd = 0, ref_bwd = 0;
    for (Precision p : {Precision::fp32_exact, Precision::tf32}) {
      size_t ws_bytes = kd::attention_reference_workspace_bytes(s);
      Buffer ws(ws_bytes);
      const std::string tag = std::string(label) + " cublas+softmax-" + kc::precision_name(p);
      double tf = timer.median_seconds(tag + " fwd", ctx.repeats, [&] {
        kd::attention_reference_forward(s, p, q.f(), k.f(), v.f(), o.f(), lse.f(), ws.p, ws_bytes, nullptr);
      });
      double tb = timer.median_seconds(tag + " bwd", ctx.repeats, [&] {
        kd::attention_reference_backward(s, p, q.f(), k.f(), v.f(), o.f(), dout.f(), dq.f(), dk.f(), dv.f(), ws.p,
                                         ws_bytes, nullptr);
      });
      if (p == Precision::fp32_exact) ref_fwd = tf, ref_bwd = tb;
      const double peak = p == Precision::tf32 ? peaks.tf32 : peaks.fp32;
      rows.push_back({tag + " fwd", tf, fwd_flops, peak, 0});
      rows.push_back({tag + " bwd", tb, bwd_flops, peak, 0});
      rows.push_back({tag + " fwd+bwd", tf + tb, fwd_flops + bwd_flops, peak, 0});
    }
    size_t ws_bytes = kc::attention_backward_workspace_bytes(s);
    Buffer ws(ws_bytes);
    const std::string tag = std::string(label) + " ours-flash-fp32";
    double tf = timer.median_seconds(tag + " fwd", ctx.repeats, [&] {
      kc::attention_forward(s, q.f(), k.f(), v.f(), o.f(), lse.f(), nullptr);
    });
    double tb = timer.median_seconds(tag + " bwd", ctx.repeats, [&] {
      kc::attention_backward(s, q.f(), k.f(), v.f(), o.f(), lse.f(), dout.f(), dq.f(), dk.f(), dv.f(), ws.p, ws_bytes,
                             nullptr);
    });
    rows.push_back({tag + " fwd", tf, fwd_flops, peaks.fp32, ref_fwd});
    rows.push_back({tag + " bwd", tb, bwd_flops, peaks.fp32, ref_bwd});
    rows.push_back({tag + " fwd+bwd", tf + tb, fwd_flops + bwd_flops, peaks.fp32, ref_fwd + ref_bwd});
    out.push_back({tag + " fwd", tf, fwd_flops, 0, ""});
    out.push_back({tag + " bwd", tb, bwd_flops, 0, ""});
  }
  print_rows(rows, "vs cuBLAS");
  std::printf("vs cuBLAS = time of the cuBLAS FP32 GEMM + softmax composition / ours; > 1: ours is faster. cuDNN's "
              "fused attention (cudnn frontend) is not wired in.\n\n");
}

#endif

}  // namespace
