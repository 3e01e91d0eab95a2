// A tiny benchmark registry for cpets-bench. Each tools/bench/*.cpp registers cases in a suite
// ("ops", ...); cpets-bench runs a suite and prints time, throughput and the ratio to PyTorch
// measured in the same run (tools/bench_torch.py), matched by `torch_key`.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace cpets::bench {

struct Result {
  std::string name;        // what was measured, with its shape
  double seconds = 0;      // median over repeats
  double flops = 0;        // floating-point operations per run (0 if memory-bound)
  double bytes = 0;        // bytes moved per run, for memory-bound ops (0 if not reported)
  std::string torch_key;   // key into bench_torch.py's output; empty if no PyTorch counterpart
};

struct Context {
  bool quick = false;  // smaller repeat counts, skip the largest shapes
  int repeats = 5;
  int rounds = 3;      // ours and PyTorch's, alternately (Rounds)
};

using CaseFn = std::function<void(const Context&, std::vector<Result>&)>;

struct Registrar {
  Registrar(const char* suite, const char* name, CaseFn fn);
};

struct Case {
  std::string suite, name;
  CaseFn fn;
};
std::vector<Case>& registry();

// The median of some timings (0 for none).
double median(std::vector<double> values);

// One figure of a comparison measured in rounds: each round runs our side, then PyTorch's, so a
// machine whose speed drifts during the run (a shared VM, a turbo clock) weighs on both alike.
// The figure is each side's median over the rounds; the per-round ratios show the spread.
struct Rounds {
  std::vector<double> ours, theirs;  // one value per round (theirs: the rounds PyTorch ran)
  double ours_median() const { return median(ours); }
  double theirs_median() const { return median(theirs); }
  bool compared() const { return !ours.empty() && !theirs.empty(); }
  // Smallest and largest ours[r] / theirs[r] over the rounds that have both.
  std::pair<double, double> ratio_range() const;
  // "" for one round, else " (a–b over N rounds)" of ratio(ours, theirs) = ours/theirs or its inverse.
  std::string spread(bool inverse) const;
};

// Median wall time of fn over `repeats` runs after `warmup` untimed runs.
double median_seconds(const std::function<void()>& fn, int repeats, int warmup = 1);

// Median time of the backward node of `forward()`'s output alone (the forward is not timed).
double median_backward_seconds(const std::function<Tensor()>& forward, const Tensor& grad_out, int repeats);

// Runs a shell command and returns its standard output; nullopt when it cannot start or exits
// non-zero (the PyTorch baselines are optional).
std::optional<std::string> run_capture(const std::string& command);

// The Python that runs the PyTorch baselines: $CPETS_TORCH_PYTHON, else the virtual environment
// `tools/cpets.sh bench` makes (PyTorch 2.x from PyPI, ~/.cache/cpets/torch-venv), else
// /usr/bin/python3 (Debian's PyTorch 1.13: a fallback, named as such in the output). Prefixed
// with the environment that holds PyTorch to cpets' instruction-set level when that is below the
// CPU's best.
std::string torch_python_command();

// "PyTorch <version>, its CPU kernels <capability>", marking Debian's 1.13 as the fallback it is.
std::string torch_label(const std::string& version, const std::string& cpu_capability);

// Uniform in [-1, 1), fixed by the seed.
Tensor random_input(const Shape& shape, uint32_t seed);

}  // namespace cpets::bench

#define CPETS_BENCH_CAT2(a, b) a##b
#define CPETS_BENCH_CAT(a, b) CPETS_BENCH_CAT2(a, b)
#define CPETS_BENCH(suite, name) \
  static void CPETS_BENCH_CAT(bench_fn_, __LINE__)(const ::cpets::bench::Context&, std::vector<::cpets::bench::Result>&); \
  static ::cpets::bench::Registrar CPETS_BENCH_CAT(bench_reg_, __LINE__)(suite, name, CPETS_BENCH_CAT(bench_fn_, __LINE__)); \
  static void CPETS_BENCH_CAT(bench_fn_, __LINE__)(const ::cpets::bench::Context& ctx, std::vector<::cpets::bench::Result>& out)
