#include <doctest/doctest.h>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/ops_elementwise.h"
#include "engine/tensor.h"

using namespace cpets;

namespace {
// A hand-written op, so the engine core is tested without any kernel: y = a * x (elementwise).
Tensor scale_by(const Tensor& x, const Tensor& a) {
  Tensor y = Tensor::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) y.data()[i] = x.data()[i] * a.data()[i];
  return record(y, "scale_by", {x, a}, [x = x.detach(), a = a.detach()](const Tensor& g, const std::vector<bool>& needs) {
    Tensor gx, ga;
    if (needs[0]) { gx = Tensor::empty(x.shape()); for (int64_t i = 0; i < x.numel(); ++i) gx.data()[i] = g.data()[i] * a.data()[i]; }
    if (needs[1]) { ga = Tensor::empty(x.shape()); for (int64_t i = 0; i < x.numel(); ++i) ga.data()[i] = g.data()[i] * x.data()[i]; }
    return std::vector<Tensor>{gx, ga};
  });
}
}  // namespace

TEST_CASE("tensor basics: factories, views share storage, clone copies") {
  Tensor t = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(t.numel() == 6);
  CHECK(t.size(-1) == 3);
  Tensor v = t.view({3, -1});
  CHECK(v.shape() == Shape{3, 2});
  CHECK(v.same_storage(t));
  v.data()[0] = 42;
  CHECK(t.data()[0] == 42);
  Tensor c = t.clone();
  c.data()[1] = -1;
  CHECK(t.data()[1] == 2);
  CHECK_THROWS_WITH_AS(t.view({4, -1}), doctest::Contains("cannot reshape 6 elements"), std::invalid_argument);
  CHECK_THROWS(Tensor::from_vector({2, 2}, {1, 2, 3}));
}

TEST_CASE("autograd: chain rule, accumulation over two uses, leaves only get .grad") {
  Tensor x = Tensor::from_vector({3}, {1, 2, 3}).set_requires_grad(true);
  Tensor a = Tensor::from_vector({3}, {2, 2, 2});
  Tensor y = scale_by(x, a);        // 2x
  Tensor z = scale_by(y, x.detach());  // 2x·x(const) -> dz/dx via y only = 2·x
  Tensor w = scale_by(z, y);        // z·y: uses y twice in the graph
  CHECK(w.requires_grad());
  CHECK_FALSE(w.is_leaf());
  w.backward(Tensor::ones({3}));
  // w = (2x·x)(2x) = 4x³ with x in the constant slot fixed: dw/dx through y twice:
  // w = z·y, z = y·c (c = x value), y = 2x -> w = c·y², dw/dx = 2c·y·2 = 8x·x
  std::vector<float> g = x.grad().to_vector();
  CHECK(g[0] == doctest::Approx(8.0));
  CHECK(g[1] == doctest::Approx(32.0));
  CHECK(g[2] == doctest::Approx(72.0));
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(y.grad().defined());
}

TEST_CASE("autograd: saved tensors are released; a second backward is an error") {
  Tensor x = Tensor::from_vector({2}, {1, 2}).set_requires_grad(true);
  Tensor y = scale_by(x, x.detach());
  y.backward(Tensor::ones({2}));
  CHECK(x.grad().to_vector() == std::vector<float>{1, 2});
  CHECK_THROWS(y.backward(Tensor::ones({2})));
}

TEST_CASE("autograd: gradients accumulate across backward calls until zero_grad") {
  Tensor x = Tensor::from_vector({2}, {1, 2}).set_requires_grad(true);
  for (int i = 0; i < 2; ++i) scale_by(x, Tensor::full({2}, 3)).backward(Tensor::ones({2}));
  CHECK(x.grad().to_vector() == std::vector<float>{6, 6});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("NoGradGuard records nothing; requires_grad toggles on leaves") {
  Tensor x = Tensor::from_vector({2}, {1, 2}).set_requires_grad(true);
  {
    NoGradGuard ng;
    Tensor y = scale_by(x, x.detach());
    CHECK_FALSE(y.requires_grad());
  }
  x.set_requires_grad(false);
  CHECK_FALSE(scale_by(x, x).requires_grad());
  Tensor y = scale_by(x.set_requires_grad(true), x.detach());
  CHECK_THROWS(y.set_requires_grad(false));
}

TEST_CASE("sum_to_shape reduces broadcast dimensions") {
  Tensor g = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(sum_to_shape(g, {3}).to_vector() == std::vector<float>{5, 7, 9});
  CHECK(sum_to_shape(g, {2, 1}).to_vector() == std::vector<float>{6, 15});
  CHECK(sum_to_shape(g, {}).to_vector() == std::vector<float>{21});
}

TEST_CASE("caching allocator reuses freed blocks of the same size class") {
  host_release_cache();
  size_t before = host_memory_stats().system_allocs;
  for (int i = 0; i < 10; ++i) Tensor t = Tensor::empty({1000, 1000});
  CHECK(host_memory_stats().system_allocs - before == 1);
}

TEST_CASE("autograd: a leaf's post-accumulate hook runs once per pass, after its last gradient arrived") {
  Tensor x = Tensor::from_vector({3}, {1, 2, 3}).set_requires_grad(true);
  Tensor unused = Tensor::from_vector({1}, {5}).set_requires_grad(true);
  std::vector<float> seen;
  int calls = 0, unused_calls = 0;
  set_post_accumulate_grad_hook(x, [&] {
    ++calls;
    seen = x.grad().to_vector();  // the whole gradient of the pass, not a partial sum
  });
  set_post_accumulate_grad_hook(unused, [&] { ++unused_calls; });
  const Tensor y = scale_by(x, x.detach());  // x used twice: two gradient paths meet in x
  const Tensor w = add(y, scale_by(x, Tensor::from_vector({3}, {3, 3, 3})));
  w.backward(Tensor::ones({3}));
  CHECK(calls == 1);
  CHECK(unused_calls == 0);  // no gradient reached it
  CHECK(seen == std::vector<float>{4, 5, 6});  // x(const) + 3
  // A leaf that is its own root calls it too; an empty hook removes it.
  x.backward(Tensor::ones({3}));
  CHECK(calls == 2);
  set_post_accumulate_grad_hook(x, nullptr);
  add(x, x).backward(Tensor::ones({3}));
  CHECK(calls == 2);
  CHECK_THROWS_AS(set_post_accumulate_grad_hook(w, [] {}), std::invalid_argument);
}
