// SUVR from an atlas label volume (docs/model.md §6, reference-implementation.md §5.3):
// SUVR = mean(PET over the ROI's voxels) / mean(PET over the reference region's voxels), with the
// cerebral cortex as ROI and the cerebellar cortex as reference, plus the paper's six regional
// SUVRs (FC, TC, PC, OC, CI, OO), each against the same reference.
//
// The atlas is the folder the phantom writes (and real data can imitate): atlas/labels.nii.gz,
// integer labels stored as floats, and atlas/regions.json:
//   {"label_volume": "labels.nii.gz", "roi": "cerebral_cortex", "reference": "cerebellar_cortex",
//    "regions": {"cerebral_cortex": {"labels": [1, 2, ...]}, "FC": {"labels": [...]}, ...}}
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/volume.h"

namespace cpets::eval {

inline const std::array<std::string, 6>& six_rois() {
  static const std::array<std::string, 6> names{"FC", "TC", "PC", "OC", "CI", "OO"};
  return names;
}

struct Atlas {
  io::Volume labels;                                // on the grid the PET volumes must share
  std::string roi = "cerebral_cortex", reference = "cerebellar_cortex";
  std::map<std::string, std::vector<int>> regions;  // region name → its labels
  std::map<std::string, std::vector<int64_t>> voxels;  // region name → flat voxel indices (sorted)
  std::string source;                               // where it was read from

  bool has(const std::string& region) const { return voxels.count(region) > 0; }
  bool has_six_rois() const;
};

// Builds the voxel lists. Throws when the ROI or the reference region is not defined or has no
// voxels (naming the region and its labels), or a label value is not an integer.
Atlas make_atlas(io::Volume labels, std::map<std::string, std::vector<int>> regions,
                 std::string roi = "cerebral_cortex", std::string reference = "cerebellar_cortex");

// `path` is a regions.json file, an atlas folder holding one, or a cohort folder with
// atlas/regions.json. Throws naming the file and what is missing.
Atlas load_atlas(const std::string& path);

// The atlas moved onto another grid (nearest neighbour through the affines; outside → label 0),
// for PET volumes that are not on the atlas grid. Returns a copy when the grid is the same.
Atlas atlas_on_grid(const Atlas& atlas, std::array<int64_t, 3> shape, const io::Affine& affine);

// Mean of the PET over the region's voxels (double, fixed order). Throws when the PET's shape
// differs from the atlas's or the region is unknown or empty.
double region_mean(const io::Volume& pet, const Atlas& atlas, const std::string& region);

struct Suvr {
  double cortical = 0;            // atlas.roi against atlas.reference
  std::array<double, 6> roi{};    // six_rois() order; NaN where the atlas lacks the region
  double reference_mean = 0;
};
// Throws when the reference mean is not > 0 (an empty or misregistered PET).
Suvr compute_suvr(const io::Volume& pet, const Atlas& atlas);
// compute_suvr, or every value NaN when it throws: a synthetic PET with no signal in the
// reference region (an untrained model's) is a result to show, not a reason to stop. `why`
// receives the reason.
Suvr suvr_or_nan(const io::Volume& pet, const Atlas& atlas, std::string* why = nullptr);

}  // namespace cpets::eval
