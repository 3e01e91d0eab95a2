// cpets-data prepare: a cohort folder copied onto the model's grid. Every NIfTI volume that is not
// already on the grid (shape, canonical RAS+ axes, voxel size and position) is resampled to it
// through the two affines — trilinear for images, nearest for label volumes (any path with an
// "atlas" component) — so that 1 mm or 2 mm scans, or scans stored LPS or LAS, reach the model
// with the field of view it was trained on. T1 and PET land on the same world grid, so a
// co-registered pair stays co-registered. Tables and other files are copied unchanged.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "io/volume.h"

namespace cpets::io {

struct ModelGrid {
  std::array<int64_t, 3> shape{96, 128, 96};  // (D, H, W)
  double voxel_mm = 1.5;                      // isotropic
  std::array<double, 3> centre_mm{0, -17, 11};  // world (MNI) point at the field-of-view centre
  Affine affine() const;                        // canonical RAS+
};

struct PrepareReport {
  int copied = 0, resampled = 0, other_files = 0;
  std::vector<std::string> lines;  // one per resampled volume: "t1/…: 1 mm LPS 176×240×256 → 1.5 mm RAS 96×128×96"
};

// Writes the prepared copy of `cohort_dir` into `out_dir` (which must not exist yet, or be empty).
// Throws naming the file for an unreadable volume, and refuses out_dir inside cohort_dir.
PrepareReport prepare_cohort(const std::string& cohort_dir, const std::string& out_dir, const ModelGrid& grid);

// "RAS", "LPS", … for an affine's axis directions (the nearest cardinal direction of each axis).
std::string orientation_code(const Affine& a);

}  // namespace cpets::io
