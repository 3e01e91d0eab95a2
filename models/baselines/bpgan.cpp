#include "models/baselines/bpgan.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/ops_conv.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_loss.h"
#include "engine/ops_reduce.h"
#include "engine/ops_shape.h"
#include "models/baselines/common.h"

namespace cpets::models {

using layers::BatchNorm3d;
using layers::Conv3d;
using layers::ConvOptions;

namespace {

constexpr float kSlope = 0.2f;
constexpr double kSsimSigma = 1.5;  // cpets-eval's SSIM window (eval/metrics.h ssim_reference)
constexpr int64_t kSsimTaps = 11;   // 2·int(3.5σ + 0.5) + 1

void require_pair(const Tensor& fake, const Tensor& real, const char* who) {
  baselines::require_image(fake, 1, who, "synthetic PET");
  if (!real.defined() || real.shape() != fake.shape())
    throw std::invalid_argument(std::string(who) + ": the real PET must have the synthetic PET's shape " + fake.str() +
                                ", got " + (real.defined() ? real.str() : std::string("none")));
}

// The normalised Gaussian taps as a (1, 1, k, 1, 1)-style kernel along `axis` (0 = D, 1 = H, 2 = W).
Tensor gaussian_kernel(int axis, Device device) {
  std::vector<double> g(static_cast<size_t>(kSsimTaps));
  double sum = 0;
  for (int64_t i = 0; i < kSsimTaps; ++i) sum += g[size_t(i)] = std::exp(-0.5 * std::pow((i - (kSsimTaps - 1) / 2.0) / kSsimSigma, 2));
  std::vector<float> taps;
  for (double v : g) taps.push_back(float(v / sum));
  Shape shape{1, 1, 1, 1, 1};
  shape[size_t(2 + axis)] = kSsimTaps;
  return Tensor::from_vector(shape, taps, device);
}

// Separable Gaussian local means of (N, 1, D, H, W) maps over the windows inside the volume.
Tensor gaussian_mean_valid(Tensor x) {
  for (int axis = 0; axis < 3; ++axis) x = conv3d(x, gaussian_kernel(axis, x.device()), Tensor(), 1, 0);
  return x;
}

}  // namespace

Tensor gradient_profile_loss(const Tensor& fake, const Tensor& real) {
  require_pair(fake, real, "gradient_profile_loss");
  Tensor total;
  for (int64_t axis = 2; axis < 5; ++axis) {
    const int64_t n = fake.size(axis);
    if (n < 2) throw std::invalid_argument("gradient_profile_loss: volume " + fake.str() + " has an axis of 1 voxel");
    auto difference = [&](const Tensor& x) { return sub(slice(x, axis, 1, n), slice(x, axis, 0, n - 1)); };
    const Tensor term = l1_loss(difference(fake), difference(real));
    total = total.defined() ? add(total, term) : term;
  }
  return mul_scalar(total, 1.f / 3.f);
}

Tensor ssim_loss(const Tensor& fake, const Tensor& real) {
  require_pair(fake, real, "ssim_loss");
  for (int64_t axis = 2; axis < 5; ++axis)
    if (fake.size(axis) < kSsimTaps)
      throw std::invalid_argument("ssim_loss: volume " + fake.str() + " is smaller than the " +
                                  std::to_string(kSsimTaps) + "-voxel Gaussian window along an axis");
  // The five local moments in one blur: E[x], E[y], E[x²], E[y²], E[xy], stacked along the batch.
  const int64_t b = fake.size(0);
  const Tensor moments = gaussian_mean_valid(concat({fake, real, mul(fake, fake), mul(real, real), mul(fake, real)}, 0));
  auto moment = [&](int64_t i) { return slice(moments, 0, i * b, (i + 1) * b); };
  const Tensor mx = moment(0), my = moment(1);
  const Tensor mxx = mul(mx, mx), myy = mul(my, my), mxy = mul(mx, my);
  const Tensor vx = sub(moment(2), mxx), vy = sub(moment(3), myy), cov = sub(moment(4), mxy);
  const float c1 = 0.01f * 0.01f, c2 = 0.03f * 0.03f;  // (K·L)² with data range L = 1
  const Tensor numerator = mul(add_scalar(mul_scalar(mxy, 2.f), c1), add_scalar(mul_scalar(cov, 2.f), c2));
  const Tensor denominator = mul(add_scalar(add(mxx, myy), c1), add_scalar(add(vx, vy), c2));
  return add_scalar(neg(mean(div(numerator, denominator))), 1.f);
}

MultiConvBlock::MultiConvBlock(int64_t in, int64_t out, const ModelConfig& config, Generator& init) {
  auto conv = [&](const std::string& name, int64_t from, int64_t kernel, bool bias) {
    return baselines::normal_init(
        register_module(name, std::make_shared<Conv3d>(from, out, kernel, init, ConvOptions{1, kernel / 2, bias})), init);
  };
  // The summed branches feed BatchNorm, which removes any bias; the wide branch's first conv feeds a LeakyReLU.
  point_ = conv("point", in, 1, false);
  cube_ = conv("cube", in, 3, false);
  wide_in_ = conv("wide_in", in, 3, true);
  wide_out_ = conv("wide_out", out, 3, false);
  norm_ = baselines::normal_init(
      register_module("norm", std::make_shared<BatchNorm3d>(out, config.bn_eps, config.bn_momentum)), init);
}

Tensor MultiConvBlock::forward(const Tensor& x) const {
  const Tensor wide = wide_out_->forward(leaky_relu(wide_in_->forward(x), kSlope));
  return leaky_relu(norm_->forward(add(add(point_->forward(x), cube_->forward(x)), wide)), kSlope);
}

MultiConvUNet::MultiConvUNet(const ModelConfig& config, Generator& init) {
  const auto& ch = config.baseline_channels;
  const int64_t levels = static_cast<int64_t>(ch.size());
  int64_t in = 1;
  for (int64_t l = 0; l < levels; ++l) {
    down_.push_back(register_module("down" + std::to_string(l), std::make_shared<MultiConvBlock>(in, ch[l], config, init)));
    in = ch[l];
  }
  for (int64_t l = levels - 2; l >= 0; --l) {
    up_conv_.push_back(baselines::normal_init(
        register_module("up_conv" + std::to_string(l),
                        std::make_shared<Conv3d>(ch[l + 1], ch[l], 3, init, ConvOptions{1, 1, true})),
        init));
    up_.push_back(register_module("up" + std::to_string(l), std::make_shared<MultiConvBlock>(2 * ch[l], ch[l], config, init)));
  }
  head_ = baselines::normal_init(
      register_module("head", std::make_shared<Conv3d>(ch[0], 1, 3, init, ConvOptions{1, 1, true})), init);
}

Tensor MultiConvUNet::forward(const Tensor& t1) const {
  baselines::require_image(t1, 1, "MultiConvUNet", "T1");
  std::vector<Tensor> skips;
  Tensor h = t1;
  for (size_t l = 0; l < down_.size(); ++l) {
    if (l > 0) h = max_pool3d(h, {2, 2, 2}, {2, 2, 2});
    h = down_[l]->forward(h);
    skips.push_back(h);
  }
  skips.pop_back();  // the deepest level's output is h itself
  for (size_t i = 0; i < up_.size(); ++i) {
    h = up_conv_[i]->forward(upsample_nearest2x(h));
    h = up_[i]->forward(concat({h, skips.back()}, 1));
    skips.pop_back();
  }
  return mul_scalar(add_scalar(tanh(head_->forward(h)), 1.f), 0.5f);  // ½(tanh + 1): the data's [0, 1]
}

BPGAN::BPGAN(const ModelConfig& config, Generator& init) : ConditionalGAN(config, "bpgan") {
  generator = register_module("generator", std::make_shared<MultiConvUNet>(config, init));
  add_discriminator(init);
}

void BPGAN::add_terms(const Tensor& fake, const Tensor& pet, const ObjectiveConfig& o, LossTerms& loss) const {
  const Tensor gp = gradient_profile_loss(fake, pet), ssim = ssim_loss(fake, pet);
  loss.total = add(loss.total, add(mul_scalar(gp, o.lambda_gp), mul_scalar(ssim, o.lambda_ssim)));
  loss.terms.emplace_back("gp", gp.item());
  loss.terms.emplace_back("ssim_loss", ssim.item());
}

}  // namespace cpets::models
