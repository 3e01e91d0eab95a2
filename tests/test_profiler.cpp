// The op profiler charges forward time to ops, times every backward node and explicit scopes,
// and records nothing while it is off.
#include <doctest/doctest.h>

#include <thread>

#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/profiler.h"
#include "gradcheck.h"

using namespace cpets;

namespace {
const profiler::Entry* find(const std::vector<profiler::Entry>& es, const std::string& name) {
  for (const auto& e : es)
    if (e.name == name) return &e;
  return nullptr;
}

// conv → silu → mean, backward, Adam step.
void tiny_step(Tensor& w, Adam& opt) {
  Tensor x = testing::random_tensor({1, 2, 5, 5, 5}, 3);
  Tensor loss = mean(silu(conv3d(x, w, Tensor(), 1, 1)));
  loss.backward();
  opt.step();
  opt.zero_grad();
}
}  // namespace

TEST_CASE("profiler: forward, backward and scopes are counted only while enabled") {
  Tensor w = testing::random_tensor({3, 2, 3, 3, 3}, 1).set_requires_grad(true);
  Adam opt({{"w", w}});
  profiler::enable(false);
  profiler::reset();
  tiny_step(w, opt);
  CHECK(profiler::entries().empty());

  profiler::enable(true);
  profiler::reset();
  tiny_step(w, opt);
  tiny_step(w, opt);
  profiler::enable(false);
  const auto es = profiler::entries();
  const auto* conv = find(es, "conv3d");
  REQUIRE(conv != nullptr);
  CHECK(conv->forward_calls == 2);
  CHECK(conv->backward_calls == 2);
  CHECK(conv->forward_seconds > 0);
  CHECK(conv->backward_seconds > 0);
  const auto* adam = find(es, "adam_step");
  REQUIRE(adam != nullptr);
  CHECK(adam->other_calls == 2);
  REQUIRE(find(es, "silu") != nullptr);
  CHECK(find(es, "silu")->forward_calls == 2);
  for (size_t i = 1; i < es.size(); ++i) CHECK(es[i - 1].total() >= es[i].total());
}

TEST_CASE("profiler: a scope's time is not charged again to the next op") {
  profiler::enable(true);
  profiler::reset();
  {
    profiler::Scope s("sleep");
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  Tensor a = testing::random_tensor({4}, 1).set_requires_grad(true);
  Tensor b = silu(a);
  profiler::enable(false);
  const auto es = profiler::entries();
  REQUIRE(find(es, "sleep") != nullptr);
  REQUIRE(find(es, "silu") != nullptr);
  CHECK(find(es, "sleep")->other_seconds >= 0.025);
  CHECK(find(es, "silu")->forward_seconds < 0.02);
}
