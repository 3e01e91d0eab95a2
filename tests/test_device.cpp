// The device layer as seen without a GPU (and, on a GPU machine, its basic promises): CUDA
// availability is reported with a reason and never throws, CUDA tensors fail with that reason
// when there is no device, and backends are chosen by name with clear errors.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "engine/backend.h"
#include "engine/block_cache.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/tensor.h"

using namespace cpets;

TEST_CASE("cuda_available never throws and explains a missing device") {
  std::string reason;
  bool ok = false;
  CHECK_NOTHROW(ok = cuda_available(&reason));
  if (!kHaveCuda) {
    CHECK_FALSE(ok);
    CHECK(reason == "this build has no CUDA backend: configure with -DCPETS_CUDA=ON");
  }
  if (ok) CHECK(reason.empty());
  else CHECK_FALSE(reason.empty());
  CHECK_FALSE(cuda_device_description().empty());
  CHECK(cuda_device_count() >= 0);
  if (!ok) CHECK(cuda_device_count() == 0);
}

TEST_CASE("devices are written cpu, cuda and cuda:N, and read back the same") {
  CHECK(Device::parse("cpu") == Device::cpu());
  CHECK(Device::parse("cuda") == Device::cuda(0));
  CHECK(Device::parse("cuda:0") == Device::cuda());
  CHECK(Device::parse("cuda:12") == Device::cuda(12));
  CHECK(Device::cuda(1) != Device::cuda(0));
  CHECK(Device::cuda(0) != Device::cpu());
  CHECK(Device::cpu().is_cpu());
  CHECK(Device::cuda(2).is_cuda());
  for (const Device d : {Device::cpu(), Device::cuda(0), Device::cuda(7)}) CHECK(Device::parse(d.str()) == d);
  CHECK(Device::cuda(3).str() == "cuda:3");
  CHECK(Device::cpu().str() == "cpu");
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "CUDA", "cuda:-1", "cuda:1:2", "cuda:1000", " cpu", ""}) {
    CAPTURE(bad);
    try {
      Device::parse(bad);
      FAIL("expected an error");
    } catch (const std::invalid_argument& e) {
      const std::string m = e.what();
      CHECK(m.find(std::string("\"") + bad + "\"") != std::string::npos);
      CHECK(m.find("cpu, cuda or cuda:N") != std::string::npos);
    }
  }
}

TEST_CASE("a CUDA tensor without a usable device throws the reason") {
  std::string reason;
  if (cuda_available(&reason)) return;  // covered by the gpu tests there
  for (const Device d : {Device::cuda(0), Device::cuda(1)}) {
    try {
      Tensor::empty({2, 3}, d);
      FAIL("creating a CUDA tensor should have thrown");
    } catch (const std::runtime_error& e) {
      const std::string m = e.what();
      CHECK(m.find(reason) != std::string::npos);
      CHECK(m.find(d.str()) != std::string::npos);  // which GPU was asked for
    }
  }
  CHECK_THROWS_AS(Tensor::zeros({4}).to(Device::cuda()), std::runtime_error);
  CHECK_THROWS_AS(Tensor::zeros({4}).to("cuda:1"), std::runtime_error);
  CHECK_THROWS_AS(Tensor::zeros({4}).to("gpu"), std::invalid_argument);  // a spelling error, not a missing GPU
  CHECK_THROWS_AS(DeviceGuard(Device::cuda(0)), std::runtime_error);
  CHECK_NOTHROW(DeviceGuard(Device::cpu()));
  const MemoryStats s = device_memory_stats(0);
  CHECK(s.current_bytes == 0);
}

TEST_CASE("to(cpu) of a cpu tensor is the tensor itself; move_to_ keeps a leaf") {
  Tensor a = Tensor::ones({3});
  CHECK(a.to(Device::cpu()).same_storage(a));
  CHECK(a.to("cpu").same_storage(a));
  a.set_requires_grad(true);
  CHECK(a.move_to_(Device::cpu()).is_leaf());
  Tensor b = mul_scalar(a, 2.f);
  CHECK_THROWS_AS(b.move_to_(Device::cpu()), std::logic_error);
}

TEST_CASE("backends are chosen by name, unknown names list the valid ones") {
  if (!std::getenv("CPETS_CONV_BACKEND")) CHECK(backend_name("conv") == "cuda");  // the default: ours
  set_backend("conv", "cudnn");
  CHECK(conv_backend() == ConvBackend::Cudnn);
  set_backend("conv", "cuda");
  CHECK(conv_backend() == ConvBackend::Cuda);
  set_backend("gemm", "cublas");
  CHECK(gemm_backend() == GemmBackend::Cublas);
  CHECK(backend_name("gemm") == "cublas");
  set_gemm_backend(GemmBackend::Cuda);
  set_backend("precision", "bf16");
  CHECK(math_precision() == MathPrecision::Bf16);
  CHECK(backend_name("precision") == "bf16");
  set_math_precision(MathPrecision::Fp32);
  CHECK_THROWS_AS(set_backend("conv_precision", "tf32"), std::invalid_argument);  // renamed
  try {
    set_backend("gemm", "mkl");
    FAIL("expected an error");
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    CHECK(m.find("mkl") != std::string::npos);
    CHECK(m.find("cuda, cublas") != std::string::npos);
  }
  CHECK_THROWS_AS(set_backend("pooling", "cuda"), std::invalid_argument);
  CHECK(backend_choices("attention") == std::vector<std::string>{"cuda", "cublas"});
  set_backend("attention", "cublas");
  CHECK(attention_backend() == AttentionBackend::Cublas);
  set_attention_backend(AttentionBackend::Cuda);
}

// One op-dispatch pattern (issue 11): op bodies hold the checks, the allocation and the autograd
// record, and reach a kernel only through dispatch::, so the same body serves every device. A
// device branch or a direct CUDA kernel call in an op file would be a second pattern.
TEST_CASE("op bodies do not branch on the device: kernels are reached through dispatch only") {
  namespace fs = std::filesystem;
  const fs::path engine = fs::path(CPETS_FIXTURES) / ".." / ".." / "engine";
  REQUIRE(fs::is_directory(engine));
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(engine)) {
    const std::string name = entry.path().filename().string();
    const bool op_file = name.rfind("ops_", 0) == 0 && entry.path().extension() == ".cpp";
    if (!op_file && name != "optim.cpp" && name != "tensor.cpp" && name != "rng.cpp") continue;
    std::ifstream in(entry.path());
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
      ++number;
      for (const char* forbidden : {"Device::cuda(", "kHaveCuda", "kernels::cuda", "CPETS_HAVE_CUDA", "cuda_ops::"}) {
        CAPTURE(name);
        CAPTURE(number);
        CAPTURE(line);
        CHECK(line.find(forbidden) == std::string::npos);
      }
    }
    ++checked;
  }
  CHECK(checked >= 10);
  CHECK_FALSE(fs::exists(engine / "ops_cuda.h"));  // the second op body of the norms and losses is gone
}

// Page-locked batches (issue 11): a block an asynchronous copy may still read must not be handed
// out again before the copy is over; the cache asks a readiness test, here a flag.
TEST_CASE("a block given back while a copy may read it is reused only once that copy is over") {
  BlockCache cache;
  int a = 0, b = 0;
  void* block_a = &a;
  void* block_b = &b;
  cache.added_from_system(128);
  cache.added_from_system(128);
  bool copy_done = false;
  cache.give_back_when(block_a, 128, [&copy_done] { return copy_done; });
  CHECK(cache.stats().current_bytes == 128);
  CHECK(cache.stats().cached_bytes == 128);
  CHECK(cache.take(128) == nullptr);  // still being read: a new block is needed
  cache.give_back(block_b, 128);
  CHECK(cache.take(128) == block_b);  // an ordinary block is reused at once
  std::vector<void*> freed;
  cache.release([&](void* p) { freed.push_back(p); });
  CHECK(freed.empty());  // freeing it would pull the memory from under the copy
  CHECK(cache.stats().cached_bytes == 128);
  copy_done = true;
  CHECK(cache.take(128) == block_a);
  CHECK(cache.stats().cached_bytes == 0);
  CHECK(cache.stats().current_bytes == 256);
  cache.give_back_when(block_a, 128, [] { return true; });
  cache.release([&](void* p) { freed.push_back(p); });
  CHECK(freed == std::vector<void*>{block_a});
}

TEST_CASE("empty_pinned is ordinary host memory where no GPU is usable") {
  Tensor t = Tensor::empty_pinned({3, 4});
  CHECK(t.device() == Device::cpu());
  CHECK(t.shape() == Shape{3, 4});
  CHECK(t.is_pinned() == cuda_available());
  CHECK_FALSE(Tensor::empty({2}).is_pinned());
  for (int i = 0; i < 12; ++i) t.data()[i] = float(i);
  CHECK(t.to_vector()[11] == 11.f);
  CHECK_THROWS_AS(Tensor::empty_pinned({-1}), std::invalid_argument);
}
