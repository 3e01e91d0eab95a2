#include "bench/train_bench.h"

#include "bench/bench.h"
#include "bench/comm_bench.h"

#include <nlohmann/json.hpp>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>

#include "dist/reducer.h"
#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/profiler.h"
#include "kernels/cpu/isa.h"
#include "models/synthesis_model.h"
#include "train/checkpoint.h"
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

// What a benchmarked step trains: the kind's own training defaults (optimisers, loss weights)
// without a perceptual network — the demo preset has no V, and the full preset's V needs
// converted weights — with D frozen outside its own phase, as the trainer does.
struct StepModel {
  train::Config config;
  std::shared_ptr<models::SynthesisModel> model;
  std::unique_ptr<Adam> g_opt, d_opt;  // d_opt null: no discriminator phase
  models::ObjectiveConfig objective;
};

StepModel make_step_model(const std::string& preset, const std::string& kind, Device device = Device::cpu()) {
  StepModel m;
  m.config = train::make_config(preset, {"model.kind=" + kind, "train.perceptual=none"});
  Generator init(777);
  m.model = models::make_model(m.config.model, init);  // drawn on the host, as the trainer does
  m.model->to(device);
  const train::TrainConfig& t = m.config.train;
  auto group = [&](NamedTensors p, double lr) {
    return ParamGroup{std::move(p), AdamOptions{lr, t.beta1, t.beta2, t.adam_eps, 0}};
  };
  m.objective = m.config.objective();
  m.g_opt = std::make_unique<Adam>(std::vector<ParamGroup>{group(m.model->generator_parameters(), t.lr)});
  if (m.model->trains_discriminator(m.objective))
    m.d_opt = std::make_unique<Adam>(std::vector<ParamGroup>{group(m.model->discriminator_parameters(), t.lr_discriminator)});
  m.model->set_discriminator_trainable(false);
  return m;
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
                            " --kind " + opt.kind + " --batch " + std::to_string(opt.batch) + " --steps " +
                            std::to_string(opt.steps) + " --warmup " + std::to_string(opt.warmup) + " --device " +
                            opt.device + " --precision " + opt.precision + " --threads " +
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
  nlohmann::json figures = nlohmann::json::parse(text);
  // A file from another kind's run would put a different network beside ours (files written
  // before torch_model.py built the baselines carry no kind: Causal PETS).
  const std::string theirs = figures.value("kind", std::string("causal-pets"));
  if (theirs != opt.kind)
    throw std::runtime_error("--torch " + opt.torch + ": PyTorch figures of model.kind " + theirs + ", not " + opt.kind +
                             "; write them with tools/torch_model.py --bench PRESET --kind " + opt.kind);
  const std::string their_precision = figures.value("precision", std::string("fp32"));
  if (their_precision != opt.precision)
    throw std::runtime_error("--torch " + opt.torch + ": PyTorch figures in " + their_precision + ", not " +
                             opt.precision + "; write them with tools/torch_model.py --bench PRESET --precision " +
                             opt.precision);
  return figures;
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
  const Device device = train::open_device(opt.device);
  const bool gpu = device.is_cuda();
  if (!gpu && opt.precision != "fp32")
    throw train::ConfigError("--precision " + opt.precision + " is tensor-core arithmetic and --device is " + opt.device +
                             ": the CPU kernels compute in fp32; leave --precision out or add --device cuda");
  set_backend("precision", opt.precision);
  StepModel m = make_step_model(opt.preset, opt.kind, device);
  const models::ModelConfig& cfg = m.config.model;
  models::SynthesisModel& model = *m.model;
  Generator noise(1234);
  const train::StepContext ctx{model, *m.g_opt, m.d_opt.get(), nullptr, noise, m.objective};
  Generator data_gen(42);
  train::Batch batch = random_batch(cfg, opt.batch, data_gen);
  for (Tensor* t : {&batch.t1, &batch.pet, &batch.csf, &batch.covariates}) *t = t->to(device);
  int64_t steps_done = 0;
  // A GPU step is queued asynchronously: the timer stops once the device has finished it.
  auto run_step = [&] {
    train::training_step(ctx, batch, ++steps_done);
    cuda_synchronize();
  };

  std::printf("cpets-bench train — %s, preset %s, batch %d, volume %lldx%lldx%lld, %s\n", opt.kind.c_str(),
              opt.preset.c_str(), opt.batch, (long long)cfg.volume[0], (long long)cfg.volume[1],
              (long long)cfg.volume[2],
              gpu ? ("on " + cuda_device_description(device.index) + ", precision " + opt.precision + " (conv " +
                     backend_name("conv") + ", gemm " + backend_name("gemm") + ")")
                        .c_str()
                  : (std::to_string(omp_get_max_threads()) + " OpenMP threads").c_str());
  for (int i = 0; i < opt.warmup; ++i) run_step();
  host_reset_peak();
  device_reset_peak(device.index);
  // Our timed steps and inference, then PyTorch's, `rounds` times; figures are medians over rounds.
  Rounds step, infer, rss, device_peak;
  std::vector<double> cpu_times;
  nlohmann::json torch;
  for (int r = 0; r < opt.rounds; ++r) {
    if (opt.rounds > 1) std::fprintf(stderr, "round %d of %d\n", r + 1, opt.rounds);
    std::vector<double> times;
    for (int i = 0; i < opt.steps; ++i) {
      const double t0 = now(), c0 = cpu_seconds();
      run_step();
      times.push_back(now() - t0);
      cpu_times.push_back(cpu_seconds() - c0);
      std::fprintf(stderr, "  step %d/%d: %.3f s (CPU time %.3f s)\n", i + 1, opt.steps, times.back(), cpu_times.back());
    }
    step.ours.push_back(median(times));
    if (opt.infer) {
      NoGradGuard no_grad;
      models::Inputs one{slice(batch.t1, 0, 0, 1), slice(batch.csf, 0, 0, 1), slice(batch.covariates, 0, 0, 1)};
      infer.ours.push_back(median_seconds(
          [&] {
            model.synthesise(one);  // abduct + synthesise, ε = 0, as cpets-infer
            cuda_synchronize();
          },
          std::max(3, opt.steps), 0));
    }
    rss.ours.push_back(peak_rss_bytes());
    if (gpu) device_peak.ours.push_back(static_cast<double>(device_memory_stats(device.index).peak_bytes));
    torch = torch_figures(opt);
    if (torch.contains("peak_device_bytes")) device_peak.theirs.push_back(torch["peak_device_bytes"].get<double>());
    if (torch.contains("train_step_seconds")) step.theirs.push_back(torch["train_step_seconds"].get<double>());
    if (torch.contains("infer_seconds")) infer.theirs.push_back(torch["infer_seconds"].get<double>());
    if (torch.contains("peak_rss_bytes")) rss.theirs.push_back(torch["peak_rss_bytes"].get<double>());
  }
  const double pool_peak = static_cast<double>(host_memory_stats().peak_bytes);

  profiler::enable(true);
  profiler::reset();
  run_step();
  profiler::enable(false);

  if (gpu) std::printf("\ncpets on %s\n", cuda_device_description(device.index).c_str());
  else std::printf("\ncpets CPU kernels: %s; %d threads\n", kernels::cpu::cpu_isa_description().c_str(), omp_get_max_threads());
  if (torch.contains("torch"))
    std::printf("%s\n", torch_label(torch["torch"].get<std::string>(),
                                    torch.value("cpu_capability", std::string("unknown"))).c_str());
  std::printf("%d round%s of %d timed steps each side, alternately\n", opt.rounds, opt.rounds > 1 ? "s" : "", opt.steps);
  std::printf("\n%-34s %12s %12s %9s\n", "", "cpets", "PyTorch", "ratio");
  auto row = [&](const char* what, const Rounds& f, double scale, const char* unit) {
    if (f.compared())
      std::printf("%-34s %9.3f %-2s %9.3f %-2s %8.2fx%s\n", what, f.ours_median() * scale, unit, f.theirs_median() * scale,
                  unit, f.ours_median() / f.theirs_median(), f.spread(/*inverse=*/false).c_str());
    else
      std::printf("%-34s %9.3f %-2s %12s %9s\n", what, f.ours_median() * scale, unit, "-", "-");
  };
  row("training step (median)", step, 1, "s");
  std::printf("%-34s %9.3f s  (all threads; equals the wall time when the threads never wait)\n", "  CPU time per step (median)",
              median(cpu_times));
  if (opt.infer) row("inference, one volume", infer, 1, "s");
  row("peak resident memory (process)", rss, 1e-9, "GB");
  if (gpu) row("peak device memory (tensors)", device_peak, 1e-9, "GB");
  std::printf("%-34s %9.3f GB (tensors in use at once, caching allocator)\n", "peak tensor memory", pool_peak * 1e-9);
  std::printf("ratio = cpets / PyTorch (< 1: cpets is faster / smaller) of the medians over the rounds (per-round range).\n");
  print_breakdown(step.ours_median(), opt.top);
  return 0;
}

int run_data_parallel_bench(const DataParallelBenchOptions& opt) {
  const auto comm = connect_ranks_or_explain("train --ranks");
  const bool root = comm->is_root();
  const int n = comm->world();
  StepModel m = make_step_model(opt.preset, "causal-pets");
  Generator noise(1234), data_gen(42 + comm->rank());
  const train::Batch batch = random_batch(m.config.model, opt.batch, data_gen);
  const auto bucket = static_cast<int64_t>(opt.bucket_mb * (1 << 20));

  // The median step with the given reducers (null: this rank alone), this rank's.
  int64_t step_no = 0;
  auto time_steps = [&](dist::GradientReducer* g, dist::GradientReducer* dr, int ranks) {
    const train::StepContext ctx{*m.model, *m.g_opt, m.d_opt.get(), nullptr, noise, m.objective, g, dr,
                                 models::BatchShard{comm->rank() * opt.batch * (ranks > 1), ranks * opt.batch}};
    return median_seconds([&] { train::training_step(ctx, batch, ++step_no); }, opt.steps, opt.warmup);
  };
  // N ranks' mean step, with the all-reduce overlapped with the backward pass or not.
  auto data_parallel = [&](bool overlap, dist::ReducerStats* stats) {
    dist::GradientReducer g(*comm, m.model->generator_parameters(), bucket, overlap);
    std::optional<dist::GradientReducer> dr;
    if (m.d_opt) dr.emplace(*comm, m.model->discriminator_parameters(), bucket, overlap);
    const double seconds = comm->sum(time_steps(&g, dr ? &*dr : nullptr, n)) / n;
    if (stats) *stats = g.stats();
    return seconds;
  };

  if (root)
    std::printf("cpets-bench train (data-parallel) — preset %s, %d ranks over %s, batch %d per rank, %d OpenMP threads "
                "per rank, CPU kernels %s, buckets of %.0f MiB\n",
                opt.preset.c_str(), n, comm->backend().c_str(), opt.batch, omp_get_max_threads(),
                kernels::cpu::cpu_isa_description().c_str(), opt.bucket_mb);
  // The baseline in the same run: rank 0 alone (the others wait), same per-rank batch.
  double alone = 0;
  if (root) alone = time_steps(nullptr, nullptr, 1);
  comm->barrier();
  dist::ReducerStats overlap_stats;
  const double with_overlap = data_parallel(true, &overlap_stats);
  const double without_overlap = data_parallel(false, nullptr);
  if (root) {
    const double per_step_reduce = overlap_stats.reduce_seconds / double(std::max<int64_t>(1, overlap_stats.steps));
    std::printf("\n%-52s %10s %12s\n", "", "step s", "samples/s");
    std::printf("%-52s %10.3f %12.3f\n", "1 rank (rank 0 alone, the baseline)", alone, opt.batch / alone);
    std::printf("%-52s %10.3f %12.3f\n", (std::to_string(n) + " ranks, all-reduce overlapped with backward").c_str(),
                with_overlap, n * opt.batch / with_overlap);
    std::printf("%-52s %10.3f %12.3f\n", (std::to_string(n) + " ranks, all-reduce after backward").c_str(), without_overlap,
                n * opt.batch / without_overlap);
    std::printf("\nscaling efficiency (samples/s ÷ (%d × one rank's)): %.2f overlapped, %.2f not\n", n,
                alone / with_overlap, alone / without_overlap);
    std::printf("generator all-reduce: %.3f s a step, %.0f %% hidden behind the backward pass (%lld of %lld buckets "
                "launched during it)\n",
                per_step_reduce, 100.0 * overlap_stats.hidden_fraction(),
                static_cast<long long>(overlap_stats.buckets_in_backward),
                static_cast<long long>(overlap_stats.buckets_in_backward + overlap_stats.buckets_after));
  }
  return 0;
}

}  // namespace cpets::bench
