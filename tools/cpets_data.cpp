// cpets-data: look at NIfTI volumes and turn a cohort table into the paired, split table.
//   cpets-data inspect FILE...                    one line per volume, exit 1 if any fails its check
//   cpets-data pair COHORT.csv --out PAIRED.csv   pairing, split and normalisation ranges
#include <CLI/CLI.hpp>

#include "cli_main.h"
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "io/cohort.h"
#include "io/nifti.h"
#include "io/prepare.h"

namespace {

using namespace cpets::io;
namespace fs = std::filesystem;

// Display width of a UTF-8 string (the shape separator × is one column, two bytes).
size_t display_width(const std::string& s) {
  size_t w = 0;
  for (unsigned char c : s) w += (c & 0xC0) != 0x80;
  return w;
}

std::string plural(size_t n, const std::string& word) { return std::to_string(n) + " " + word + (n == 1 ? "" : "s"); }

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], display_width(r[i]));
    }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - display_width(r[i]) + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[128];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

int inspect(const std::vector<std::string>& files) {
  std::vector<std::vector<std::string>> rows = {
      {"file", "shape (x×y×z)", "voxel mm", "dtype", "orient", "affine", "range", "NaN/Inf", "check"}};
  int failed = 0;
  for (const auto& file : files) {
    try {
      NiftiInfo info;
      const Volume v = read_nifti(file, &info, {.allow_nonfinite = true});
      const auto vs = v.voxel_size();
      std::string check = "OK";
      try {
        require_finite(info);
      } catch (const std::exception& e) {
        check = e.what();
        ++failed;
      }
      rows.push_back({file, std::to_string(v.shape[2]) + "×" + std::to_string(v.shape[1]) + "×" + std::to_string(v.shape[0]),
                      fmt("%.3g×%.3g×%.3g", vs[0], vs[1], vs[2]),
                      info.datatype + (info.byte_swapped ? " (BE)" : "") + (info.version == 2 ? " n2" : ""),
                      info.orientation, info.affine_source, fmt("[%.4g, %.4g]", info.min, info.max),
                      std::to_string(info.nan_count) + "/" + std::to_string(info.inf_count), check});
    } catch (const std::exception& e) {
      ++failed;
      rows.push_back({file, "-", "-", "-", "-", "-", "-", "-", std::string("FAILED: ") + e.what()});
    }
  }
  print_table(rows);
  if (failed) std::cout << failed << " of " << plural(files.size(), "file") << " failed the check\n";
  return failed ? 1 : 0;
}

struct PairArgs {
  std::string cohort, out, split_out, on_missing = "fail";
  uint64_t seed = 100;
  bool require_images = false, check_images = false;
};


// Reads the T1 and PET of every paired session that has both files and checks them: readable,
// finite, same grid.
struct ImageCheck {
  int checked = 0, bad = 0, missing = 0;  // sessions
};
ImageCheck check_images(const std::vector<PairedRecord>& records, const fs::path& dir) {
  ImageCheck c;
  for (const auto& r : records) {
    const ImagePaths p = image_paths(r);
    const std::string t1 = (dir / p.t1).string(), pet = (dir / p.pet).string();
    std::error_code ec;
    if (!fs::exists(t1, ec) || !fs::exists(pet, ec)) {
      ++c.missing;
      continue;
    }
    ++c.checked;
    try {
      check_same_grid(read_nifti(t1), read_nifti(pet), {t1, pet});
    } catch (const std::exception& e) {
      std::cerr << "error: " << r.subject << " PET " << format_date(r.pet_date) << ": " << e.what() << "\n";
      ++c.bad;
    }
  }
  return c;
}

int pair(const PairArgs& a) {
  const Cohort cohort = read_cohort(a.cohort, parse_missing_policy(a.on_missing), &std::cerr);
  Pairing p = pair_sessions(cohort);
  if (p.paired.empty())
    throw std::runtime_error("no PET session of '" + a.cohort + "' has T1 and CSF records within " +
                             std::to_string(kSixMonthsDays) + " days");
  assign_splits(p.paired, a.seed);
  const SplitInfo split = make_split_info(p.paired, a.seed);
  // split.json first: a paired table is never left without the split it was made with.
  const std::string split_path =
      a.split_out.empty() ? (fs::path(a.out).parent_path() / "split.json").string() : a.split_out;
  save_split_json(split_path, split);
  write_paired_csv(a.out, p.paired);

  std::cout << "cohort " << a.cohort << ": " << cohort.rows_read << " rows read";
  if (cohort.rows_skipped) std::cout << ", " << cohort.rows_skipped << " skipped (missing/unparseable values)";
  std::cout << "\n"
            << p.sessions << " PET sessions: " << p.paired.size() << " paired, " << p.rejected.size()
            << " rejected by the 6-month rule (max(|PET−T1|, |PET−CSF|, |T1−CSF|) < " << kSixMonthsDays << " days)\n";
  std::map<std::string, int> sessions;
  for (const auto& r : p.paired) ++sessions[r.split];
  std::cout << "split (seed " << a.seed << ", by subject, 4:1:1):";
  for (const char* s : {"train", "val", "test"})
    std::cout << "  " << s << " " << plural(split.subjects.at(s).size(), "subject") << " / "
              << plural(sessions[s], "session");
  std::cout << "\nranges (training split):";
  for (const auto& [k, r] : split.ranges) std::cout << "  " << k << " [" << r.min << ", " << r.max << "]";
  std::cout << "\nwrote " << a.out << " and " << split_path << "\n";

  const auto missing = missing_images(p.paired, fs::path(a.cohort).parent_path().string());
  if (!missing.empty()) {
    std::ostream& os = a.require_images ? std::cerr : std::cout;
    os << (a.require_images ? "error: " : "note: ") << missing.size() << " image file(s) of the paired sessions not found under "
       << fs::path(a.cohort).parent_path().string() << ":\n";
    for (size_t i = 0; i < missing.size() && i < 20; ++i) os << "  " << missing[i] << "\n";
    if (missing.size() > 20) os << "  … and " << missing.size() - 20 << " more\n";
    if (a.require_images) return 1;
  }
  if (a.check_images) {
    const fs::path dir = fs::path(a.cohort).parent_path();
    const ImageCheck c = check_images(p.paired, dir);
    if (c.checked == 0)
      throw std::runtime_error("--check-images: none of the " + plural(int(p.paired.size()), "paired session") +
                               " has its T1 and PET under '" + dir.string() +
                               "' (expected t1/<Subject>/<T1_date>/t1.nii.gz and pet/<Subject>/<PET_date>/<tracer>.nii.gz)");
    const int bad = c.bad;
    std::cout << "image check: " << plural(c.checked, "session") << " read: "
              << (bad ? plural(bad, "session") + " with unusable images (listed above)"
                      : "all readable, finite and on one grid per session")
              << (c.missing ? "; " + plural(c.missing, "session") + " without image files (--require-images lists them)" : "")
              << "\n";
    if (bad) return 1;
  }
  return 0;
}

struct PrepareArgs {
  std::string cohort, out;
  ModelGrid grid;
};

int prepare(const PrepareArgs& a) {
  const PrepareReport r = prepare_cohort(a.cohort, a.out, a.grid);
  for (const auto& line : r.lines) std::cout << "resampled " << line << "\n";
  char grid[96];
  std::snprintf(grid, sizeof grid, "%s at %g mm RAS+, centre (%g, %g, %g) mm", shape_string(a.grid.shape).c_str(),
                a.grid.voxel_mm, a.grid.centre_mm[0], a.grid.centre_mm[1], a.grid.centre_mm[2]);
  std::cout << "prepared " << a.out << " on the grid " << grid << ": " << plural(r.resampled, "volume") << " resampled, "
            << plural(r.copied, "volume") << " already on it, " << plural(r.other_files, "other file") << " copied\n";
  if (r.resampled + r.copied == 0)
    throw std::runtime_error("no NIfTI volume under '" + a.cohort + "' (expected t1/<Subject>/<date>/t1.nii.gz, pet/…)");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cpets-data: inspect NIfTI volumes; put a cohort on the model's grid; pair and split a cohort table"};
  app.require_subcommand(1);
  std::vector<std::string> files;
  auto* ins = app.add_subcommand("inspect", "shape, voxel size, datatype, orientation, range and checks of volumes");
  ins->add_option("files", files, "NIfTI files (.nii, .nii.gz, .hdr/.img)")->required();
  PairArgs pa;
  auto* pr = app.add_subcommand("pair", "pair PET sessions with T1 and CSF records (< 6 months), split 4:1:1 by subject");
  pr->add_option("cohort", pa.cohort, "cohort CSV (Subject, DX, T1_date, PET_date, CSF_date, ABETA, TAU, PTAU, Age, "
                                      "Sex, APOE4, PTEDUCAT, Tracer)")
      ->required();
  pr->add_option("--out", pa.out, "paired table to write (with a split column)")->required();
  pr->add_option("--split-out", pa.split_out, "split + normalisation ranges JSON (default: split.json next to --out)");
  pr->add_option("--seed", pa.seed, "split seed")->capture_default_str();
  pr->add_option("--on-missing", pa.on_missing, "rows with missing/unparseable values: fail or skip (with a warning)")
      ->check(CLI::IsMember({"fail", "skip"}))
      ->capture_default_str();
  pr->add_flag("--require-images", pa.require_images, "fail when an image file of a paired session is missing");
  pr->add_flag("--check-images", pa.check_images,
               "read every paired T1/PET: fail on unreadable, non-finite or differently gridded volumes");
  PrepareArgs pp;
  auto* prep = app.add_subcommand("prepare", "copy a cohort onto the model's grid: resample every volume that is not on it "
                                             "(voxel size, RAS+ orientation, field of view) through its affine");
  prep->add_option("cohort", pp.cohort, "cohort folder (cohort.csv, t1/, pet/, atlas/ …)")->required();
  prep->add_option("--out", pp.out, "new cohort folder to write (must not exist, or be empty)")->required();
  prep->add_option("--voxel-mm", pp.grid.voxel_mm, "isotropic voxel size of the model's grid (model.voxel_mm)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  prep->add_option("--shape", pp.grid.shape, "grid shape D,H,W (z, y, x; model.volume)")->delimiter(',')->capture_default_str();
  prep->add_option("--centre", pp.grid.centre_mm, "world point (mm, MNI) at the grid's centre x,y,z")
      ->delimiter(',')
      ->capture_default_str();
  return cpets::tools::run_main(app, argc, argv, [&] {
    if (*ins) return inspect(files);
    if (*prep) return prepare(pp);
    return pair(pa);
  });
}
