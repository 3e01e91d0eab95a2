// Volume preprocessing: grid changes that keep world coordinates right (pad/crop, resampling),
// intensity normalisation and Gaussian blur. All loops are OpenMP-parallel over independent
// outputs, so results are bitwise identical for any thread count.
#pragma once
#include <array>
#include <cstdint>

#include "io/volume.h"

namespace cpets::io {

// ---- affine helpers (voxel (i=x=W, j=y=H, k=z=D) → world mm) ----------------------------------
Affine invert_affine(const Affine& a);  // throws if singular
Affine multiply_affine(const Affine& a, const Affine& b);
std::array<double, 3> apply_affine(const Affine& a, double i, double j, double k);
// An affine for `shape` (D,H,W) with axis-aligned voxel sizes (x,y,z) whose field-of-view centre
// sits at `centre_world` (mm).
Affine centred_affine(std::array<int64_t, 3> shape, std::array<double, 3> voxel_mm,
                      std::array<double, 3> centre_world);

// Why `v` is not on the model's kind of grid — axis-aligned, canonical RAS+ (x → right, y →
// anterior, z → superior) with isotropic `voxel_mm` voxels, within 1 % — or "" when it is. Such
// volumes only need padding or cropping to the model's shape; others need resampling first
// (cpets-data prepare), or pad_crop_to would give the model the wrong field of view.
std::string grid_mismatch(const Volume& v, double voxel_mm);

// ---- grid changes --------------------------------------------------------------------------
// MONAI SpatialPad(symmetric, zeros) then CenterSpatialCrop to `target` (D,H,W): pad before =
// (target − n)//2 where n < target; crop start = n//2 − target//2 where n > target. The affine
// is shifted so every kept voxel keeps its world coordinate.
Volume pad_crop_to(const Volume& v, std::array<int64_t, 3> target);

enum class Interp { nearest, linear };

// Resamples onto the grid (shape, affine): each target voxel's world point is mapped through the
// source's inverse affine and interpolated. Points within half a voxel outside the source take
// the edge value (the field of view covers [−½, n−½]); points further out take `outside`.
Volume resample_to_grid(const Volume& v, std::array<int64_t, 3> shape, const Affine& affine,
                        Interp interp = Interp::linear, float outside = 0.f);

// Resamples to new voxel sizes (x, y, z in mm), keeping the axis directions and the field-of-view
// centre; the new shape is round(n · old / new) per axis (at least 1).
Volume resample_to_voxel_size(const Volume& v, std::array<double, 3> voxel_mm,
                              Interp interp = Interp::linear);

// ---- intensities ----------------------------------------------------------------------------
// Divides by the maximum and returns it. Throws if the volume is empty, holds non-finite values
// or its maximum is ≤ 0 (nothing to normalise: an empty or all-background image).
float normalize_by_max(Volume& v);

// Separable Gaussian blur, FWHM in mm (converted per axis with the voxel sizes), zero outside
// the volume, kernel truncated at 4σ and normalised to sum 1. fwhm ≤ 0 is a no-op.
void gaussian_blur(Volume& v, double fwhm_mm);
// The same with a σ per axis in voxels (x, y, z); used by callers that think in voxels.
void gaussian_blur_voxels(Volume& v, std::array<double, 3> sigma_vox);

}  // namespace cpets::io
