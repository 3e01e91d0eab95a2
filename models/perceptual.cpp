// V, the LPIPS-squeeze perceptual network, and the 2.5-D perceptual loss (docs/model.md §3,
// reference-implementation.md §1.8).
//
// Layout: a batch of N slices runs through the trunk as ONE volume (1, C, N, H, W), the slices
// stacked along D, with kernels of depth 1 so slices never mix. That lets every 1×1 convolution
// run on the free view (1, C, 1, 1, N·H·W), whose long rows the conv kernel vectorises well
// (measured ~5× faster than (N, C, 1, H, W) for the 7×5 and 3×2 late layers), and 3×3 backward
// passes ~1.5–2× faster. The scaling layer (1 → 3 channels) is folded into the first convolution,
// which has no padding, so it is exact up to rounding and the 3-channel input never exists.
#include "models/perceptual.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/safetensors.h"

namespace cpets::models {
namespace {

constexpr float kNormEps = 1e-10f;  // lpips.normalize_tensor
// LPIPS v0.1 ScalingLayer: ImageNet-style per-channel shift and scale of the 3-channel input.
constexpr float kShift[3] = {-0.030f, -0.088f, -0.188f};
constexpr float kScale[3] = {0.458f, 0.448f, 0.450f};
// Channels of the seven taps (relu1 … relu7).
constexpr int64_t kTapChannels[LpipsSqueeze::kTaps] = {64, 128, 256, 384, 384, 512, 512};

// A 2-D convolution with bias, stored as a conv3d of kernel (1, k, k), applied to slices stacked
// along D: x (1, Cin, N, H, W).
struct Conv2d {
  Tensor weight, bias;
  int64_t stride = 1, padding = 0;
  Tensor operator()(const Tensor& x) const {
    if (weight.size(3) == 1 && weight.size(4) == 1 && stride == 1) {  // 1×1: one long row
      Tensor flat = reshape(x, {1, x.size(1), 1, 1, -1});
      return reshape(conv3d(flat, weight, bias, {1, 1, 1}, {0, 0, 0}), {1, weight.size(0), x.size(2), x.size(3), x.size(4)});
    }
    return conv3d(x, weight, bias, {1, stride, stride}, {0, padding, padding});
  }
};

Conv2d add_conv(Module& owner, int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t padding) {
  Conv2d c;
  c.weight = owner.register_parameter("weight", Tensor::zeros({cout, cin, 1, k, k}));
  c.bias = owner.register_parameter("bias", Tensor::zeros({cout}));
  c.stride = stride;
  c.padding = padding;
  return c;
}

// SqueezeNet's Fire module: squeeze 1×1 + ReLU, then [expand 1×1 + ReLU, expand 3×3 pad 1 + ReLU]
// concatenated over channels. Child names are torchvision's.
struct Fire {
  Conv2d squeeze, expand1x1, expand3x3;
  Tensor operator()(const Tensor& x) const {
    Tensor s = relu(squeeze(x));
    return concat({relu(expand1x1(s)), relu(expand3x3(s))}, 1);
  }
};

Fire add_fire(Module& slice, int64_t index, int64_t cin, int64_t s, int64_t e1, int64_t e3) {
  auto m = slice.register_module(std::to_string(index), std::make_shared<Module>());
  Fire f;
  f.squeeze = add_conv(*m->register_module("squeeze", std::make_shared<Module>()), cin, s, 1, 1, 0);
  f.expand1x1 = add_conv(*m->register_module("expand1x1", std::make_shared<Module>()), s, e1, 1, 1, 0);
  f.expand3x3 = add_conv(*m->register_module("expand3x3", std::make_shared<Module>()), s, e3, 3, 1, 1);
  return f;
}

Tensor max_pool_3s2(const Tensor& x) { return max_pool3d(x, {1, 3, 3}, {1, 2, 2}, /*ceil_mode=*/true); }

// conv(w, b) applied to LPIPS's scaling layer (x − shift_c) / scale_c of a 1-channel x broadcast
// to 3 channels equals conv(w', b') on x itself, w' = Σ_c w_c / scale_c and
// b' = b − Σ_{c, taps} w_c · shift_c / scale_c (no padding, so every tap sees the shift). Built
// with differentiable ops, so gradients w.r.t. the weights would still be right if unfrozen.
Conv2d fold_scaling_layer(const Conv2d& conv) {
  Tensor inv_scale = Tensor::from_vector({1, 3, 1, 1, 1}, {1.f / kScale[0], 1.f / kScale[1], 1.f / kScale[2]});
  Tensor shift_over_scale =
      Tensor::from_vector({1, 3, 1, 1, 1}, {kShift[0] / kScale[0], kShift[1] / kScale[1], kShift[2] / kScale[2]});
  Conv2d folded = conv;
  folded.weight = sum(mul(conv.weight, inv_scale), {1}, /*keepdim=*/true);
  folded.bias = sub(conv.bias, sum(mul(conv.weight, shift_over_scale), {1, 2, 3, 4}));
  return folded;
}

void check_slices(const char* what, const Tensor& t) {
  if (!t.defined()) throw std::invalid_argument(std::string("LpipsSqueeze: ") + what + " is undefined");
  if (t.dim() != 5 || t.size(1) != 1 || t.size(2) != 1)
    throw std::invalid_argument(std::string("LpipsSqueeze: ") + what +
                                " must be single-channel 2-D slices (N, 1, 1, H, W); got " + t.str());
  if (t.size(3) < 17 || t.size(4) < 17)
    throw std::invalid_argument(std::string("LpipsSqueeze: ") + what + " slices " + t.str() +
                                " are smaller than 17×17, too small for SqueezeNet's seven feature taps");
}

std::string join(const std::vector<std::string>& names, size_t limit) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < limit; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > limit) s += ", … (" + std::to_string(names.size()) + " in all)";
  return s;
}

}  // namespace

struct LpipsSqueeze::Layers {
  Conv2d conv1;                    // features.0: 3→64, 3×3, stride 2, no padding
  std::vector<Fire> fires;         // features.3, 4, 6, 7, 9, 10, 11, 12
  std::vector<Tensor> lin;         // lin0 … lin6 weights (1, C, 1, 1, 1)
};

LpipsSqueeze::LpipsSqueeze() : layers_(std::make_shared<Layers>()) {
  auto net = register_module("net", std::make_shared<Module>());
  std::vector<std::shared_ptr<Module>> slices;
  for (int k = 1; k <= kTaps; ++k)
    slices.push_back(net->register_module("slice" + std::to_string(k), std::make_shared<Module>()));
  layers_->conv1 = add_conv(*slices[0]->register_module("0", std::make_shared<Module>()), 3, 64, 3, 2, 0);
  // (index into `slices`, so 1 = net.slice2; torchvision features index; in; squeeze; expand)
  // of the eight Fire modules.
  struct FireSpec { int slice; int64_t index, cin, s, e; };
  for (FireSpec f : {FireSpec{1, 3, 64, 16, 64}, {1, 4, 128, 16, 64}, {2, 6, 128, 32, 128}, {2, 7, 256, 32, 128},
                     {3, 9, 256, 48, 192}, {4, 10, 384, 48, 192}, {5, 11, 384, 64, 256}, {6, 12, 512, 64, 256}})
    layers_->fires.push_back(add_fire(*slices[size_t(f.slice)], f.index, f.cin, f.s, f.e, f.e));
  for (int k = 0; k < kTaps; ++k) {
    auto lin = register_module("lin" + std::to_string(k), std::make_shared<Module>());
    auto conv = lin->register_module("model", std::make_shared<Module>())->register_module("1", std::make_shared<Module>());
    layers_->lin.push_back(conv->register_parameter("weight", Tensor::zeros({1, kTapChannels[k], 1, 1, 1})));
  }
  set_requires_grad(false);  // V is never trained; gradients still flow to its inputs
  eval();
}

std::vector<Tensor> LpipsSqueeze::features(const Tensor& x) const {
  check_slices("input", x);
  const Layers& L = *layers_;
  const auto& F = L.fires;
  std::vector<Tensor> taps;
  // (N, 1, 1, H, W) → (1, 1, N, H, W): the slices stacked along D (see the top of this file).
  Tensor h = relu(fold_scaling_layer(L.conv1)(reshape(x, {1, 1, x.size(0), x.size(3), x.size(4)})));
  taps.push_back(h);                                      // relu1
  h = F[1](F[0](max_pool_3s2(h)));
  taps.push_back(h);                                      // relu2
  h = F[3](F[2](max_pool_3s2(h)));
  taps.push_back(h);                                      // relu3
  h = F[4](max_pool_3s2(h));
  taps.push_back(h);                                      // relu4
  for (size_t f = 5; f < 8; ++f) taps.push_back(h = F[f](h));  // relu5, relu6, relu7
  return taps;
}

std::vector<Tensor> LpipsSqueeze::forward_per_tap(const Tensor& a, const Tensor& b) const {
  check_slices("first input", a);
  check_slices("second input", b);
  if (a.shape() != b.shape())
    throw std::invalid_argument("LpipsSqueeze: the two inputs must have the same shape; got " + a.str() + " and " + b.str());
  // Two trunk passes rather than one on the concatenation: when b needs no gradient (the
  // target), its pass records nothing and the backward runs over a's half only.
  std::vector<Tensor> fa = features(a), fb = features(b);
  std::vector<Tensor> per_tap;
  for (int k = 0; k < kTaps; ++k) {
    // (1, 1, N, h, w) distance map → the spatial mean of each slice, (N).
    Tensor map = lpips_layer_distance(fa[size_t(k)], fb[size_t(k)], layers_->lin[size_t(k)], kNormEps);
    per_tap.push_back(mean(reshape(map, {a.size(0), -1}), {1}));
  }
  return per_tap;
}

Tensor LpipsSqueeze::forward(const Tensor& a, const Tensor& b) const {
  std::vector<Tensor> per_tap = forward_per_tap(a, b);
  Tensor total = per_tap[0];
  for (int k = 1; k < kTaps; ++k) total = add(total, per_tap[size_t(k)]);
  return total;
}

std::vector<int64_t> random_permutation(int64_t count, Generator& gen) {
  std::vector<int64_t> perm(size_t(std::max<int64_t>(count, 0)));
  for (int64_t i = 0; i < count; ++i) perm[size_t(i)] = i;
  if (count < 2) return perm;
  std::vector<float> u(size_t(count - 1));
  gen.fill_uniform(u.data(), count - 1);
  for (int64_t k = 0; k + 1 < count; ++k) {
    const int64_t i = count - 1 - k;
    const int64_t j = int64_t(double(u[size_t(k)]) * double(i + 1));  // u < 1, so j ≤ i
    std::swap(perm[size_t(i)], perm[size_t(j)]);
  }
  return perm;
}

Tensor perceptual_loss_25d(const LpipsSqueeze& net, const Tensor& pred, const Tensor& target, Generator& gen, float ratio) {
  if (!pred.defined() || !target.defined() || pred.dim() != 5 || pred.size(1) != 1 || pred.shape() != target.shape())
    throw std::invalid_argument("perceptual_loss_25d: pred and target must be single-channel volumes (B, 1, D, H, W) of "
                                "the same shape; got " + (pred.defined() ? pred.str() : "undefined") + " and " +
                                (target.defined() ? target.str() : "undefined"));
  if (!(ratio > 0.f && ratio <= 1.f))
    throw std::invalid_argument("perceptual_loss_25d: ratio must be in (0, 1]; got " + std::to_string(ratio));
  Tensor total;
  for (int64_t axis = 2; axis <= 4; ++axis) {
    const int64_t count = pred.size(0) * pred.size(axis);
    const int64_t keep = int64_t(double(count) * double(ratio));  // ⌊ratio·B·n⌋, as int() in the reference
    if (keep < 1)
      throw std::invalid_argument("perceptual_loss_25d: ratio " + std::to_string(ratio) + " keeps no slice of the " +
                                  std::to_string(count) + " along axis " + std::to_string(axis) + " of " + pred.str());
    std::vector<int64_t> order = random_permutation(count, gen);
    order.resize(size_t(keep));
    Tensor axis_mean = mean(net.forward(gather_slices(pred, axis, order), gather_slices(target, axis, order)));
    total = total.defined() ? add(total, axis_mean) : axis_mean;
  }
  return total;
}

std::shared_ptr<LpipsSqueeze> load_lpips_squeeze(const std::string& path) {
  const std::string fix = "; convert the weights once with tools/convert_lpips.py (see its --help), or switch the perceptual "
                          "term off explicitly (perceptual \"none\" or lambda_perceptual 0)";
  if (path.empty()) throw std::runtime_error("load_lpips_squeeze: no weights file was given" + fix);
  if (!std::filesystem::exists(path)) throw std::runtime_error("load_lpips_squeeze: " + path + " does not exist" + fix);
  SafetensorsFile file = load_safetensors(path);
  auto net = std::make_shared<LpipsSqueeze>();
  std::map<std::string, Tensor> state;
  for (auto& [name, t] : file.tensors) state[name] = t;
  std::vector<std::string> missing, wrong;
  for (auto& [name, param] : net->state_dict()) {
    auto it = state.find(name);
    if (it == state.end()) {
      missing.push_back(name);
      continue;
    }
    // Accept PyTorch's 4-D 2-D-conv layouts (Cout, Cin, kH, kW) as well as our 5-D ones.
    if (it->second.shape() != param.shape() && it->second.numel() == param.numel() && it->second.dim() == 4)
      it->second = it->second.view(param.shape());
    if (it->second.shape() != param.shape()) wrong.push_back(name + " " + it->second.str() + " (want " + param.str() + ")");
  }
  if (!missing.empty())
    throw std::runtime_error("load_lpips_squeeze: " + path + " lacks " + std::to_string(missing.size()) + " of the " +
                             std::to_string(net->state_dict().size()) + " LPIPS-squeeze tensors: " + join(missing, 8) + fix);
  if (!wrong.empty())
    throw std::runtime_error("load_lpips_squeeze: " + path + " has tensors of the wrong shape: " + join(wrong, 8) + fix);
  net->load_state_dict(state, /*strict=*/false);  // extra entries (e.g. scaling_layer buffers) are ignored
  for (int k = 0; k < LpipsSqueeze::kTaps; ++k) {
    const Tensor& w = state.at("lin" + std::to_string(k) + ".model.1.weight");
    for (int64_t i = 0; i < w.numel(); ++i)
      if (w.data()[i] < 0.f)
        throw std::runtime_error("load_lpips_squeeze: " + path + ": lin" + std::to_string(k) +
                                 " has negative weights, which LPIPS's calibration never has; was the file converted from "
                                 "the lpips package's squeeze.pth?" + fix);
  }
  return net;
}

}  // namespace cpets::models
