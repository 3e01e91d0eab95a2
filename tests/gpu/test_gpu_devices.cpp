// Devices with an index (issue 11): every GPU of the machine is a place for tensors ("cuda:N"),
// with its own caching allocator and compute stream; ops run on the GPU that holds their inputs
// and leave the thread's current GPU as they found it; an op mixing GPUs is refused naming both;
// to() copies between GPUs. Cases that need two GPUs say so and skip on a one-GPU machine.
#include "gpu_check.h"

#include <algorithm>

#include "engine/device.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/rng.h"
#include "layers/linear.h"

using namespace cpets;
using namespace cpets::gpu_testing;
using cpets::testing::random_tensor;

namespace {

bool have_two_gpus() {
  if (cuda_device_count() >= 2) return true;
  MESSAGE("SKIPPED: this case needs two GPUs; this machine has " << cuda_device_count());
  return false;
}

// Linear → SiLU → mean square, one Adam step; the parameters afterwards.
std::vector<float> one_training_step(Device device) {
  Generator init(7);
  layers::Linear net(16, 8, init);
  net.to(device);
  Adam opt(net.named_parameters(), AdamOptions{});
  const Tensor x = random_tensor({5, 16}, 3u).to(device).detach();
  Tensor y = silu(net.forward(x));
  mean(mul(y, y)).backward();
  opt.step();
  std::vector<float> all;
  for (const auto& [name, p] : net.named_parameters()) {
    CHECK_MESSAGE(p.device() == device, name << " left " << device.str());
    const std::vector<float> v = p.to_vector();
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

}  // namespace

TEST_CASE("cuda:N names a GPU; an index the machine lacks is refused with the count") {
  const int n = cuda_device_count();
  REQUIRE(n >= 1);
  CHECK(cuda_device_description(0).rfind("cuda:0: ", 0) == 0);
  const std::string missing = "cuda:" + std::to_string(n);
  for (auto make : {std::function<void()>([&] { Tensor::empty({4}, Device::cuda(n)); }),
                    std::function<void()>([&] { Tensor::ones({4}).to(missing); }),
                    std::function<void()>([&] { DeviceGuard g(Device::cuda(n)); })}) {
    try {
      make();
      FAIL("expected an error for " << missing);
    } catch (const std::runtime_error& e) {
      const std::string m = e.what();
      CHECK(m.find(missing) != std::string::npos);
      CHECK(m.find("this machine has " + std::to_string(n) + " GPU(s)") != std::string::npos);
    }
  }
}

TEST_CASE("on every GPU: ops match the CPU, memory is counted on that GPU, the current GPU is kept") {
  const int before = current_cuda_device();
  const Tensor a = random_tensor({3, 33}, 1u), b = random_tensor({3, 33}, 2u);
  const Tensor want = silu(add(mul(a, b), a));
  for (int d = 0; d < cuda_device_count(); ++d) {
    CAPTURE(d);
    const Device dev = Device::cuda(d);
    const size_t others_before = d > 0 ? device_memory_stats(0).current_bytes : 0;
    Tensor x = a.to(dev), y = b.to(dev);
    Tensor got = silu(add(mul(x, y), x));
    CHECK(got.device() == dev);
    expect_close(got.to(Device::cpu()), want, ulp_tol(), "silu(a·b + a) on " + dev.str());
    CHECK(device_memory_stats(d).current_bytes > 0);
    if (d > 0) CHECK(device_memory_stats(0).current_bytes == others_before);
    CHECK(current_cuda_device() == before);
  }
}

TEST_CASE("two GPUs: copies between them, gradients go back, mixing them is refused naming both") {
  if (!have_two_gpus()) return;
  const Device g0 = Device::cuda(0), g1 = Device::cuda(1);
  const Tensor h = random_tensor({1000, 17}, 5u);
  const Tensor on1 = h.to(g0).to(g1);
  CHECK(on1.device() == g1);
  CHECK(on1.to_vector() == h.to_vector());
  Tensor back = Tensor::empty(h.shape(), g0);
  back.copy_from(on1);
  CHECK(back.to_vector() == h.to_vector());

  Tensor p = random_tensor({6}, 6u).to(g0).detach().set_requires_grad(true);
  sum(mul(p.to(g1), p.to(g1))).backward();
  REQUIRE(p.grad().defined());
  CHECK(p.grad().device() == g0);
  expect_close(p.grad().to(Device::cpu()), mul_scalar(p.detach().to(Device::cpu()), 2.f), ulp_tol(0), "d(Σp²)/dp");

  try {
    add(h.to(g0), h.to(g1));
    FAIL("an op mixing cuda:0 and cuda:1 should be refused");
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    CHECK(m.find("cuda:0") != std::string::npos);
    CHECK(m.find("cuda:1") != std::string::npos);
  }
}

TEST_CASE("two GPUs: a training step on cuda:1 equals the one on cuda:0") {
  if (!have_two_gpus()) return;
  const std::vector<float> on0 = one_training_step(Device::cuda(0)), on1 = one_training_step(Device::cuda(1));
  if (cuda_device_description(0).substr(8) != cuda_device_description(1).substr(8)) {
    MESSAGE("SKIPPED the bitwise comparison: the two GPUs are different models");
    return;
  }
  CHECK(on0 == on1);  // same kernels on the same model of GPU: bit for bit
}

// Page-locked batches: the copy to the GPU is asynchronous, so a pinned block must be neither
// reused by the allocator nor written through data() before the copy has read it. Each volume
// below is filled, copied and dropped at once, and the next one (likely the same block, once
// free) is filled with another value: any early reuse or early write would show in the copies.
TEST_CASE("copies from page-locked memory are asynchronous yet never see a later write") {
  const int64_t n = 1 << 22;  // 16 MB: the copy takes long enough to be caught in flight
  std::vector<Tensor> copies;
  for (int i = 0; i < 24; ++i) {
    Tensor h = Tensor::empty_pinned({n});
    REQUIRE(h.is_pinned());
    float* p = h.data();
    for (int64_t j = 0; j < n; ++j) p[j] = float(i);
    copies.push_back(h.to(Device::cuda()));
    if (i % 2) {  // half of them: written again at once (data() must wait for the copy)
      float* again = h.data();
      for (int64_t j = 0; j < n; ++j) again[j] = -1.f;
    }
  }
  for (int i = 0; i < 24; ++i) {
    const std::vector<float> v = copies[size_t(i)].to_vector();
    CHECK_MESSAGE(std::all_of(v.begin(), v.end(), [i](float x) { return x == float(i); }), "copy " << i);
  }
  cuda_synchronize();
  const size_t allocs = pinned_host_memory_stats().system_allocs;
  for (int i = 0; i < 4; ++i) Tensor::empty_pinned({n}).to(Device::cuda());
  cuda_synchronize();
  Tensor reused = Tensor::empty_pinned({n});
  CHECK(pinned_host_memory_stats().system_allocs <= allocs + 1);  // the blocks come back once read
}
