// cpets-train's Trainer on the GPU (train.device=cuda) against the same run on the CPU: the tiny
// preset on a small synthetic cohort, a few steps; then a GPU checkpoint resumed on the CPU.
// fp32 kernels (no TF32): the runs differ by float round-off only. Then tf32 and bf16 against
// fp32 on the GPU, each bitwise repeatable.
#include "gpu_check.h"

#include <cmath>
#include <vector>

#include "synthetic_cohort.h"
#include "test_support.h"
#include "engine/backend.h"
#include "engine/device.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace cpets;
using namespace cpets::train;

namespace {
Config tiny(const std::string& cohort, const std::string& device, const std::string& precision = "fp32",
            const std::string& kind = "causal-pets") {
  return make_config("tiny", {"data.cohort=" + cohort, "train.perceptual=none", "train.batch_size=2",
                              "data.max_val_sessions=2", "data.prefetch=false", "train.device=" + device,
                              "train.precision=" + precision, "model.kind=" + kind});
}
}  // namespace

TEST_CASE("training on the GPU takes the CPU's steps, validates, and its checkpoint resumes on the CPU") {
  cpets::testing::TempDir dir, run;
  cpets::testing::write_cohort(dir.path, 14);
  Trainer cpu(tiny(dir.str(), "cpu")), gpu(tiny(dir.str(), "cuda"));
  CHECK(gpu.model().device() == Device::cuda());
  for (int i = 0; i < 3; ++i) {
    const StepLosses a = cpu.step(), b = gpu.step();
    CHECK(b.g_total == doctest::Approx(a.g_total).epsilon(1e-3));
    CHECK(b.term("pet_l1") == doctest::Approx(a.term("pet_l1")).epsilon(1e-3));
    CHECK(b.d_total == doctest::Approx(a.d_total).epsilon(1e-3));
  }
  const ValidationResult va = cpu.validate(), vb = gpu.validate();
  CHECK(vb.l1 == doctest::Approx(va.l1).epsilon(1e-3));
  gpu.save(run.str());
  Trainer resumed(tiny(dir.str(), "cpu"));
  resumed.resume(run.str());
  CHECK(resumed.step_count() == 3);
  const StepLosses c = resumed.step(), d = cpu.step();
  CHECK(c.g_total == doctest::Approx(d.g_total).epsilon(1e-3));
}

TEST_CASE("tf32 and bf16 training: close to fp32 on the same GPU, and bitwise identical run to run") {
  // Stated bounds after 3 steps, relative to the fp32 run: tf32 (10-bit mantissas) 1 %, bf16
  // (7-bit) 5 % — the operand rounding of every conv and GEMM, ~2⁻¹¹ and ~2⁻⁸ per product,
  // compounded through the layers and three Adam updates.
  cpets::testing::TempDir dir;
  cpets::testing::write_cohort(dir.path, 14);
  std::vector<StepLosses> fp32;
  {
    Trainer t(tiny(dir.str(), "cuda", "fp32"));
    for (int i = 0; i < 3; ++i) fp32.push_back(t.step());
  }
  for (const auto& [precision, bound] : std::vector<std::pair<std::string, double>>{{"tf32", 0.01}, {"bf16", 0.05}}) {
    std::vector<StepLosses> runs[2];
    for (auto& run : runs) {
      Trainer t(tiny(dir.str(), "cuda", precision));
      for (int i = 0; i < 3; ++i) run.push_back(t.step());
    }
    for (int i = 0; i < 3; ++i) {
      INFO(precision << " step " << i);
      CHECK(runs[0][i].g_total == runs[1][i].g_total);  // bitwise: no float atomics in any precision
      CHECK(runs[0][i].d_total == runs[1][i].d_total);
      CHECK(runs[0][i].g_total == doctest::Approx(fp32[i].g_total).epsilon(bound));
      CHECK(runs[0][i].term("pet_l1") == doctest::Approx(fp32[i].term("pet_l1")).epsilon(bound));
    }
  }
  set_backend("precision", "fp32");
}

TEST_CASE("training steps on the GPU reuse the caching allocator's blocks: no cudaMalloc after the first steps") {
  cpets::testing::TempDir dir;
  cpets::testing::write_cohort(dir.path, 14);
  Trainer t(tiny(dir.str(), "cuda"));
  t.step();
  t.step();  // the second step has met every shape (the D step's too)
  const size_t warm = device_memory_stats(0).system_allocs;
  for (int i = 0; i < 3; ++i) t.step();
  CHECK(device_memory_stats(0).system_allocs == warm);
}

TEST_CASE("every baseline trains on the GPU as on the CPU (BatchNorm, InstanceNorm, PReLU, dense blocks, transposed conv)") {
  cpets::testing::TempDir dir;
  cpets::testing::write_cohort(dir.path, 14);
  for (const std::string kind : {"unet", "unet-cond", "pix2pix", "cyclegan", "bmgan", "bpgan"}) {
    CAPTURE(kind);
    Trainer cpu(tiny(dir.str(), "cpu", "fp32", kind)), gpu(tiny(dir.str(), "cuda", "fp32", kind));
    CHECK(gpu.model().device() == Device::cuda());
    for (int i = 0; i < 2; ++i) {
      const StepLosses a = cpu.step(), b = gpu.step();
      CHECK(b.g_total == doctest::Approx(a.g_total).epsilon(1e-3));
      CHECK(b.d_total == doctest::Approx(a.d_total).epsilon(1e-3));
      for (const auto& [name, value] : a.terms) CHECK_MESSAGE(b.term(name) == doctest::Approx(value).epsilon(1e-3), name);
    }
    const ValidationResult va = cpu.validate(), vb = gpu.validate();
    CHECK(vb.l1 == doctest::Approx(va.l1).epsilon(1e-3));
  }
}

TEST_CASE("train.device=cuda:N: the named GPU holds the run; an index the machine lacks is a config error naming it") {
  cpets::testing::TempDir dir;
  cpets::testing::write_cohort(dir.path, 14);
  const int last = cuda_device_count() - 1;
  Trainer t(tiny(dir.str(), "cuda:" + std::to_string(last)));
  CHECK(t.model().device() == Device::cuda(last));
  CHECK(std::isfinite(t.step().g_total));
  const std::string missing = "cuda:" + std::to_string(last + 1);
  try {
    Trainer bad(tiny(dir.str(), missing));
    FAIL("expected a ConfigError for " << missing);
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    CHECK(m.find(missing) != std::string::npos);
    CHECK(m.find("this machine has") != std::string::npos);
  }
}
