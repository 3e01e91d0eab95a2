// A cohort put on the model's grid (io/prepare, cpets-data prepare) and the check that keeps
// volumes off that grid out of training (io::grid_mismatch, train::prepare_volume): scans at 1 mm
// and 2 mm, stored LPS, resampled exactly (a linear field survives trilinear resampling), labels
// kept by nearest neighbour, co-registered T1 and PET still co-registered, files on the grid and
// tables copied byte for byte, and the refusals.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "io/nifti.h"
#include "io/prepare.h"
#include "io/preprocess.h"
#include "train/data.h"

using namespace cpets::io;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("cpets_prepare_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A linear field of world position: trilinear resampling reproduces it exactly inside the source.
double field(const std::array<double, 3>& w) { return 100 + 0.5 * w[0] - 0.25 * w[1] + 0.75 * w[2]; }

// A volume of `shape` whose affine is `affine`, filled with field(world) (or labels by x sign).
Volume sampled(std::array<int64_t, 3> shape, const Affine& affine, bool labels = false) {
  Volume v = make_volume(shape, 0.f, affine);
  for (int64_t k = 0; k < shape[0]; ++k)
    for (int64_t j = 0; j < shape[1]; ++j)
      for (int64_t i = 0; i < shape[2]; ++i) {
        const auto w = apply_affine(affine, double(i), double(j), double(k));
        v.at(k, j, i) = labels ? (w[0] < 0 ? 1.f : 2.f) : float(field(w));
      }
  return v;
}

// An LPS affine (x → left, y → posterior) with voxel size s whose field of view is centred at c.
Affine lps(std::array<int64_t, 3> shape, double s, std::array<double, 3> c) {
  Affine a = identity_affine();
  a[0][0] = -s, a[1][1] = -s, a[2][2] = s;
  const double n[3] = {double(shape[2]), double(shape[1]), double(shape[0])};
  a[0][3] = c[0] + s * (n[0] - 1) / 2;
  a[1][3] = c[1] + s * (n[1] - 1) / 2;
  a[2][3] = c[2] - s * (n[2] - 1) / 2;
  return a;
}

}  // namespace

TEST_CASE("grid_mismatch: canonical grids of the model's voxel size pass; other sizes and orientations are named") {
  CHECK(grid_mismatch(make_volume({4, 4, 4}, 0.f, scaling_affine(1.5, 1.5, 1.5)), 1.5).empty());
  CHECK(grid_mismatch(make_volume({4, 4, 4}, 0.f, scaling_affine(1.504, 1.5, 1.496)), 1.5).empty());  // within 1 %
  const std::string one_mm = grid_mismatch(make_volume({4, 4, 4}, 0.f, scaling_affine(1, 1, 1)), 1.5);
  CHECK(one_mm.find("voxel size along x is 1 mm, not the model's 1.5 mm") != std::string::npos);
  const std::string flipped = grid_mismatch(make_volume({4, 4, 4}, 0.f, lps({4, 4, 4}, 1.5, {0, 0, 0})), 1.5);
  CHECK(flipped.find("+R") != std::string::npos);
  CHECK(orientation_code(lps({4, 4, 4}, 1.5, {0, 0, 0})) == "LPS");
  CHECK(orientation_code(scaling_affine(2, 2, 2)) == "RAS");
}

TEST_CASE("prepare_cohort: 1 mm and 2 mm LPS scans land on the model grid exactly; labels stay labels; the rest is copied") {
  TempDir tmp;
  const fs::path cohort = tmp.path / "cohort", out = tmp.path / "prepared";
  const ModelGrid grid{{12, 16, 12}, 1.5, {0, -17, 11}};
  // A T1 at 1 mm LPS, a PET at 2 mm RAS, both covering more than the model's field of view
  // (18 × 24 × 18 mm), an atlas at 1 mm, one PET already on the grid, and a table.
  fs::create_directories(cohort / "t1/S1/2011-01-01");
  fs::create_directories(cohort / "pet/S1/2011-02-01");
  fs::create_directories(cohort / "pet/S2/2011-02-01");
  fs::create_directories(cohort / "atlas");
  write_nifti((cohort / "t1/S1/2011-01-01/t1.nii.gz").string(), sampled({30, 36, 28}, lps({30, 36, 28}, 1.0, {1, -16, 12})));
  write_nifti((cohort / "pet/S1/2011-02-01/av45.nii.gz").string(),
              sampled({16, 20, 16}, centred_affine({16, 20, 16}, {2, 2, 2}, {-1, -18, 10})));
  write_nifti((cohort / "pet/S2/2011-02-01/av45.nii.gz").string(), sampled(grid.shape, grid.affine()));
  write_nifti((cohort / "atlas/labels.nii.gz").string(),
              sampled({30, 36, 28}, centred_affine({30, 36, 28}, {1, 1, 1}, {0, -17, 11}), /*labels=*/true));
  std::ofstream(cohort / "cohort.csv") << "Subject,DX\nS1,CN\n";
  std::ofstream(cohort / "atlas/regions.json") << "{}";

  const PrepareReport r = prepare_cohort(cohort.string(), out.string(), grid);
  CHECK(r.resampled == 3);
  CHECK(r.copied == 1);
  CHECK(r.other_files == 2);
  REQUIRE(r.lines.size() == 3);
  bool saw_t1 = false;
  for (const auto& line : r.lines)
    if (line.rfind("t1/S1/2011-01-01/t1.nii.gz: 1 mm LPS 30×36×28 → 1.5 mm RAS 12×16×12", 0) == 0) saw_t1 = true;
  CHECK_MESSAGE(saw_t1, r.lines[0] << " | " << r.lines[1] << " | " << r.lines[2]);

  for (const char* image : {"t1/S1/2011-01-01/t1.nii.gz", "pet/S1/2011-02-01/av45.nii.gz"}) {
    CAPTURE(image);
    const Volume v = read_nifti((out / image).string());
    CHECK(v.shape == grid.shape);
    CHECK(grid_mismatch(v, 1.5).empty());
    double worst = 0;
    for (int64_t k = 0; k < v.shape[0]; ++k)
      for (int64_t j = 0; j < v.shape[1]; ++j)
        for (int64_t i = 0; i < v.shape[2]; ++i)
          worst = std::max(worst, std::fabs(v.at(k, j, i) - field(apply_affine(v.affine, double(i), double(j), double(k)))));
    CHECK(worst < 1e-3);  // the same world field: T1 and PET stay co-registered
  }
  const Volume labels = read_nifti((out / "atlas/labels.nii.gz").string());
  for (float x : labels.data) CHECK((x == 1.f || x == 2.f));
  CHECK(read_bytes(out / "pet/S2/2011-02-01/av45.nii.gz") == read_bytes(cohort / "pet/S2/2011-02-01/av45.nii.gz"));
  CHECK(read_bytes(out / "cohort.csv") == read_bytes(cohort / "cohort.csv"));

  // Training refuses the unprepared cohort and names the file and the fix; the prepared one loads.
  const std::string t1 = (cohort / "t1/S1/2011-01-01/t1.nii.gz").string();
  try {
    cpets::train::prepare_volume(t1, grid.shape, 1.5);
    FAIL("an unprepared 1 mm volume was accepted");
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    CHECK(m.find(t1) != std::string::npos);
    CHECK(m.find("voxel size along x is 1 mm") != std::string::npos);
    CHECK(m.find("cpets-data prepare") != std::string::npos);
  }
  CHECK(cpets::train::prepare_volume((out / "t1/S1/2011-01-01/t1.nii.gz").string(), grid.shape, 1.5).volume.shape == grid.shape);
  CHECK(cpets::train::prepare_volume(t1, grid.shape, 0).volume.shape == grid.shape);  // 0: not checked

  // Nothing is overwritten, and the output may not lie inside the cohort.
  CHECK_THROWS_WITH_AS(prepare_cohort(cohort.string(), out.string(), grid), doctest::Contains("not empty"), std::runtime_error);
  CHECK_THROWS_WITH_AS(prepare_cohort(cohort.string(), (cohort / "prepared").string(), grid), doctest::Contains("inside"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(prepare_cohort((tmp.path / "absent").string(), (tmp.path / "o2").string(), grid),
                       doctest::Contains("not a folder"), std::runtime_error);
}
