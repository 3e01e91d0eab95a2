// V, the frozen perceptual network (docs/model.md §3, reference-implementation.md §1.8): LPIPS
// v0.1 on a SqueezeNet-1.1 trunk, applied 2.5-D. The ImageNet weights cannot ship with the
// project; tools/convert_lpips.py converts torchvision's squeezenet1_1 + lpips' squeeze linear
// layers once into a safetensors file that load_lpips_squeeze reads.
//
// 2-D slices are carried as 5-D tensors (N, C, 1, H, W) so the engine's conv3d (kernel 1×k×k)
// and pooling serve; the network is frozen (requires_grad off) but differentiable w.r.t. its
// input, since the generator's gradient flows through it.
#pragma once
#include <memory>
#include <string>

#include "engine/module.h"
#include "engine/rng.h"

namespace cpets::models {

class LpipsSqueeze : public Module {
 public:
  LpipsSqueeze();  // weights zero until loaded (tests load random ones)
  // Per-slice LPIPS distance between single-channel slices in [0, 1], (N, 1, 1, H, W) each:
  // returns (N).
  Tensor forward(const Tensor& a, const Tensor& b) const;
};

// Reads the converted file; a missing or incomplete file throws naming the path, the missing
// keys and the fix (run tools/convert_lpips.py, or set perceptual to "none" / λ_p to 0).
std::shared_ptr<LpipsSqueeze> load_lpips_squeeze(const std::string& path);

// The 2.5-D loss: for each axis (D, H, W) of the (B, 1, D, H, W) volumes, the B·n slices along it
// are permuted with `gen` and the first ⌊ratio·B·n⌋ kept (same slices for both volumes); the
// per-slice LPIPS is averaged per axis and the three axis means are summed.
Tensor perceptual_loss_25d(const LpipsSqueeze& net, const Tensor& pred, const Tensor& target, Generator& gen,
                           float ratio = 0.5f);

}  // namespace cpets::models
