// GPU tests of the flash-attention kernels (kernels/cuda/attention) against the CPU kernels and
// against the cuBLAS + softmax composition (kernels/cudnn/attention): self- and cross-attention
// (Nk from 1 to 2304), head dims 8, 16, 32 (the model's) and odd ones (3, 9, 27, 64), odd lengths.
// FP32 throughout: outputs within 2e-6·√N of the largest reference value (N = terms summed per
// output), lse within 1e-5; the backward is bitwise reproducible.
#include <doctest/doctest.h>

#include <cstdio>
#include <vector>

#include "gpu/gpu_util.h"
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "kernels/cudnn/attention.h"

using namespace cpets;
using namespace cpets::gpu_test;
namespace kc = cpets::kernels::cuda;
namespace kd = cpets::kernels::cudnn;
using kc::AttentionShape;

namespace {

struct Host {
  std::vector<float> q, k, v, dout;
  std::vector<float> out, lse, dq, dk, dv;
};

Host cpu_reference(const AttentionShape& s, uint32_t seed) {
  Host h;
  h.q = random_vector(s.batch * s.nq * s.channels, seed, 2.f);  // peaked rows
  h.k = random_vector(s.batch * s.nk * s.channels, seed + 1);
  h.v = random_vector(s.batch * s.nk * s.channels, seed + 2);
  h.dout = random_vector(h.q.size(), seed + 3);
  h.out.resize(h.q.size());
  h.lse.resize(s.batch * s.heads * s.nq);
  h.dq.resize(h.q.size());
  h.dk.resize(h.k.size());
  h.dv.resize(h.v.size());
  std::vector<float> scratch(std::max(kernels::cpu::attention_forward_scratch_floats(s),
                                      kernels::cpu::attention_backward_scratch_floats(s)));
  kernels::cpu::attention_forward(s, h.q.data(), h.k.data(), h.v.data(), h.out.data(), h.lse.data(), scratch.data());
  kernels::cpu::attention_backward(s, h.q.data(), h.k.data(), h.v.data(), h.out.data(), h.lse.data(), h.dout.data(),
                                   h.dq.data(), h.dk.data(), h.dv.data(), scratch.data());
  return h;
}

struct DeviceResults {
  std::vector<float> out, lse, dq, dk, dv;
};

DeviceResults run_ours(const AttentionShape& s, const Host& h) {
  auto q = DeviceBuffer::from(h.q), k = DeviceBuffer::from(h.k), v = DeviceBuffer::from(h.v),
       dout = DeviceBuffer::from(h.dout);
  DeviceBuffer out(h.out.size()), lse(h.lse.size()), dq(h.q.size()), dk(h.k.size()), dv(h.v.size());
  for (auto* b : {&out, &lse, &dq, &dk, &dv}) b->fill_nan();
  kc::attention_forward(s, q.f(), k.f(), v.f(), out.f(), lse.f(), nullptr);
  size_t ws_bytes = std::max<size_t>(kc::attention_backward_workspace_bytes(s), 256);
  auto ws = DeviceBuffer::bytes(ws_bytes);
  kc::attention_backward(s, q.f(), k.f(), v.f(), out.f(), lse.f(), dout.f(), dq.f(), dk.f(), dv.f(), ws.get(), ws_bytes,
                         nullptr);
  return {out.download(), lse.download(), dq.download(), dk.download(), dv.download()};
}

DeviceResults run_cublas(const AttentionShape& s, const Host& h) {
  auto q = DeviceBuffer::from(h.q), k = DeviceBuffer::from(h.k), v = DeviceBuffer::from(h.v),
       dout = DeviceBuffer::from(h.dout);
  DeviceBuffer out(h.out.size()), lse(h.lse.size()), dq(h.q.size()), dk(h.k.size()), dv(h.v.size());
  size_t ws_bytes = kd::attention_reference_workspace_bytes(s);
  auto ws = DeviceBuffer::bytes(ws_bytes);
  kd::attention_reference_forward(s, kc::Precision::fp32_exact, q.f(), k.f(), v.f(), out.f(), lse.f(), ws.get(), ws_bytes,
                                  nullptr);
  kd::attention_reference_backward(s, kc::Precision::fp32_exact, q.f(), k.f(), v.f(), out.f(), dout.f(), dq.f(), dk.f(),
                                   dv.f(), ws.get(), ws_bytes, nullptr);
  return {out.download(), lse.download(), dq.download(), dk.download(), dv.download()};
}

// max |got − want| / max |want|.
double error_vs_peak(const std::vector<float>& got, const std::vector<float>& want) {
  double peak = 0, worst = 0;
  for (float w : want) peak = std::max(peak, double(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i) {
    double e = std::fabs(double(got[i]) - want[i]);
    if (std::isnan(e)) e = INFINITY;  // an unwritten output (NaN fill) must fail
    worst = std::max(worst, e);
  }
  return worst / (peak + 1e-30);
}

double tolerance(int64_t terms) { return 2e-6 * std::sqrt(double(terms)) + 2e-6; }

void check_close(const AttentionShape& s, const DeviceResults& got, const Host& want, const char* what) {
  INFO(what << ": B " << s.batch << " Nq " << s.nq << " Nk " << s.nk << " C " << s.channels << " heads " << s.heads);
  CHECK(error_vs_peak(got.out, want.out) <= tolerance(s.nk));
  CHECK(error_vs_peak(got.lse, want.lse) <= 1e-5);
  CHECK(error_vs_peak(got.dq, want.dq) <= tolerance(s.nk));
  CHECK(error_vs_peak(got.dk, want.dk) <= tolerance(s.nq));
  CHECK(error_vs_peak(got.dv, want.dv) <= tolerance(s.nq));
}

std::vector<AttentionShape> shapes() {
  return {
      {2, 2304, 2304, 128, 4},  // encoder self-attention (d = 32)
      {2, 2304, 2304, 64, 8},   // generator self-attention (d = 8)
      {2, 2304, 8, 128, 4},     // cross-attention to 8 demographic tokens
      {2, 2304, 8, 64, 8},
      {1, 77, 133, 24, 3},      // odd lengths, d = 8
      {2, 65, 1, 16, 1},        // one key, d = 16
      {1, 130, 70, 27, 3},      // d = 9
      {1, 5, 200, 64, 1},       // d = 64
      {2, 33, 31, 9, 3},        // d = 3
  };
}

}  // namespace

TEST_CASE("flash attention (ours) matches the CPU kernels, forward and backward") {
  uint32_t seed = 10;
  for (const AttentionShape& s : shapes()) {
    Host h = cpu_reference(s, seed += 10);
    check_close(s, run_ours(s, h), h, "ours vs CPU");
  }
}

TEST_CASE("flash attention (ours) and the cuBLAS + softmax composition agree; the composition matches the CPU") {
  uint32_t seed = 300;
  for (const AttentionShape& s : shapes()) {
    Host h = cpu_reference(s, seed += 10);
    check_close(s, run_cublas(s, h), h, "cuBLAS composition vs CPU");
  }
}

TEST_CASE("flash attention backward is bitwise reproducible (no atomics, fixed split order)") {
  for (const AttentionShape& s : {AttentionShape{2, 2304, 8, 128, 4}, AttentionShape{1, 300, 257, 64, 2}}) {
    Host h = cpu_reference(s, 77);
    DeviceResults a = run_ours(s, h), b = run_ours(s, h);
    CHECK(bitwise_equal(a.out, b.out));
    CHECK(bitwise_equal(a.dq, b.dq));
    CHECK(bitwise_equal(a.dk, b.dk));
    CHECK(bitwise_equal(a.dv, b.dv));
  }
}

TEST_CASE("flash attention backward: dq alone, or dk and dv alone") {
  AttentionShape s{1, 70, 40, 32, 2};
  Host h = cpu_reference(s, 5);
  auto q = DeviceBuffer::from(h.q), k = DeviceBuffer::from(h.k), v = DeviceBuffer::from(h.v),
       dout = DeviceBuffer::from(h.dout), out = DeviceBuffer::from(h.out), lse = DeviceBuffer::from(h.lse);
  DeviceBuffer dq(h.q.size()), dk(h.k.size()), dv(h.v.size());
  size_t ws_bytes = kc::attention_backward_workspace_bytes(s);
  auto ws = DeviceBuffer::bytes(ws_bytes);
  kc::attention_backward(s, q.f(), k.f(), v.f(), out.f(), lse.f(), dout.f(), dq.f(), nullptr, nullptr, ws.get(),
                         ws_bytes, nullptr);
  CHECK(error_vs_peak(dq.download(), h.dq) <= tolerance(s.nk));
  kc::attention_backward(s, q.f(), k.f(), v.f(), out.f(), lse.f(), dout.f(), nullptr, dk.f(), dv.f(), ws.get(),
                         ws_bytes, nullptr);
  CHECK(error_vs_peak(dk.download(), h.dk) <= tolerance(s.nq));
  CHECK(error_vs_peak(dv.download(), h.dv) <= tolerance(s.nq));
}

TEST_CASE("flash attention: bad input gives a clear exception") {
  DeviceBuffer b(1024);
  CHECK_THROWS_WITH_AS(kc::attention_forward(AttentionShape{1, 4, 4, 256, 2}, b.f(), b.f(), b.f(), b.f(), b.f(), nullptr),
                       doctest::Contains("above 64"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(kc::attention_forward(AttentionShape{1, 4, 4, 30, 4}, b.f(), b.f(), b.f(), b.f(), b.f(), nullptr),
                       doctest::Contains("divisible by heads"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(kc::attention_backward(AttentionShape{1, 4, 4, 8, 1}, b.f(), b.f(), b.f(), b.f(), b.f(), b.f(),
                                              b.f(), b.f(), nullptr, b.get(), 4096, nullptr),
                       doctest::Contains("both given or both null"), std::invalid_argument);
}
