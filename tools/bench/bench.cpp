#include "bench/bench.h"

#include <algorithm>
#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <tuple>

#include "engine/autograd.h"
#include "kernels/cpu/isa.h"

namespace cpets::bench {

std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}

Registrar::Registrar(const char* suite, const char* name, CaseFn fn) {
  registry().push_back({suite, name, std::move(fn)});
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0 : values[values.size() / 2];
}

std::pair<double, double> Rounds::ratio_range() const {
  double lo = 0, hi = 0;
  for (size_t r = 0; r < std::min(ours.size(), theirs.size()); ++r) {
    const double q = ours[r] / theirs[r];
    lo = r == 0 ? q : std::min(lo, q);
    hi = r == 0 ? q : std::max(hi, q);
  }
  return {lo, hi};
}

std::string Rounds::spread(bool inverse) const {
  const size_t n = std::min(ours.size(), theirs.size());
  if (n < 2) return "";
  auto [lo, hi] = ratio_range();
  if (inverse) std::tie(lo, hi) = std::make_pair(1 / hi, 1 / lo);
  char buf[64];
  std::snprintf(buf, sizeof buf, " (%.2f–%.2f over %zu rounds)", lo, hi, n);
  return buf;
}

double median_seconds(const std::function<void()>& fn, int repeats, int warmup) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < std::max(1, repeats); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(std::move(t));
}

double median_backward_seconds(const std::function<Tensor()>& forward, const Tensor& grad_out, int repeats) {
  std::vector<double> t;
  for (int i = -1; i < std::max(1, repeats); ++i) {  // i = -1: warm-up
    Tensor y = forward();
    auto node = y.grad_fn();
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Tensor> grads = node->apply(grad_out);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i >= 0) t.push_back(s);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::optional<std::string> run_capture(const std::string& command) {
  FILE* p = popen(command.c_str(), "r");
  if (!p) return std::nullopt;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  if (pclose(p) != 0) return std::nullopt;
  return out;
}

std::string torch_python_command() {
  // Like for like: when cpets runs below the CPU's best level, PyTorch is held to the same one
  // (its ATen kernels, oneDNN and MKL), so an AVX-512 machine can stand in for an AVX2 one. MKL
  // matters: scaled_dot_product_attention's CPU kernel multiplies its tiles with MKL's GEMM,
  // which ignores ATen's setting (measured: SDPA forward 80 ms with MKL at AVX-512, 93 ms at AVX2).
  std::string env;
  if (kernels::cpu::cpu_isa() != kernels::cpu::best_cpu_isa()) {
    if (kernels::cpu::cpu_isa() == kernels::cpu::CpuIsa::avx2)
      env = "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ";
    if (kernels::cpu::cpu_isa() == kernels::cpu::CpuIsa::portable)
      env = "ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 ";
  }
  if (const char* py = std::getenv("CPETS_TORCH_PYTHON"); py && *py) return env + py;
  if (const char* home = std::getenv("HOME"); home && *home) {
    const std::string venv = std::string(home) + "/.cache/cpets/torch-venv/bin/python";
    if (std::ifstream(venv).good()) return env + venv;
  }
  return env + "/usr/bin/python3";
}

std::string torch_label(const std::string& version, const std::string& cpu_capability) {
  const bool fallback = version.rfind("1.", 0) == 0;
  return "PyTorch " + version + (fallback ? " (Debian's 1.13 fallback, not the PyTorch 2.x users would pick)" : "") +
         ", its CPU kernels " + cpu_capability;
}

Tensor random_input(const Shape& shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = dist(gen);
  return t;
}

}  // namespace cpets::bench
