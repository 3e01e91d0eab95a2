#include "io/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Dense>

namespace cpets::io {

// ---- affine helpers ------------------------------------------------------------------------

Affine invert_affine(const Affine& a) {
  Eigen::Matrix4d m;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) m(r, c) = a[r][c];
  Eigen::FullPivLU<Eigen::Matrix4d> lu(m);
  if (!lu.isInvertible())
    throw std::runtime_error("invert_affine: the affine is singular (a voxel size of 0?); fix the volume's affine");
  const Eigen::Matrix4d inv = lu.inverse();
  Affine out{};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) out[r][c] = inv(r, c);
  return out;
}

Affine multiply_affine(const Affine& a, const Affine& b) {
  Affine out{};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) {
      double s = 0;
      for (int k = 0; k < 4; ++k) s += a[r][k] * b[k][c];
      out[r][c] = s;
    }
  return out;
}

std::array<double, 3> apply_affine(const Affine& a, double i, double j, double k) {
  return {a[0][0] * i + a[0][1] * j + a[0][2] * k + a[0][3],
          a[1][0] * i + a[1][1] * j + a[1][2] * k + a[1][3],
          a[2][0] * i + a[2][1] * j + a[2][2] * k + a[2][3]};
}

Affine centred_affine(std::array<int64_t, 3> shape, std::array<double, 3> voxel_mm,
                      std::array<double, 3> centre_world) {
  Affine a = scaling_affine(voxel_mm[0], voxel_mm[1], voxel_mm[2]);
  const double n[3] = {double(shape[2]), double(shape[1]), double(shape[0])};  // x, y, z counts
  for (int c = 0; c < 3; ++c) a[c][3] = centre_world[c] - voxel_mm[c] * (n[c] - 1) / 2;
  return a;
}

std::string grid_mismatch(const Volume& v, double voxel_mm) {
  const char* axis = "xyz";
  const char* positive = "RAS";
  auto mm = [](double x) {
    char b[32];
    std::snprintf(b, sizeof b, "%.3g mm", x);
    return std::string(b);
  };
  for (int c = 0; c < 3; ++c) {
    const double size = v.voxel_size()[c];
    if (std::fabs(size - voxel_mm) > 0.01 * voxel_mm)
      return std::string("voxel size along ") + axis[c] + " is " + mm(size) + ", not the model's " + mm(voxel_mm);
    for (int r = 0; r < 3; ++r) {
      const double cosine = v.affine[r][c] / size;
      if (r == c ? cosine < 0.99 : std::fabs(cosine) > 0.01)
        return std::string("voxel axis ") + axis[c] + " does not point along +" + positive[c] +
               " (the affine is not canonical RAS+: an oblique, flipped or permuted orientation)";
    }
  }
  return "";
}

namespace {

void check_volume(const Volume& v, const char* who) {
  if (v.shape[0] <= 0 || v.shape[1] <= 0 || v.shape[2] <= 0)
    throw std::runtime_error(std::string(who) + ": empty volume of shape " + shape_string(v.shape));
  if (int64_t(v.data.size()) != v.numel())
    throw std::runtime_error(std::string(who) + ": volume of shape " + shape_string(v.shape) + " holds " +
                             std::to_string(v.data.size()) + " values instead of " + std::to_string(v.numel()));
}

// Maps a continuous source index to the interpolation domain: within the field of view
// [−½, n−½] it is clamped onto [0, n−1]; outside it the point is rejected.
inline bool in_fov(double& x, int64_t n) {
  if (!(x >= -0.5 && x <= double(n) - 0.5)) return false;
  x = std::clamp(x, 0.0, double(n - 1));
  return true;
}

}  // namespace

// ---- grid changes --------------------------------------------------------------------------

Volume pad_crop_to(const Volume& v, std::array<int64_t, 3> target) {
  check_volume(v, "pad_crop_to");
  for (int a = 0; a < 3; ++a)
    if (target[a] <= 0) throw std::runtime_error("pad_crop_to: target shape " + shape_string(target) + " must be positive");
  // offset[a]: source index of target index 0 along axis a (D, H, W).
  std::array<int64_t, 3> offset{};
  for (int a = 0; a < 3; ++a) {
    const int64_t n = v.shape[a], t = target[a];
    const int64_t pad_before = n < t ? (t - n) / 2 : 0;
    const int64_t padded = std::max(n, t);
    const int64_t crop_start = padded > t ? padded / 2 - t / 2 : 0;
    offset[a] = crop_start - pad_before;
  }
  Volume out = make_volume(target, 0.f, v.affine);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t d = 0; d < target[0]; ++d)
    for (int64_t h = 0; h < target[1]; ++h) {
      const int64_t sd = d + offset[0], sh = h + offset[1];
      if (sd < 0 || sd >= v.shape[0] || sh < 0 || sh >= v.shape[1]) continue;
      for (int64_t w = 0; w < target[2]; ++w) {
        const int64_t sw = w + offset[2];
        if (sw >= 0 && sw < v.shape[2]) out.at(d, h, w) = v.at(sd, sh, sw);
      }
    }
  // world(new index n) = A·(n + offset): shift the translation by A·offset (x=W, y=H, z=D).
  const auto shift = apply_affine(v.affine, double(offset[2]), double(offset[1]), double(offset[0]));
  for (int r = 0; r < 3; ++r) out.affine[r][3] = shift[r];
  return out;
}

Volume resample_to_grid(const Volume& v, std::array<int64_t, 3> shape, const Affine& affine, Interp interp,
                        float outside) {
  check_volume(v, "resample_to_grid");
  for (int a = 0; a < 3; ++a)
    if (shape[a] <= 0) throw std::runtime_error("resample_to_grid: target shape " + shape_string(shape) + " must be positive");
  // Target voxel → source voxel is one affine map: M = A_src⁻¹ · A_target.
  const Affine m = multiply_affine(invert_affine(v.affine), affine);
  Volume out = make_volume(shape, outside, affine);
  const int64_t nx = v.shape[2], ny = v.shape[1], nz = v.shape[0];
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t d = 0; d < shape[0]; ++d)
    for (int64_t h = 0; h < shape[1]; ++h)
      for (int64_t w = 0; w < shape[2]; ++w) {
        auto p = apply_affine(m, double(w), double(h), double(d));
        double x = p[0], y = p[1], z = p[2];
        if (!in_fov(x, nx) || !in_fov(y, ny) || !in_fov(z, nz)) continue;
        float value;
        if (interp == Interp::nearest) {
          value = v.at(int64_t(std::lround(z)), int64_t(std::lround(y)), int64_t(std::lround(x)));
        } else {
          const int64_t x0 = std::min<int64_t>(int64_t(x), nx - 1), y0 = std::min<int64_t>(int64_t(y), ny - 1),
                        z0 = std::min<int64_t>(int64_t(z), nz - 1);
          const int64_t x1 = std::min(x0 + 1, nx - 1), y1 = std::min(y0 + 1, ny - 1), z1 = std::min(z0 + 1, nz - 1);
          const double fx = x - x0, fy = y - y0, fz = z - z0;
          const double c00 = v.at(z0, y0, x0) * (1 - fx) + v.at(z0, y0, x1) * fx;
          const double c01 = v.at(z0, y1, x0) * (1 - fx) + v.at(z0, y1, x1) * fx;
          const double c10 = v.at(z1, y0, x0) * (1 - fx) + v.at(z1, y0, x1) * fx;
          const double c11 = v.at(z1, y1, x0) * (1 - fx) + v.at(z1, y1, x1) * fx;
          value = float((c00 * (1 - fy) + c01 * fy) * (1 - fz) + (c10 * (1 - fy) + c11 * fy) * fz);
        }
        out.at(d, h, w) = value;
      }
  return out;
}

Volume resample_to_voxel_size(const Volume& v, std::array<double, 3> voxel_mm, Interp interp) {
  check_volume(v, "resample_to_voxel_size");
  for (double s : voxel_mm)
    if (!(s > 0) || !std::isfinite(s))
      throw std::runtime_error("resample_to_voxel_size: voxel sizes must be positive and finite, got " +
                               std::to_string(voxel_mm[0]) + "×" + std::to_string(voxel_mm[1]) + "×" +
                               std::to_string(voxel_mm[2]) + " mm");
  const auto old_vox = v.voxel_size();
  // shape is (D,H,W) = (z,y,x); voxel sizes are (x,y,z).
  std::array<int64_t, 3> shape{};
  for (int a = 0; a < 3; ++a) {
    const int c = 2 - a;
    shape[a] = std::max<int64_t>(1, std::llround(double(v.shape[a]) * old_vox[c] / voxel_mm[c]));
  }
  // Same column directions, new lengths; then the translation that keeps the FOV centre fixed.
  Affine a = v.affine;
  for (int c = 0; c < 3; ++c)
    for (int r = 0; r < 3; ++r) a[r][c] = v.affine[r][c] / old_vox[c] * voxel_mm[c];
  const auto centre = apply_affine(v.affine, (v.shape[2] - 1) / 2.0, (v.shape[1] - 1) / 2.0, (v.shape[0] - 1) / 2.0);
  const auto centre_new = apply_affine(a, (shape[2] - 1) / 2.0, (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0);
  for (int r = 0; r < 3; ++r) a[r][3] += centre[r] - centre_new[r];
  return resample_to_grid(v, shape, a, interp);
}

// ---- intensities ----------------------------------------------------------------------------

float normalize_by_max(Volume& v) {
  check_volume(v, "normalize_by_max");
  float mx = -INFINITY;
  int64_t bad = 0;
  for (float x : v.data) {
    if (!std::isfinite(x)) ++bad;
    else mx = std::max(mx, x);
  }
  if (bad) throw std::runtime_error("normalize_by_max: the volume holds " + std::to_string(bad) +
                                    " non-finite voxels (NaN/Inf); clean the image before normalising");
  if (!(mx > 0)) throw std::runtime_error("normalize_by_max: maximum is " + std::to_string(mx) +
                                          " (≤ 0): an empty or all-background image cannot be divided by its maximum");
  for (float& x : v.data) x /= mx;  // division, not ·(1/max): the maximum becomes exactly 1
  return mx;
}

namespace {

std::vector<float> gaussian_kernel(double sigma) {
  const int radius = std::max(1, int(std::ceil(4 * sigma)));
  std::vector<double> g(2 * radius + 1);
  double sum = 0;
  for (int k = -radius; k <= radius; ++k) sum += g[k + radius] = std::exp(-0.5 * k * k / (sigma * sigma));
  std::vector<float> out(g.size());
  for (size_t i = 0; i < g.size(); ++i) out[i] = float(g[i] / sum);
  return out;
}

// Blurs along one axis of data viewed as (outer, n, inner): out[o,i,:] = Σ_k g_k · in[o,i+k,:],
// zero outside [0, n). Each output row is computed by one thread in a fixed order.
void blur_axis(std::vector<float>& data, int64_t outer, int64_t n, int64_t inner, const std::vector<float>& g) {
  const int radius = int(g.size() / 2);
  std::vector<float> out(data.size(), 0.f);
  const float* in = data.data();
  float* o_ptr = out.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < n; ++i) {
      float* dst = o_ptr + (o * n + i) * inner;
      const int64_t k0 = std::max<int64_t>(-radius, -i), k1 = std::min<int64_t>(radius, n - 1 - i);
      for (int64_t k = k0; k <= k1; ++k) {
        const float wk = g[k + radius];
        const float* src = in + (o * n + i + k) * inner;
        for (int64_t t = 0; t < inner; ++t) dst[t] += wk * src[t];
      }
    }
  data.swap(out);
}

}  // namespace

void gaussian_blur_voxels(Volume& v, std::array<double, 3> sigma_vox) {
  check_volume(v, "gaussian_blur");
  const int64_t D = v.shape[0], H = v.shape[1], W = v.shape[2];
  if (sigma_vox[0] > 0) blur_axis(v.data, D * H, W, 1, gaussian_kernel(sigma_vox[0]));
  if (sigma_vox[1] > 0) blur_axis(v.data, D, H, W, gaussian_kernel(sigma_vox[1]));
  if (sigma_vox[2] > 0) blur_axis(v.data, 1, D, H * W, gaussian_kernel(sigma_vox[2]));
}

void gaussian_blur(Volume& v, double fwhm_mm) {
  if (!(fwhm_mm > 0)) return;
  const auto vox = v.voxel_size();
  const double sigma_mm = fwhm_mm / (2 * std::sqrt(2 * std::log(2.0)));
  gaussian_blur_voxels(v, {sigma_mm / vox[0], sigma_mm / vox[1], sigma_mm / vox[2]});
}

}  // namespace cpets::io
