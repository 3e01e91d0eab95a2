// V, the frozen perceptual network (docs/model.md §3, reference-implementation.md §1.8): LPIPS
// v0.1 on a SqueezeNet-1.1 trunk, applied 2.5-D. The ImageNet weights cannot ship with the
// project; tools/convert_lpips.py converts torchvision's squeezenet1_1 + lpips' squeeze linear
// layers once into a safetensors file that load_lpips_squeeze reads.
//
// 2-D slices are carried as 5-D tensors (N, 1, 1, H, W) so the engine's conv3d (kernel 1×k×k)
// and max_pool3d serve; inside the trunk a batch of slices is stacked along D, (1, C, N, H, W)
// (faster; see perceptual.cpp). The network is frozen (requires_grad off) but differentiable
// w.r.t. its inputs, since the generator's gradient flows through it.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/module.h"
#include "engine/rng.h"

namespace cpets::models {

// Parameter names are the lpips package's (LPIPS(net="squeeze").state_dict()): the trunk
// "net.slice1.0.weight" … "net.slice7.12.expand3x3.bias" (torchvision's features index kept
// inside each slice), the calibration "lin0.model.1.weight" … "lin6.model.1.weight". Conv weights
// are 5-D, (Cout, Cin, 1, kH, kW); lin weights (1, C, 1, 1, 1). 722,496 + 2,240 parameters.
class LpipsSqueeze : public Module {
 public:
  static constexpr int kTaps = 7;
  LpipsSqueeze();  // weights zero until loaded (tests load random ones); frozen
  // Per-slice LPIPS distance between single-channel slices in [0, 1], (N, 1, 1, H, W) each:
  // returns (N). Slices must be at least 17×17 (the smallest size whose seventh tap is
  // non-empty). Differentiable w.r.t. a and b.
  Tensor forward(const Tensor& a, const Tensor& b) const;
  // The same, one (N) distance per tap (their sum is forward's result).
  std::vector<Tensor> forward_per_tap(const Tensor& a, const Tensor& b) const;
  // The seven trunk taps (relu1 … relu7) of a batch of N slices (N, 1, 1, H, W), after the
  // scaling layer, each (1, C_k, N, h_k, w_k): the slices are stacked along D inside the trunk.
  std::vector<Tensor> features(const Tensor& x) const;

 private:
  struct Layers;  // handles to the registered tensors, in forward order (perceptual.cpp)
  std::shared_ptr<Layers> layers_;
};

// The slice order of the 2.5-D loss: a uniformly random permutation of [0, count) by
// Fisher–Yates: start from the identity, draw count − 1 uniforms u_0 … u_{count−2} from `gen`
// in one request, and for k = 0 … count − 2 swap elements i = count − 1 − k and
// j = ⌊u_k·(i + 1)⌋ (product in double). Advances gen by count − 1 values.
std::vector<int64_t> random_permutation(int64_t count, Generator& gen);

// Reads the converted file; a missing or incomplete file throws naming the path, the missing
// keys and the fix (run tools/convert_lpips.py, or set perceptual to "none" / λ_p to 0).
std::shared_ptr<LpipsSqueeze> load_lpips_squeeze(const std::string& path);

// The 2.5-D loss: for each axis (D, H, W) of the (B, 1, D, H, W) volumes, the B·n slices along it
// are put in random_permutation(B·n, gen) order and the first ⌊ratio·B·n⌋ kept (same slices for
// both volumes); the per-slice LPIPS is averaged per axis and the three axis means are summed.
// Permutations are drawn for D, then H, then W: gen advances by Σ (B·n − 1). Every slice must
// be at least 17×17. Returns a one-element tensor (as mean over all axes gives).
Tensor perceptual_loss_25d(const LpipsSqueeze& net, const Tensor& pred, const Tensor& target, Generator& gen,
                           float ratio = 0.5f);

}  // namespace cpets::models
