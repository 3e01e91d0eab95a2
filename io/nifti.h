// NIfTI-1/-2 reading and writing on NIfTI-clib. Every error names the file and what is wrong.
#pragma once
#include <string>

#include "io/volume.h"

namespace cpets::io {

struct NiftiInfo {
  std::string path;
  int version = 0;                 // 1 or 2
  std::string datatype;            // "uint8", "int16", "float32", ...
  std::string affine_source;       // "sform", "qform" or "pixdim" (neither code set)
  bool byte_swapped = false;       // file was in the other byte order
  double scl_slope = 1, scl_inter = 0;  // as applied (slope 0 means "not set" and is treated as 1)
  std::string orientation;         // axis codes of the voxel axes, e.g. "RAS", "LPI"
  int64_t nan_count = 0, inf_count = 0;
  float min = 0, max = 0;          // over finite voxels
};

struct NiftiReadOptions {
  bool allow_nonfinite = false;  // false: NaN/Inf voxels are an error that counts them
};

// Reads a 3-D volume (.nii, .nii.gz, or a .hdr/.img pair) with scl_slope/scl_inter applied.
// Throws std::runtime_error naming the file: not a NIfTI file, truncated data, 4-D or more
// (a trailing dimension of size 1 is accepted), non-finite voxels unless allowed.
Volume read_nifti(const std::string& path, NiftiInfo* info = nullptr, NiftiReadOptions opt = {});

// Writes float32 with the volume's affine as both sform and qform (code 1 = scanner/aligned).
// Atomic: a temporary file renamed into place.
void write_nifti(const std::string& path, const Volume& v);

// Permutes/flips the voxel axes so that they run as close as possible to R, A, S (like nibabel's
// as_closest_canonical), keeping the affine consistent with the moved voxels.
Volume reorient_canonical(const Volume& v);

}  // namespace cpets::io
