// cpets-bench: speed figures, printed next to PyTorch's measured in the same run.
//   cpets-bench ops [--quick] [--filter TEXT] [--torch FILE|none] [--rounds N]
//   cpets-bench train [--preset demo|full|tiny] [--kind causal-pets|unet|unet-cond|pix2pix|cyclegan|bmgan|bpgan] [--batch N] [--steps N] [--device cpu|cuda[:N]] [--torch FILE|none]
//     (PyTorch builds the same network for every kind: tools/torch_model.py --bench --kind)
#include <CLI/CLI.hpp>

#include "cli_main.h"
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <omp.h>

#include "bench/bench.h"
#include "bench/comm_bench.h"
#include "bench/train_bench.h"
#include "engine/allocator.h"
#include "kernels/cpu/isa.h"
#include "models/config.h"
#include "train/config.h"

using namespace cpets;

namespace {

// Runs tools/bench_torch.py (PyTorch's fastest CPU configuration) and reads its JSON figures.
std::map<std::string, double> torch_figures(const std::string& source, bool quick, const std::string& filter,
                                            bool print_label) {
  std::map<std::string, double> fig;
  if (source == "none") return fig;
  std::string json_text;
  if (!source.empty()) {
    std::ifstream f(source);
    if (!f) throw std::runtime_error("--torch " + source + ": cannot open the file");
    json_text.assign(std::istreambuf_iterator<char>(f), {});
  } else {
    std::string cmd = bench::torch_python_command() + " " CPETS_SOURCE_DIR "/tools/bench_torch.py --threads " +
                      std::to_string(omp_get_max_threads()) + (quick ? " --quick" : "") +
                      (filter.empty() ? "" : " --filter '" + filter + "'") + " 2>/dev/null";
    const auto out = bench::run_capture(cmd);
    if (!out) {
      std::cerr << "note: PyTorch is not available here (" << bench::torch_python_command()
                << " tools/bench_torch.py failed); ratios are omitted. `tools/cpets.sh bench` installs it.\n";
      return fig;
    }
    json_text = *out;
  }
  auto j = nlohmann::json::parse(json_text);
  if (print_label)
    std::printf("%s\n", bench::torch_label(j.value("torch", std::string("?")),
                                           j.value("cpu_capability", std::string("unknown"))).c_str());
  for (auto& [k, v] : j["seconds"].items()) fig[k] = v.get<double>();
  return fig;
}

}  // namespace

namespace {
int run(CLI::App& app, CLI::App* train, const bench::TrainBenchOptions& train_opt, bench::Context& ctx,
        const std::string& filter, const std::string& torch_src);
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cpets-bench: speed of the engine's ops, next to PyTorch measured in the same run"};
  app.require_subcommand(1);
  bench::Context ctx;
  std::string filter, torch_src;
  auto add_common = [&](CLI::App* sub) {
    sub->add_flag("--quick", ctx.quick, "fewer repeats, skip the largest shapes");
    sub->add_option("--filter", filter, "only cases whose name contains this text");
    sub->add_option("--torch", torch_src, "PyTorch figures: a JSON file from tools/bench_torch.py, or 'none'");
    sub->add_option("--repeats", ctx.repeats, "timed repeats per case (median reported)");
    sub->add_option("--rounds", ctx.rounds, "ours and PyTorch's measured alternately this many times (medians reported)")
        ->capture_default_str()
        ->check(CLI::Range(1, 100));
  };
  CLI::App* ops = app.add_subcommand("ops", "every op family at the model's shapes (CPU)");
  add_common(ops);
  CLI::App* kernels = app.add_subcommand("kernels", "the CUDA kernel lab: each kernel version vs cuDNN/cuBLAS (GPU)");
  add_common(kernels);
  bench::TrainBenchOptions train_opt;
  CLI::App* train = app.add_subcommand("train", "one training step of a model preset: time, per-op breakdown, memory, vs PyTorch");
  train->add_option("--preset", train_opt.preset, "model preset: demo, full or tiny")->capture_default_str();
  std::string kinds;
  for (const auto& k : models::model_kinds()) kinds += (kinds.empty() ? "" : ", ") + k;
  train->add_option("--kind", train_opt.kind, "model.kind: " + kinds + " (PyTorch builds the same kind beside it)")
      ->capture_default_str();
  train->add_option("--batch", train_opt.batch, "batch size")->capture_default_str();
  train->add_option("--steps", train_opt.steps, "timed steps (median reported)")->capture_default_str();
  train->add_option("--warmup", train_opt.warmup, "untimed steps first")->capture_default_str();
  train->add_option("--top", train_opt.top, "ops listed in the breakdown")->capture_default_str();
  train->add_option("--torch", train_opt.torch, "PyTorch figures: JSON from tools/torch_model.py --bench, or 'none'");
  train->add_option("--device", train_opt.device, "cpu, cuda or cuda:N (PyTorch runs on the same device)")
      ->capture_default_str();
  train->add_option("--precision", train_opt.precision,
                    "on a GPU: fp32, tf32 or bf16, the arithmetic of the convolutions and matrix products (train.precision; "
                    "PyTorch: TF32 switched on or off, or bf16 autocast)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "tf32", "bf16"}));
  train->add_option("--rounds", train_opt.rounds,
                    "our timed steps and PyTorch's run alternately this many times (medians reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  bool ranks = false;
  bench::DataParallelBenchOptions dp_opt;
  train->add_flag("--ranks", ranks,
                  "data-parallel: under mpirun -np N, the step time and samples/s of N ranks (batch per rank) against "
                  "one, with and without the all-reduce overlapped with the backward pass");
  train->add_option("--bucket-mb", dp_opt.bucket_mb,
                    "with --ranks: gradient bucket size in MiB (configs/demo.json: 1, full.json: 25)")
      ->capture_default_str();
  bench::CommBenchOptions comm_opt;
  CLI::App* comm = app.add_subcommand("comm", "all-reduce bandwidth over message sizes (under mpirun -np N)");
  comm->add_option("--max-mb", comm_opt.max_mb, "largest message in MiB")->capture_default_str();
  comm->add_option("--repeats", comm_opt.repeats, "timed all-reduces per size (median)")->capture_default_str();
  return cpets::tools::run_main<cpets::train::ConfigError>(app, argc, argv, [&] {
    if (comm->parsed()) return bench::run_comm_bench(comm_opt);
    if (train->parsed() && ranks) {
      dp_opt.preset = train_opt.preset;
      dp_opt.batch = train_opt.batch;
      dp_opt.steps = train_opt.steps;
      dp_opt.warmup = train_opt.warmup;
      return bench::run_data_parallel_bench(dp_opt);
    }
    return run(app, train, train_opt, ctx, filter, torch_src);
  });
}

namespace {
int run(CLI::App& app, CLI::App* train, const bench::TrainBenchOptions& train_opt, bench::Context& ctx,
        const std::string& filter, const std::string& torch_src) {
  if (train->parsed()) return bench::run_train_bench(train_opt);
  const std::string suite = app.get_subcommands().front()->get_name();
  if (ctx.quick) {
    ctx.repeats = std::min(ctx.repeats, 3);
    if (app.get_subcommands().front()->count("--rounds") == 0) ctx.rounds = 1;
  }
  auto run_cases = [&] {
    std::vector<bench::Result> results;
    for (auto& c : bench::registry()) {
      if (c.suite != suite) continue;
      if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
      c.fn(ctx, results);
    }
    return results;
  };
  if (suite == "kernels") {  // the kernel lab prints its own tables (no PyTorch CPU column)
    run_cases();
    return 0;
  }

  // Ours, then PyTorch's, `rounds` times: each figure is a median over the rounds.
  std::vector<bench::Result> results;
  std::map<std::string, bench::Rounds> rounds;
  for (int r = 0; r < ctx.rounds; ++r) {
    if (ctx.rounds > 1) std::fprintf(stderr, "round %d of %d\n", r + 1, ctx.rounds);
    std::vector<bench::Result> ours = run_cases();
    const auto torch = torch_figures(torch_src, ctx.quick, filter, r == 0);
    for (const auto& res : ours) {
      bench::Rounds& f = rounds[res.name];
      f.ours.push_back(res.seconds);
      if (auto it = torch.find(res.torch_key); it != torch.end()) f.theirs.push_back(it->second);
    }
    if (r == 0) results = std::move(ours);
  }

  std::printf("cpets-bench %s — %d OpenMP threads; median of %d runs in each of %d round%s; CPU kernels %s\n",
              suite.c_str(), omp_get_max_threads(), ctx.repeats, ctx.rounds, ctx.rounds > 1 ? "s" : "",
              kernels::cpu::cpu_isa_description().c_str());
  std::printf("%-58s %10s %10s %10s %10s %8s\n", "case", "ms", "GFLOP/s", "GB/s", "torch ms", "speedup");
  for (const auto& res : results) {
    const bench::Rounds& f = rounds[res.name];
    const double seconds = f.ours_median();
    std::string gf = res.flops > 0 ? std::to_string(res.flops / seconds / 1e9).substr(0, 7) : "-";
    std::string gb = res.bytes > 0 ? std::to_string(res.bytes / seconds / 1e9).substr(0, 7) : "-";
    if (f.compared())
      std::printf("%-58s %10.2f %10s %10s %10.2f %7.2fx%s\n", res.name.c_str(), seconds * 1e3, gf.c_str(), gb.c_str(),
                  f.theirs_median() * 1e3, f.theirs_median() / seconds, f.spread(/*inverse=*/true).c_str());
    else
      std::printf("%-58s %10.2f %10s %10s %10s %8s\n", res.name.c_str(), seconds * 1e3, gf.c_str(), gb.c_str(), "-", "-");
  }
  std::printf("speedup = PyTorch time / cpets time (>1: cpets is faster), medians over the rounds (per-round range). "
              "Peak host memory %.1f MB.\n",
              host_memory_stats().peak_bytes / 1e6);
  return 0;
}
}  // namespace
