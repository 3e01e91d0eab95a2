// NIfTI-1/-2 reading and writing on NIfTI-clib. Every error names the file and what is wrong.
#pragma once
#include <array>
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
  int sform_code = 0, qform_code = 0;
  std::string storage;             // "nii", "nii.gz", "hdr/img" or "hdr/img.gz"
};

struct NiftiReadOptions {
  bool allow_nonfinite = false;  // false: NaN/Inf voxels are an error that counts them
};

// Reads a 3-D volume (.nii, .nii.gz, or a .hdr/.img pair) with scl_slope/scl_inter applied.
// Throws std::runtime_error naming the file: not a NIfTI file, truncated data, 4-D or more
// (a trailing dimension of size 1 is accepted), non-finite voxels unless allowed.
// Without sform/qform codes the affine is NIfTI "method 1": diag(pixdim), origin at voxel 0
// (nibabel instead centres an ANALYZE-style affine; NIfTI-clib and the standard do not).
Volume read_nifti(const std::string& path, NiftiInfo* info = nullptr, NiftiReadOptions opt = {});

// The check read_nifti applies when allow_nonfinite is false; throws "…: 3 NaN voxels …".
void require_finite(const NiftiInfo& info);

// Writes float32 with the volume's affine as both sform and qform (code 1 = scanner/aligned).
// Atomic: a temporary file in the same folder renamed into place. The name must end in .nii
// (uncompressed) or .nii.gz (gzip).
void write_nifti(const std::string& path, const Volume& v);

// For each voxel axis (x=W, y=H, z=D) the world axis (0=R/L, 1=A/P, 2=S/I) it runs closest to
// and the direction (+1 towards R/A/S, −1 away), like nibabel's io_orientation.
struct AxisOrientation {
  std::array<int, 3> world_axis{0, 1, 2};
  std::array<int, 3> sign{1, 1, 1};
};
AxisOrientation axis_orientation(const Affine& affine);
std::string orientation_string(const Affine& affine);  // "RAS", "LPI", ...

// Permutes/flips the voxel axes so that they run as close as possible to R, A, S (like nibabel's
// as_closest_canonical), keeping the affine consistent with the moved voxels.
Volume reorient_canonical(const Volume& v);

// Throws when two volumes that must share a grid (a T1 and its PET) do not: different shapes,
// or affines differing by more than tol_mm in any entry. names = the two files, for the message.
void check_same_grid(const Volume& a, const Volume& b, const std::array<std::string, 2>& names,
                     double tol_mm = 1e-3);

}  // namespace cpets::io
