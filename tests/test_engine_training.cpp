// The engine as a whole: a small 3-D network built from every op family (conv, GroupNorm+SiLU,
// pooling, attention with LayerNorm and linear projections, upsampling, losses) trained with Adam.
// It must learn, and its losses must be bitwise reproducible across runs and thread counts —
// the property cpets-train's reproducibility rests on.
#include <doctest/doctest.h>
#include <omp.h>

#include <vector>

#include "engine/autograd.h"
#include "engine/init.h"
#include "engine/module.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/rng.h"

using namespace cpets;

namespace {

class TinyNet : public Module {
 public:
  explicit TinyNet(Generator& gen) {
    conv_in = param({8, 1, 3, 3, 3}, "conv_in_weight", gen);
    conv_in_b = bias("conv_in_bias", 27, gen);
    gn_w = register_parameter("gn_weight", Tensor::ones({8}));
    gn_b = register_parameter("gn_bias", Tensor::zeros({8}));
    ln_w = register_parameter("ln_weight", Tensor::ones({8}));
    ln_b = register_parameter("ln_bias", Tensor::zeros({8}));
    wq = param({8, 8}, "to_q", gen);
    wk = param({8, 8}, "to_k", gen);
    wv = param({8, 8}, "to_v", gen);
    wo = param({8, 8}, "to_out_weight", gen);
    wo_b = bias("to_out_bias", 8, gen);
    conv_out = param({1, 8, 3, 3, 3}, "conv_out_weight", gen);
    conv_out_b = bias("conv_out_bias", 8 * 27, gen);
  }

  Tensor forward(const Tensor& x) const {
    Tensor h = conv3d(x, conv_in, conv_in_b, 1, 1);          // (B, 8, 8, 8, 8)
    h = group_norm_silu(h, 2, gn_w, gn_b, 1e-6f);
    h = avg_pool3d(h);                                       // (B, 8, 4, 4, 4)
    const int64_t B = h.size(0);
    Tensor tokens = transpose(reshape(h, {B, 8, 64}), 1, 2);  // (B, 64, 8)
    Tensor n = layer_norm(tokens, ln_w, ln_b, 1e-5f);
    Tensor a = attention(linear(n, wq), linear(n, wk), linear(n, wv), 2);
    tokens = tokens + linear(a, wo, wo_b);
    h = reshape(transpose(tokens, 1, 2), {B, 8, 4, 4, 4});
    h = upsample_nearest2x(h);                               // (B, 8, 8, 8, 8)
    return conv3d(silu(h), conv_out, conv_out_b, 1, 1);
  }

 private:
  Tensor param(const Shape& s, const std::string& name, Generator& gen) {
    Tensor w = Tensor::empty(s);
    kaiming_uniform_(w, gen);
    return register_parameter(name, w);
  }
  Tensor bias(const std::string& name, int64_t fan, Generator& gen) {
    Tensor b = Tensor::empty({s_out(name)});
    bias_uniform_(b, fan, gen);
    return register_parameter(name, b);
  }
  static int64_t s_out(const std::string& name) { return name.rfind("conv_out", 0) == 0 ? 1 : 8; }

  Tensor conv_in, conv_in_b, gn_w, gn_b, ln_w, ln_b, wq, wk, wv, wo, wo_b, conv_out, conv_out_b;
};

// Trains for `steps` steps on a fixed task (reproduce a smoothed, shifted copy of the input).
std::vector<float> train_losses(int threads, int steps) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  Generator gen(2024);
  TinyNet net(gen);
  Adam adam(net.named_parameters(), AdamOptions{.lr = 3e-3});
  Tensor x = randn({2, 1, 8, 8, 8}, gen);
  Tensor target;
  {
    NoGradGuard ng;
    target = upsample_nearest2x(avg_pool3d(x)) * 0.5f + 0.25f;
  }
  std::vector<float> losses;
  for (int s = 0; s < steps; ++s) {
    adam.zero_grad();
    Tensor loss = l1_loss(net.forward(x), target) + 0.1f * mse_loss(net.forward(x), target);
    loss.backward();
    adam.step();
    losses.push_back(loss.item());
  }
  omp_set_num_threads(saved);
  return losses;
}

}  // namespace

TEST_CASE("engine: a small 3-D attention network learns with Adam") {
  const std::vector<float> losses = train_losses(2, 60);
  INFO("first loss " << losses.front() << ", last " << losses.back());
  CHECK(losses.back() < 0.5f * losses.front());
}

TEST_CASE("engine: training losses are bitwise identical across runs and for 1 vs 2 threads") {
  const std::vector<float> a = train_losses(2, 8);
  const std::vector<float> b = train_losses(2, 8);
  const std::vector<float> c = train_losses(1, 8);
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i] == b[i]);
    CHECK(a[i] == c[i]);
  }
}
