#include "bench/comm_bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "dist/communicator.h"
#include "dist/reducer.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "kernels/cpu/isa.h"
#include "models/synthesis_model.h"
#include "train/config.h"
#include "train/trainer.h"

namespace cpets::bench {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::unique_ptr<dist::Communicator> connect_or_explain(const char* what) {
  const dist::LaunchInfo launch = dist::detect_launch();
  if (launch.world < 2)
    throw std::runtime_error(std::string("cpets-bench ") + what +
                             " measures several ranks: launch it with mpirun -np N (or srun, or the torchrun-style "
                             "variables for GPU ranks), e.g. mpirun -np 2 --oversubscribe cpets-bench " + what);
  return dist::connect(launch);
}

}  // namespace

int run_comm_bench(const CommBenchOptions& opt) {
  const auto comm = connect_or_explain("comm");
  const int n = comm->world();
  const Device d = comm->buffer_device();
  if (comm->is_root())
    std::printf("cpets-bench comm — all-reduce (sum, float32) over %d ranks, %s; median of %d\n"
                "busbw = algbw × 2(n−1)/n (nccl-tests' definition); baseline: one rank's memcpy of the same bytes\n\n"
                "%12s %12s %12s %12s %14s %10s\n",
                n, comm->backend().c_str(), opt.repeats, "bytes", "time us", "algbw GB/s", "busbw GB/s", "memcpy GB/s",
                "busbw/cpy");
  for (int64_t bytes = 4096; bytes <= static_cast<int64_t>(opt.max_mb * (1 << 20)); bytes *= 4) {
    const int64_t count = bytes / 4;
    Tensor buf = Tensor::full({count}, 1.f, d);
    comm->all_reduce_sum(buf.data(), count, dist::DType::F32);  // warm-up (connections, pages)
    std::vector<double> times;
    for (int r = 0; r < opt.repeats; ++r) {
      comm->barrier();
      const auto t0 = Clock::now();
      comm->all_reduce_sum(buf.data(), count, dist::DType::F32);
      times.push_back(comm->sum(seconds_since(t0)) / n);  // the ranks' mean
    }
    // The baseline in the same run: copying the same bytes once on this rank.
    std::vector<float> a(static_cast<size_t>(count), 1.f), b(static_cast<size_t>(count));
    std::vector<double> copies;
    for (int r = 0; r < opt.repeats; ++r) {
      const auto t0 = Clock::now();
      std::memcpy(b.data(), a.data(), static_cast<size_t>(bytes));
      copies.push_back(seconds_since(t0));
    }
    const double t = median(times), algbw = bytes / t / 1e9, busbw = algbw * 2.0 * (n - 1) / n;
    const double copy_bw = bytes / median(copies) / 1e9;
    if (comm->is_root())
      std::printf("%12lld %12.1f %12.3f %12.3f %14.3f %9.2fx\n", static_cast<long long>(bytes), t * 1e6, algbw, busbw,
                  copy_bw, busbw / copy_bw);
  }
  return 0;
}

int run_data_parallel_bench(const DataParallelBenchOptions& opt) {
  const auto comm = connect_or_explain("train");
  const bool root = comm->is_root();
  const int n = comm->world();
  train::Config config = train::make_config(opt.preset, {"train.perceptual=none"});
  const models::ModelConfig& cfg = config.model;
  Generator init(777);
  const auto model = models::make_model(cfg, init);
  const train::TrainConfig& t = config.train;
  const models::ObjectiveConfig objective = config.objective();
  auto group = [&](NamedTensors p, double lr) { return ParamGroup{std::move(p), AdamOptions{lr, t.beta1, t.beta2, t.adam_eps, 0}}; };
  Adam g_opt({group(model->generator_parameters(), t.lr)});
  std::optional<Adam> d_opt;
  if (model->trains_discriminator(objective))
    d_opt.emplace(std::vector<ParamGroup>{group(model->discriminator_parameters(), t.lr_discriminator)});
  model->set_discriminator_trainable(false);
  Generator noise(1234), data_gen(42 + comm->rank());
  const Shape vol{opt.batch, 1, cfg.volume[0], cfg.volume[1], cfg.volume[2]};
  train::Batch batch;
  batch.t1 = rand(vol, data_gen);
  batch.pet = rand(vol, data_gen);
  batch.csf = rand({opt.batch, cfg.csf_inputs}, data_gen);
  batch.covariates = rand({opt.batch, cfg.covariate_inputs}, data_gen);
  const auto bucket = static_cast<int64_t>(opt.bucket_mb * (1 << 20));

  // Times `steps` steps with the given reducers (null: this rank alone); the ranks' slowest.
  int64_t step_no = 0;
  auto time_steps = [&](dist::GradientReducer* g, dist::GradientReducer* dr, int ranks) {
    const train::StepContext ctx{*model, g_opt, d_opt ? &*d_opt : nullptr, nullptr, noise, objective, g, dr,
                                 models::BatchShard{comm->rank() * opt.batch * (ranks > 1), ranks * opt.batch}};
    for (int i = 0; i < opt.warmup; ++i) train::training_step(ctx, batch, ++step_no);
    std::vector<double> times;
    for (int i = 0; i < opt.steps; ++i) {
      const auto t0 = Clock::now();
      train::training_step(ctx, batch, ++step_no);
      times.push_back(seconds_since(t0));
    }
    return median(times);
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
  double with_overlap = 0, without_overlap = 0;
  dist::ReducerStats overlap_stats;
  {
    dist::GradientReducer g(*comm, model->generator_parameters(), bucket, /*overlap=*/true);
    std::optional<dist::GradientReducer> dr;
    if (d_opt) dr.emplace(*comm, model->discriminator_parameters(), bucket, true);
    with_overlap = comm->sum(time_steps(&g, dr ? &*dr : nullptr, n)) / n;
    overlap_stats = g.stats();
  }
  {
    dist::GradientReducer g(*comm, model->generator_parameters(), bucket, /*overlap=*/false);
    std::optional<dist::GradientReducer> dr;
    if (d_opt) dr.emplace(*comm, model->discriminator_parameters(), bucket, false);
    without_overlap = comm->sum(time_steps(&g, dr ? &*dr : nullptr, n)) / n;
  }
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
