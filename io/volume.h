// A 3-D scalar volume as io/ hands it around: float32 voxels in (D, H, W) order with W fastest,
// which is NIfTI's (k, j, i) = (z, y, x) order, i.e. the engine's (B, C, D, H, W) layout without
// the first two dimensions. The affine maps voxel (i=x=W, j=y=H, k=z=D, 1) to world millimetres.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace cpets::io {

using Affine = std::array<std::array<double, 4>, 4>;

Affine identity_affine();
Affine scaling_affine(double vx, double vy, double vz);  // voxel sizes along x (W), y (H), z (D)

struct Volume {
  std::array<int64_t, 3> shape{0, 0, 0};  // (D, H, W) = (nz, ny, nx)
  std::vector<float> data;                // D·H·W values, W fastest
  Affine affine = identity_affine();

  int64_t numel() const { return shape[0] * shape[1] * shape[2]; }
  float& at(int64_t d, int64_t h, int64_t w) { return data[(d * shape[1] + h) * shape[2] + w]; }
  float at(int64_t d, int64_t h, int64_t w) const { return data[(d * shape[1] + h) * shape[2] + w]; }
  std::array<double, 3> voxel_size() const;  // (x, y, z) column norms of the affine, in mm
};

Volume make_volume(std::array<int64_t, 3> shape, float fill = 0.f, Affine affine = identity_affine());
std::string shape_string(const std::array<int64_t, 3>& shape);  // "96×128×96"

}  // namespace cpets::io
