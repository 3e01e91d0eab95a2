#include "io/prepare.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "io/nifti.h"
#include "io/preprocess.h"

namespace cpets::io {

namespace fs = std::filesystem;

namespace {

bool is_nifti(const fs::path& p) {
  const std::string name = p.filename().string();
  auto ends = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends(".nii") || ends(".nii.gz");
}

bool is_label_volume(const fs::path& relative) {
  for (const auto& part : relative)
    if (part == "atlas") return true;
  return false;
}

bool on_grid(const Volume& v, const ModelGrid& g) {
  if (v.shape != g.shape) return false;
  const Affine target = g.affine();
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c)
      if (std::fabs(v.affine[r][c] - target[r][c]) > 1e-3 * g.voxel_mm) return false;
  return true;
}

std::string describe(const Volume& v) {
  const auto s = v.voxel_size();
  char b[96];
  if (std::fabs(s[0] - s[1]) < 1e-3 && std::fabs(s[1] - s[2]) < 1e-3)
    std::snprintf(b, sizeof b, "%.3g mm", s[0]);
  else
    std::snprintf(b, sizeof b, "%.3g×%.3g×%.3g mm", s[0], s[1], s[2]);
  return std::string(b) + " " + orientation_code(v.affine) + " " + shape_string(v.shape);
}

}  // namespace

Affine ModelGrid::affine() const { return centred_affine(shape, {voxel_mm, voxel_mm, voxel_mm}, centre_mm); }

std::string orientation_code(const Affine& a) {
  const char* positive = "RAS";
  const char* negative = "LPI";
  std::string code;
  for (int c = 0; c < 3; ++c) {
    int best = 0;
    for (int r = 1; r < 3; ++r)
      if (std::fabs(a[r][c]) > std::fabs(a[best][c])) best = r;
    code += a[best][c] >= 0 ? positive[best] : negative[best];
  }
  return code;
}

PrepareReport prepare_cohort(const std::string& cohort_dir, const std::string& out_dir, const ModelGrid& grid) {
  const fs::path in = fs::weakly_canonical(cohort_dir), out = fs::weakly_canonical(out_dir);
  if (!fs::is_directory(in)) throw std::runtime_error("cpets-data prepare: '" + cohort_dir + "' is not a folder");
  const auto rel = out.lexically_relative(in);
  if (out == in || (!rel.empty() && *rel.begin() != ".."))
    throw std::runtime_error("cpets-data prepare: the output folder '" + out_dir + "' lies inside the cohort '" +
                             cohort_dir + "'; choose a folder outside it");
  if (fs::exists(out) && !(fs::is_directory(out) && fs::is_empty(out)))
    throw std::runtime_error("cpets-data prepare: the output folder '" + out_dir +
                             "' exists and is not empty; choose a new folder (nothing is overwritten)");
  if (grid.voxel_mm <= 0 || grid.shape[0] < 1 || grid.shape[1] < 1 || grid.shape[2] < 1)
    throw std::runtime_error("cpets-data prepare: the grid needs a positive voxel size and shape");

  PrepareReport report;
  for (auto it = fs::recursive_directory_iterator(in); it != fs::recursive_directory_iterator(); ++it) {
    const fs::path relative = it->path().lexically_relative(in), target = out / relative;
    if (it->is_directory()) {
      fs::create_directories(target);
      continue;
    }
    if (!it->is_regular_file()) continue;  // links and devices are not part of a cohort
    fs::create_directories(target.parent_path());
    if (!is_nifti(it->path())) {
      fs::copy_file(it->path(), target);
      ++report.other_files;
      continue;
    }
    const Volume v = read_nifti(it->path().string());  // its errors name the file
    if (on_grid(v, grid)) {
      fs::copy_file(it->path(), target);
      ++report.copied;
      continue;
    }
    const Interp interp = is_label_volume(relative) ? Interp::nearest : Interp::linear;
    const Volume r = resample_to_grid(v, grid.shape, grid.affine(), interp, 0.f);
    write_nifti(target.string(), r);
    ++report.resampled;
    report.lines.push_back(relative.generic_string() + ": " + describe(v) + " → " + describe(r) +
                           (interp == Interp::nearest ? " (labels: nearest)" : ""));
  }
  return report;
}

}  // namespace cpets::io
