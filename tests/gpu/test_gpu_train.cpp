// cpets-train's Trainer on the GPU (train.device=cuda) against the same run on the CPU: the tiny
// preset on a small synthetic cohort, a few steps; then a GPU checkpoint resumed on the CPU.
// fp32 kernels (no TF32): the runs differ by float round-off only.
#include "gpu_check.h"

#include <cmath>
#include <vector>

#include "synthetic_cohort.h"
#include "test_support.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace cpets;
using namespace cpets::train;

namespace {
Config tiny(const std::string& cohort, const std::string& device) {
  return make_config("tiny", {"data.cohort=" + cohort, "train.perceptual=none", "train.batch_size=2",
                              "data.max_val_sessions=2", "data.prefetch=false", "train.device=" + device,
                              "train.conv_precision=fp32"});
}
}  // namespace

TEST_CASE("training on the GPU takes the CPU's steps, validates, and its checkpoint resumes on the CPU") {
  cpets::testing::TempDir dir, run;
  cpets::testing::write_cohort(dir.path, 14);
  Trainer cpu(tiny(dir.str(), "cpu")), gpu(tiny(dir.str(), "cuda"));
  CHECK(gpu.model().device() == Device::CUDA);
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
