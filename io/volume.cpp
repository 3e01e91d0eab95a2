#include "io/volume.h"

#include <cmath>

namespace cpets::io {

Affine identity_affine() { return scaling_affine(1, 1, 1); }

Affine scaling_affine(double vx, double vy, double vz) {
  Affine a{};
  a[0][0] = vx;
  a[1][1] = vy;
  a[2][2] = vz;
  a[3][3] = 1;
  return a;
}

std::array<double, 3> Volume::voxel_size() const {
  std::array<double, 3> v{};
  for (int c = 0; c < 3; ++c)
    v[c] = std::sqrt(affine[0][c] * affine[0][c] + affine[1][c] * affine[1][c] + affine[2][c] * affine[2][c]);
  return v;
}

Volume make_volume(std::array<int64_t, 3> shape, float fill, Affine affine) {
  Volume v;
  v.shape = shape;
  v.data.assign(static_cast<size_t>(shape[0] * shape[1] * shape[2]), fill);
  v.affine = affine;
  return v;
}

std::string shape_string(const std::array<int64_t, 3>& s) {
  return std::to_string(s[0]) + "×" + std::to_string(s[1]) + "×" + std::to_string(s[2]);
}

}  // namespace cpets::io
