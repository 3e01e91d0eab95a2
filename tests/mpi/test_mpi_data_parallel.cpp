// Data-parallel training on CPU ranks over MPI, run as `mpirun -np 2 test_mpi_data_parallel`
// (CMakeLists.txt): both ranks run every case, collectives in the same order; rank 0 also trains
// one process with the global batch to compare against. Started without mpirun it says so and
// is reported as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/reducer.h"
#include "synthetic_cohort.h"
#include "test_support.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace cpets;
using namespace cpets::train;
namespace fs = std::filesystem;
using cpets::testing::error_of;
using cpets::testing::ThreadCount;

namespace {

std::shared_ptr<dist::Communicator> g_comm;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// One cohort folder for all ranks: rank 0 writes it, every rank gets its path.
const std::string& cohort_dir() {
  static std::string path;
  static std::unique_ptr<cpets::testing::TempDir> dir;
  if (path.empty()) {
    if (g_comm->is_root()) {
      dir = std::make_unique<cpets::testing::TempDir>();
      cpets::testing::write_cohort(dir->path, 14);
      path = dir->str();
    }
    uint64_t n = path.size();
    g_comm->broadcast(&n, sizeof n, 0);
    path.resize(n);
    g_comm->broadcast(path.data(), static_cast<int64_t>(n), 0);
  }
  return path;
}

// The tiny preset; BatchNorm lives only in the discriminator, which is off unless asked for:
// with it, each rank normalises by its own batch (as PyTorch's DDP does) and the run is no
// longer the global batch's.
Config tiny(int64_t batch, std::vector<std::string> extra = {}) {
  std::vector<std::string> o{"data.cohort=" + cohort_dir(), "train.perceptual=none", "data.max_val_sessions=2",
                             "train.batch_size=" + std::to_string(batch), "train.discriminator=false",
                             "data.prefetch=false"};
  o.insert(o.end(), extra.begin(), extra.end());
  return make_config("tiny", o);
}

// The trained parameters (not the buffers: BatchNorm statistics are each rank's own within a step).
std::vector<float> flat_parameters(Trainer& t) {
  std::vector<float> out;
  for (const auto& [name, p] : t.model().named_parameters()) {
    const std::vector<float> v = p.to_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

std::string bytes_of(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

struct Difference {
  double max = 0, rms = 0;
};
Difference difference(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  Difference d;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(double(a[i]) - double(b[i]));
    d.max = std::max(d.max, e);
    d.rms += e * e;
  }
  d.rms = std::sqrt(d.rms / double(a.size()));
  return d;
}

}  // namespace

TEST_CASE("two ranks with batch 1 take the steps one process takes with batch 2") {
  ThreadCount one_thread(1);
  constexpr int kSteps = 4;
  Trainer dp(tiny(1), std::nullopt, g_comm);
  const std::vector<float> start = flat_parameters(dp);
  std::vector<StepLosses> dp_losses;
  for (int i = 0; i < kSteps; ++i) dp_losses.push_back(dp.step());
  const std::vector<float> dp_params = flat_parameters(dp);
  // Every rank took the same Adam steps: the same bits everywhere.
  CHECK_NOTHROW(g_comm->require_same("parameters after training", bytes_of(dp_params)));
  CHECK(dp.generator_reducer() != nullptr);

  if (g_comm->is_root()) {
    Trainer single(tiny(2), std::nullopt, dist::make_single());
    std::vector<StepLosses> losses;
    for (int i = 0; i < kSteps; ++i) losses.push_back(single.step());
    const std::vector<float> params = flat_parameters(single);
    // Same batches, same noise, same mean gradient up to float round-off (the batch-2 backward
    // sums per-sample contributions in another order than the two ranks' average). Adam divides
    // by √v, so an element whose gradient is ~0 can turn a round-off into a larger step: the
    // bound on the worst element is looser than the one on the RMS.
    const Difference moved = difference(params, start), apart = difference(params, dp_params);
    MESSAGE("parameters moved by max " << moved.max << ", RMS " << moved.rms << "; the runs differ by max " << apart.max
                                       << ", RMS " << apart.rms);
    CHECK(moved.max > 1e-5);
    CHECK(apart.rms <= 1e-3 * moved.rms);
    CHECK(apart.max <= 1e-2 * moved.max);
    for (int i = 0; i < kSteps; ++i) {
      CHECK(dp_losses[size_t(i)].g_total == doctest::Approx(losses[size_t(i)].g_total).epsilon(1e-5));
      CHECK(dp_losses[size_t(i)].term("pet_l1") == doctest::Approx(losses[size_t(i)].term("pet_l1")).epsilon(1e-5));
      CHECK(dp_losses[size_t(i)].term("kl") == doctest::Approx(losses[size_t(i)].term("kl")).epsilon(1e-4));
    }
  }
}

TEST_CASE("the same world size, seed and config give the same bits run to run") {
  ThreadCount one_thread(1);
  auto run = [] {
    Trainer t(tiny(1, {"train.bucket_mb=0.05"}), std::nullopt, g_comm);
    std::vector<double> out;
    for (int i = 0; i < 3; ++i) {
      const StepLosses s = t.step();
      out.push_back(s.g_total);
      out.push_back(s.grad_rest);
    }
    return out;
  };
  const std::vector<double> a = run(), b = run();
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

TEST_CASE("gradient buckets are reduced while the backward pass goes on") {
  ThreadCount one_thread(1);
  // Small buckets: the tiny model's generator spreads over many of them.
  Trainer t(tiny(1, {"train.bucket_mb=0.01"}), std::nullopt, g_comm);
  const dist::GradientReducer* r = t.generator_reducer();
  REQUIRE(r != nullptr);
  REQUIRE(r->bucket_count() > 3);
  // Buckets run from the last parameter to the first (the order a backward pass finishes them).
  const NamedTensors params = t.model().generator_parameters();
  CHECK(r->bucket_names(0).front() == params.back().first);
  CHECK(r->bucket_names(r->bucket_count() - 1).back() == params.front().first);
  t.step();
  t.step();
  const dist::ReducerStats& s = r->stats();
  CHECK(s.steps == 2);
  CHECK(s.buckets_in_backward + s.buckets_after == 2 * r->bucket_count());
  CHECK(s.buckets_in_backward > 0);  // not everything waited for the end of the pass
  CHECK(s.reduce_seconds > 0);
}

TEST_CASE("with the discriminator (BatchNorm per rank) the ranks stay in step") {
  ThreadCount one_thread(1);
  Trainer t(tiny(1, {"train.discriminator=true"}), std::nullopt, g_comm);
  REQUIRE(t.discriminator_optimizer() != nullptr);
  for (int i = 0; i < 2; ++i) {
    const StepLosses s = t.step();
    CHECK(std::isfinite(s.d_total));
  }
  CHECK_NOTHROW(g_comm->require_same("parameters after training", bytes_of(flat_parameters(t))));
}

TEST_CASE("with synchronised BatchNorm two ranks equal one process also with the discriminator") {
  // Parameters are compared after the first step, losses over two. Later parameters are not a
  // well-posed comparison with the discriminator: the runs differ by float round-off (the global
  // batch's sums are associated differently), and the second step can amplify that past
  // round-off — a value crossing LeakyReLU's kink, or Adam normalising a near-zero gradient; we
  // have not pinned which. Seen with the default seed on AVX-512 once the small convolutions went
  // through im2col + GEMM (other rounding; each batch item's result is the same at batch 1 and 2):
  // after 3 steps 6e-7 RMS apart (max 1.2e-4) instead of 1e-9, while five other seeds, and the
  // AVX2 and portable levels with the default seed, stay at 1e-9.
  ThreadCount one_thread(1);
  constexpr int kSteps = 2;
  Trainer dp(tiny(1, {"train.discriminator=true", "train.sync_batchnorm=true"}), std::nullopt, g_comm);
  const std::vector<float> start = flat_parameters(dp);
  std::vector<StepLosses> dp_losses;
  std::vector<float> dp_params;
  for (int i = 0; i < kSteps; ++i) {
    dp_losses.push_back(dp.step());
    if (i == 0) dp_params = flat_parameters(dp);
  }
  CHECK_NOTHROW(g_comm->require_same("parameters after training", bytes_of(flat_parameters(dp))));
  if (!g_comm->is_root()) return;
  Trainer single(tiny(2, {"train.discriminator=true", "train.sync_batchnorm=true"}), std::nullopt, dist::make_single());
  std::vector<StepLosses> losses;
  std::vector<float> single_params;
  for (int i = 0; i < kSteps; ++i) {
    losses.push_back(single.step());
    if (i == 0) single_params = flat_parameters(single);
  }
  const Difference moved = difference(single_params, start), apart = difference(single_params, dp_params);
  MESSAGE("with D, after one step: parameters moved by RMS " << moved.rms << "; the runs differ by RMS " << apart.rms
                                                              << ", max " << apart.max);
  CHECK(apart.rms <= 1e-3 * moved.rms);
  CHECK(apart.max <= 1e-2 * moved.max);
  for (int i = 0; i < kSteps; ++i) {  // step i's losses come from the parameters after step i − 1
    CHECK(dp_losses[size_t(i)].d_total == doctest::Approx(losses[size_t(i)].d_total).epsilon(1e-4));
    CHECK(dp_losses[size_t(i)].term("adv") == doctest::Approx(losses[size_t(i)].term("adv")).epsilon(1e-4));
  }
  // In one process the option changes nothing.
  Trainer plain(tiny(2, {"train.discriminator=true"}), std::nullopt, dist::make_single());
  CHECK(plain.step().d_total == losses[0].d_total);
}

TEST_CASE("a rank started with another configuration is refused on every rank") {
  const std::string seed = g_comm->rank() == 1 ? "train.seed=99" : "train.seed=7";
  const std::string err = error_of([&] { Trainer t(tiny(1, {seed}), std::nullopt, g_comm); });
  CHECK(contains(err, "rank(s) 1 of 2 differ from rank 0 in their configuration; every rank must be started with the same"));
}

TEST_CASE("a checkpoint of two ranks resumes in one process with the same global batch") {
  ThreadCount one_thread(1);
  std::string dir;
  std::unique_ptr<cpets::testing::TempDir> tmp;
  if (g_comm->is_root()) {
    tmp = std::make_unique<cpets::testing::TempDir>();
    dir = tmp->str();
  }
  uint64_t n = dir.size();
  g_comm->broadcast(&n, sizeof n, 0);
  dir.resize(n);
  g_comm->broadcast(dir.data(), static_cast<int64_t>(n), 0);

  Trainer dp(tiny(1), std::nullopt, g_comm);
  dp.step();
  dp.step();
  if (g_comm->is_root()) dp.save(dir);
  g_comm->barrier();
  if (!g_comm->is_root()) return;

  // The global batch is kept (1 rank × 2): the same batches continue.
  Trainer resumed(tiny(2), std::nullopt, dist::make_single());
  resumed.resume(dir);
  CHECK(resumed.step_count() == 2);
  CHECK(resumed.state().ranks == 1);
  const StepLosses next = resumed.step();
  CHECK(next.epoch == 0);
  CHECK(next.batch == 2);
  Trainer reference(tiny(2), std::nullopt, dist::make_single());
  for (int i = 0; i < 2; ++i) reference.step();
  CHECK(next.g_total == doctest::Approx(reference.step().g_total).epsilon(1e-5));

  // Another global batch is refused, naming both and the fix.
  Trainer other(tiny(1), std::nullopt, dist::make_single());
  const std::string err = error_of([&] { other.resume(dir); });
  CHECK(contains(err, "2 rank(s) × train.batch_size 1 (global batch 2)"));
  CHECK(contains(err, "--set train.batch_size=2"));
}

int main(int argc, char** argv) {
  const dist::LaunchInfo launch = dist::detect_launch();
  if (launch.world < 2) {
    std::cout << "skipped: run under an MPI launcher with two ranks (mpirun -np 2 " << argv[0] << ")\n";
    return 77;
  }
  g_comm = dist::connect(launch, "mpi");
  doctest::Context context(argc, argv);
  const int rc = context.run();
  // Every rank's verdict decides: a failure on one is a failure of the test.
  const bool any_failed = g_comm->any(rc != 0);
  g_comm.reset();  // MPI_Finalize
  return any_failed ? 1 : 0;
}
