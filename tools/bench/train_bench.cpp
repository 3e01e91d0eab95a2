#include "bench/train_bench.h"

#include "bench/bench.h"

#include <nlohmann/json.hpp>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/profiler.h"
#include "kernels/cpu/isa.h"
#include "models/synthesis_model.h"
#include "train/config.h"
#include "train/trainer.h"

namespace cpets::bench {
namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) * 1024.0;  // Linux reports KiB
}

// Process CPU time (user + system, all threads): on a shared machine a single-threaded run's CPU
// time per step is a steadier figure than its wall time.
double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// A fixed random batch of the preset's shapes (the step's cost does not depend on the values).
train::Batch random_batch(const models::ModelConfig& c, int batch, Generator& gen) {
  const Shape vol{batch, 1, c.volume[0], c.volume[1], c.volume[2]};
  train::Batch b;
  b.t1 = rand(vol, gen);
  b.pet = rand(vol, gen);
  b.csf = rand({batch, c.csf_inputs}, gen);
  b.covariates = rand({batch, c.covariate_inputs}, gen);
  return b;
}

nlohmann::json torch_figures(const TrainBenchOptions& opt) {
  if (opt.torch == "none") return {};
  if (opt.kind != "causal-pets") {
    std::cerr << "note: tools/torch_model.py builds Causal PETS only; no PyTorch figures for model.kind " << opt.kind
              << "\n";
    return {};
  }
  std::string text;
  if (!opt.torch.empty()) {
    std::ifstream f(opt.torch);
    if (!f) throw std::runtime_error("--torch " + opt.torch + ": cannot open the file");
    text.assign(std::istreambuf_iterator<char>(f), {});
  } else {
    // PyTorch's faster configuration on these VMs (as tools/bench_torch.py): glibc malloc keeps
    // freed memory instead of returning every large tensor to the system.
    const std::string cmd = "MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824 " +
                            torch_python_command() + " " CPETS_SOURCE_DIR "/tools/torch_model.py --bench " + opt.preset +
                            " --batch " + std::to_string(opt.batch) + " --threads " +
                            std::to_string(omp_get_max_threads()) + " 2>/dev/null";
    std::fprintf(stderr, "running PyTorch for the same model: %s\n", cmd.c_str());
    const auto out = run_capture(cmd);
    if (!out) {
      std::cerr << "note: PyTorch is not available (tools/torch_model.py failed); ratios are omitted. "
                   "`tools/cpets.sh bench train` installs PyTorch.\n";
      return {};
    }
    text = *out;
  }
  return nlohmann::json::parse(text);
}

void print_breakdown(double step_seconds, int top) {
  const auto entries = profiler::entries();
  double total = 0;
  for (const auto& e : entries) total += e.total();
  std::printf("\nwhere one step's time goes (profiled step, %.0f ms accounted):\n", total * 1e3);
  std::printf("  %-26s %9s %9s %9s %7s %7s\n", "op", "fwd ms", "bwd ms", "other ms", "share", "calls");
  int shown = 0;
  for (const auto& e : entries) {
    if (shown++ >= top) break;
    std::printf("  %-26s %9.1f %9.1f %9.1f %6.1f%% %7lld\n", e.name.c_str(), e.forward_seconds * 1e3,
                e.backward_seconds * 1e3, e.other_seconds * 1e3, 100 * e.total() / std::max(total, 1e-12),
                static_cast<long long>(e.forward_calls + e.backward_calls + e.other_calls));
  }
  (void)step_seconds;
}

}  // namespace

int run_train_bench(const TrainBenchOptions& opt) {
  // The kind's own training defaults (optimisers, loss weights), without a perceptual network:
  // the demo preset has no V, and the full preset's V needs converted weights.
  train::Config config = train::make_config(opt.preset, {"model.kind=" + opt.kind, "train.perceptual=none"});
  const models::ModelConfig& cfg = config.model;
  Generator init(777);
  const std::shared_ptr<models::SynthesisModel> owner = models::make_model(cfg, init);
  models::SynthesisModel& model = *owner;
  const train::TrainConfig& t = config.train;
  auto group = [&](NamedTensors p, double lr) {
    return ParamGroup{std::move(p), AdamOptions{lr, t.beta1, t.beta2, t.adam_eps, 0}};
  };
  const models::ObjectiveConfig objective = config.objective();
  Adam g_opt({group(model.generator_parameters(), t.lr)});
  std::optional<Adam> d_opt;
  if (model.trains_discriminator(objective))
    d_opt.emplace(std::vector<ParamGroup>{group(model.discriminator_parameters(), t.lr_discriminator)});
  Generator noise(1234);
  model.set_discriminator_trainable(false);
  const train::StepContext ctx{model, g_opt, d_opt ? &*d_opt : nullptr, nullptr, noise, objective};
  Generator data_gen(42);
  const train::Batch batch = random_batch(cfg, opt.batch, data_gen);
  int64_t steps_done = 0;
  auto run_step = [&] { train::training_step(ctx, batch, ++steps_done); };

  std::printf("cpets-bench train — %s, preset %s, batch %d, volume %lldx%lldx%lld, %d OpenMP threads\n", opt.kind.c_str(),
              opt.preset.c_str(),
              opt.batch, (long long)cfg.volume[0], (long long)cfg.volume[1], (long long)cfg.volume[2],
              omp_get_max_threads());
  for (int i = 0; i < opt.warmup; ++i) run_step();
  host_reset_peak();
  std::vector<double> times, cpu_times;
  for (int i = 0; i < opt.steps; ++i) {
    const double t0 = now(), c0 = cpu_seconds();
    run_step();
    times.push_back(now() - t0);
    cpu_times.push_back(cpu_seconds() - c0);
    std::fprintf(stderr, "  step %d/%d: %.3f s (CPU time %.3f s)\n", i + 1, opt.steps, times.back(), cpu_times.back());
  }
  const double step_s = median(times);
  const double pool_peak = static_cast<double>(host_memory_stats().peak_bytes);

  double infer_s = 0;
  if (opt.infer) {
    NoGradGuard no_grad;
    models::Inputs one{slice(batch.t1, 0, 0, 1), slice(batch.csf, 0, 0, 1), slice(batch.covariates, 0, 0, 1)};
    std::vector<double> t;
    for (int i = 0; i < std::max(3, opt.steps); ++i) {
      const double t0 = now();
      model.synthesise(one);  // abduct + synthesise, ε = 0, as cpets-infer
      t.push_back(now() - t0);
    }
    infer_s = median(t);
  }

  profiler::enable(true);
  profiler::reset();
  run_step();
  profiler::enable(false);

  const nlohmann::json torch = torch_figures(opt);
  const double rss = peak_rss_bytes();
  std::printf("\ncpets CPU kernels: %s; %d threads\n", kernels::cpu::cpu_isa_description().c_str(), omp_get_max_threads());
  if (torch.contains("torch"))
    std::printf("%s\n", torch_label(torch["torch"].get<std::string>(),
                                    torch.value("cpu_capability", std::string("unknown"))).c_str());
  std::printf("\n%-34s %12s %12s %9s\n", "", "cpets", "PyTorch", "ratio");
  auto row = [&](const char* what, double ours, const char* key, double scale, const char* unit) {
    if (torch.contains(key)) {
      const double theirs = torch[key].get<double>();
      std::printf("%-34s %9.3f %-2s %9.3f %-2s %8.2fx\n", what, ours * scale, unit, theirs * scale, unit, ours / theirs);
    } else {
      std::printf("%-34s %9.3f %-2s %12s %9s\n", what, ours * scale, unit, "-", "-");
    }
  };
  row("training step (median)", step_s, "train_step_seconds", 1, "s");
  std::printf("%-34s %9.3f s  (all threads; equals the wall time when the threads never wait)\n", "  CPU time per step (median)",
              median(cpu_times));
  if (opt.infer) row("inference, one volume", infer_s, "infer_seconds", 1, "s");
  row("peak resident memory (process)", rss, "peak_rss_bytes", 1e-9, "GB");
  std::printf("%-34s %9.3f GB (tensors in use at once, caching allocator)\n", "peak tensor memory", pool_peak * 1e-9);
  std::printf("ratio = cpets / PyTorch (< 1: cpets is faster / smaller).\n");
  print_breakdown(step_s, opt.top);
  return 0;
}

}  // namespace cpets::bench
