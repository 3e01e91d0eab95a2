// The engine on the device: tensors and copies, the caching allocator (no cudaMalloc once warm),
// Philox on the device equal to the CPU stream, fused Adam equal to the CPU's bit for bit, and
// conv3d/conv_transpose3d/attention dispatch (ours and cuDNN) against the CPU backend.
#include "gpu_check.h"

#include "engine/backend.h"
#include "engine/device.h"
#include "engine/module.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/rng.h"

using namespace cpets;
using namespace cpets::gpu_testing;
using cpets::testing::random_tensor;

TEST_CASE("copies, item, to_vector, fill, clone") {
  Tensor h = random_tensor({3, 5, 7}, 1u);
  Tensor d = h.to(Device::cuda());
  CHECK(d.device() == Device::cuda());
  CHECK(d.to_vector() == h.to_vector());
  CHECK(d.clone().to(Device::cpu()).to_vector() == h.to_vector());
  Tensor f = Tensor::full({1001}, 2.5f, Device::cuda());
  for (float v : f.to_vector()) CHECK(v == 2.5f);
  CHECK(Tensor::full({}, -3.f, Device::cuda()).item() == -3.f);
  Tensor back = Tensor::empty({3, 5, 7});
  back.copy_from(d);
  CHECK(back.to_vector() == h.to_vector());
  Tensor v = Tensor::from_vector({2, 2}, {1, 2, 3, 4}, Device::cuda());
  CHECK(v.to_vector() == std::vector<float>{1, 2, 3, 4});
}

TEST_CASE("to() is differentiable and move_to_ keeps the parameter identity") {
  Tensor p = random_tensor({4}, 2u).set_requires_grad(true);
  Tensor y = sum(mul(p.to(Device::cuda()), p.to(Device::cuda())));
  y.backward();
  expect_close(p.grad(), mul_scalar(p.detach(), 2.f), ulp_tol(0), "d(Σp²)/dp through to()");
  Tensor q = random_tensor({4}, 3u).set_requires_grad(true);
  TensorImpl* impl = q.impl();
  q.move_to_(Device::cuda());
  CHECK(q.impl() == impl);
  CHECK(q.device() == Device::cuda());
  CHECK(q.is_leaf());
}

TEST_CASE("the caching allocator serves a repeated step without new device allocations") {
  auto step = [] {
    Tensor x = random_tensor({2, 8, 6, 8, 6}, 4u).to(Device::cuda()).detach().set_requires_grad(true);
    Tensor y = sum(silu(mul_scalar(x, 2.f)));
    y.backward();
    return y.item();
  };
  step();
  const MemoryStats warm = device_memory_stats(0);
  for (int i = 0; i < 3; ++i) step();
  const MemoryStats after = device_memory_stats(0);
  CHECK(after.system_allocs == warm.system_allocs);
  CHECK(after.peak_bytes >= after.current_bytes);
  CHECK(after.cached_bytes > 0);
}

TEST_CASE("rand and randn on the device equal the CPU stream") {
  for (uint64_t offset : {0ull, 3ull}) {
    Generator cpu(99, offset), gpu(99, offset);
    Tensor a = rand({1000003}, cpu), b = rand({1000003}, gpu, Device::cuda());
    CHECK(a.to_vector() == b.to_vector());
    Tensor c = randn({777}, cpu, 0.5f, 2.f), d = randn({777}, gpu, 0.5f, 2.f, Device::cuda());
    // Box–Muller in double, rounded to float: equal unless libm's and CUDA's log/sin/cos
    // straddle a float rounding boundary (probability ~1e-8 per value): demand equality.
    CHECK(c.to_vector() == d.to_vector());
    CHECK(cpu.state() == gpu.state());
  }
}

TEST_CASE("fused multi-tensor Adam equals the CPU update bit for bit") {
  const std::vector<Shape> shapes = {{3}, {7, 5}, {64, 32, 3, 3, 3}, {1}, {100003}};
  NamedTensors cpu_params, gpu_params;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Tensor p = random_tensor(shapes[i], uint32_t(10 + i));
    cpu_params.emplace_back("p" + std::to_string(i), p.clone().set_requires_grad(true));
    gpu_params.emplace_back("p" + std::to_string(i), p.to(Device::cuda()).detach().set_requires_grad(true));
  }
  AdamOptions o;
  o.lr = 1e-3;
  o.weight_decay = 0.01;
  Adam cpu_opt(cpu_params, o), gpu_opt(gpu_params, o);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      if (step == 1 && i == 2) continue;  // a parameter without gradient this step: its step count lags
      Tensor g = random_tensor(shapes[i], uint32_t(100 * step + i));
      cpu_params[i].second.set_grad(g);
      gpu_params[i].second.set_grad(g.to(Device::cuda()).detach());
    }
    cpu_opt.step();
    gpu_opt.step();
    cpu_opt.zero_grad();
    gpu_opt.zero_grad();
  }
  for (size_t i = 0; i < shapes.size(); ++i)
    expect_bitwise(gpu_params[i].second, cpu_params[i].second, "parameter " + std::to_string(i));
}

TEST_CASE("conv3d on the GPU (ours and cuDNN, fp32) against the CPU backend") {
  struct Case {
    Shape x, w;
    int64_t stride, padding;
  };
  const std::vector<Case> cases = {{{2, 3, 5, 6, 7}, {4, 3, 3, 3, 3}, 1, 1}, {{1, 5, 9, 8, 7}, {3, 5, 3, 3, 3}, 2, 1},
                                   {{2, 16, 12, 16, 12}, {32, 16, 3, 3, 3}, 1, 1}};
  for (const char* backend : {"cuda", "cudnn"}) {
    set_backend("conv", backend);
    uint32_t seed = 50;
    for (const Case& c : cases) {
      Tensor x = random_tensor(c.x, seed++), w = random_tensor(c.w, seed++), b = random_tensor({c.w[0]}, seed++);
      const int64_t K = c.w[1] * 27, rows = c.x[0] * shape_numel(Shape(c.x.begin() + 2, c.x.end()));
      check_against_cpu(std::string("conv3d [") + backend + "] " + shape_str(c.x),
                        [&](const std::vector<Tensor>& v) { return conv3d(v[0], v[1], v[2], c.stride, c.padding); },
                        {x, w, b}, dot_tol(K + 1, 0.25), dot_tol(std::max(K, rows), 0.25));
    }
  }
  set_backend("conv", "cuda");
}

TEST_CASE("conv_transpose3d on the GPU (ours and cuDNN, fp32) against the CPU backend") {
  for (const char* backend : {"cuda", "cudnn"}) {
    set_backend("conv", backend);
    // BMGAN's ×2 up-sampling (kernel 4, stride 2, padding 1): weight (Cin, Cout, 4, 4, 4).
    Tensor x = random_tensor({2, 6, 3, 4, 3}, 90), w = random_tensor({6, 5, 4, 4, 4}, 91), b = random_tensor({5}, 92);
    const int64_t K = 6 * 8, rows = 2 * 6 * 8 * 6;  // taps reaching one output; voxels per weight
    check_against_cpu(std::string("conv_transpose3d [") + backend + "]",
                      [&](const std::vector<Tensor>& v) { return conv_transpose3d(v[0], v[1], v[2], 2, 1); }, {x, w, b},
                      dot_tol(K + 1, 0.25), dot_tol(std::max(K, rows), 0.25));
  }
  set_backend("conv", "cuda");
}

TEST_CASE("attention on the GPU against the CPU backend: self and cross") {
  struct Case {
    Shape q, kv;
    int64_t heads;
  };
  const std::vector<Case> cases = {{{2, 17, 16}, {2, 17, 16}, 2}, {{1, 33, 64}, {1, 5, 64}, 8}, {{2, 1152, 64}, {2, 1152, 64}, 8}};
  // Ours (fused) and the cuBLAS composition (P in memory, recomputed for the backward), fp32.
  for (const char* backend : {"cuda", "cublas"}) {
    set_backend("attention", backend);
    uint32_t seed = 70;
    for (const Case& c : cases) {
      Tensor q = random_tensor(c.q, seed++), k = random_tensor(c.kv, seed++), v = random_tensor(c.kv, seed++);
      const int64_t n = c.kv[1];
      check_against_cpu(std::string("attention [") + backend + "] " + shape_str(c.q) + " x " + shape_str(c.kv),
                        [&](const std::vector<Tensor>& t) { return attention(t[0], t[1], t[2], c.heads); }, {q, k, v},
                        dot_tol(std::max(n, c.q[2] / c.heads), 1.0), dot_tol(std::max(n, c.q[1]), 1.0));
      // Only the query gradient wanted (the op then passes no dk/dv) and only dk/dv (no dq).
      check_against_cpu(std::string("attention [") + backend + "] dq only " + shape_str(c.q),
                        [&](const std::vector<Tensor>& t) { return attention(t[0], t[1], t[2], c.heads); }, {q, k, v},
                        dot_tol(std::max(n, c.q[2] / c.heads), 1.0), dot_tol(std::max(n, c.q[1]), 1.0),
                        {true, false, false});
      check_against_cpu(std::string("attention [") + backend + "] dk, dv only " + shape_str(c.q),
                        [&](const std::vector<Tensor>& t) { return attention(t[0], t[1], t[2], c.heads); }, {q, k, v},
                        dot_tol(std::max(n, c.q[2] / c.heads), 1.0), dot_tol(std::max(n, c.q[1]), 1.0),
                        {false, true, true});
    }
  }
  set_backend("attention", "cuda");
}

TEST_CASE("Adam state from a CPU checkpoint continues on the GPU bit for bit") {
  Tensor p0 = random_tensor({257, 3}, 5u);
  NamedTensors cpu_params{{"w", p0.clone().set_requires_grad(true)}};
  Adam cpu_opt(cpu_params);
  cpu_params[0].second.set_grad(random_tensor({257, 3}, 6u));
  cpu_opt.step();
  // A GPU copy of the model after that step, with the optimiser state loaded from the CPU's.
  NamedTensors gpu_params{{"w", cpu_params[0].second.detach().clone().set_requires_grad(true)}};
  gpu_params[0].second.move_to_(Device::cuda());
  Adam gpu_opt(gpu_params);
  gpu_opt.load_state_dict(cpu_opt.state_dict());
  const Tensor g = random_tensor({257, 3}, 7u);
  cpu_params[0].second.set_grad(g);
  gpu_params[0].second.set_grad(g.to(Device::cuda()).detach());
  cpu_opt.step();
  gpu_opt.step();
  expect_bitwise(gpu_params[0].second, cpu_params[0].second, "parameter after the resumed step");
  CHECK(gpu_opt.state_dict()[0].second.device() == Device::cuda());
}

TEST_CASE("Module::to moves parameters and buffers in place") {
  struct Tiny : Module {
    Tiny() {
      w = register_parameter("w", random_tensor({3, 4}, 8u));
      b = register_buffer("b", Tensor::zeros({4}));
    }
    Tensor w, b;
  };
  Tiny m;
  m.to(Device::cuda());
  CHECK(m.w.device() == Device::cuda());
  CHECK(m.b.device() == Device::cuda());
  CHECK(m.named_parameters()[0].second.impl() == m.w.impl());
  CHECK(m.w.is_leaf());
  CHECK(m.w.requires_grad());
}
