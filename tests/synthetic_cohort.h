// A small synthetic cohort folder for the end-to-end tests (cohort.csv + t1/… + pet/…): what the
// trainer, the data-parallel test and the checkpoint tests train on.
#pragma once
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "io/cohort.h"
#include "io/nifti.h"
#include "io/preprocess.h"

namespace cpets::testing {

// A smooth blob plus a subject-dependent ramp: distinct per subject, positive maximum.
inline io::Volume synthetic_volume(std::array<int64_t, 3> shape, int subject, bool pet) {
  io::Volume v = io::make_volume(shape, 0.f, io::scaling_affine(2, 2, 2));
  for (int64_t d = 0; d < shape[0]; ++d)
    for (int64_t h = 0; h < shape[1]; ++h)
      for (int64_t w = 0; w < shape[2]; ++w) {
        const double x = (w - shape[2] / 2.0) / shape[2], y = (h - shape[1] / 2.0) / shape[1],
                     z = (d - shape[0] / 2.0) / shape[0];
        const double r2 = x * x + y * y + z * z;
        const double base = std::exp(-6 * r2) * (pet ? 1.0 + 0.1 * subject * x : 1.0 + 0.05 * subject * z);
        v.at(d, h, w) = static_cast<float>(base * (pet ? 3.0 : 200.0));
      }
  return v;
}

// A cohort folder: cohort.csv + t1/… + pet/… with `subjects` AV45 subjects, one session each.
// Volumes are 14×18×15 (D < 16 padded, H > 16 cropped, odd W).
inline void write_cohort(const std::filesystem::path& dir, int subjects) {
  std::ofstream csv(dir / "cohort.csv");
  for (size_t i = 0; i < io::cohort_columns().size(); ++i) csv << (i ? "," : "") << io::cohort_columns()[i];
  csv << "\n";
  for (int s = 0; s < subjects; ++s) {
    char id[32];
    std::snprintf(id, sizeof id, "%03d_S_%04d", 100 + s, 1000 + s);
    io::PairedRecord r;
    r.subject = id;
    r.tracer = "AV45";
    r.t1_date = io::days_from_civil(2012, 3, 1 + s % 20);
    r.pet_date = r.t1_date + 10;
    const auto paths = io::image_paths(r);
    std::filesystem::create_directories((dir / paths.t1).parent_path());
    std::filesystem::create_directories((dir / paths.pet).parent_path());
    io::write_nifti((dir / paths.t1).string(), synthetic_volume({14, 18, 15}, s, false));
    io::write_nifti((dir / paths.pet).string(), synthetic_volume({14, 18, 15}, s, true));
    csv << id << "," << (s % 3 == 0 ? "CN" : s % 3 == 1 ? "MCI" : "AD") << "," << io::format_date(r.t1_date) << ","
        << io::format_date(r.pet_date) << "," << io::format_date(r.t1_date + 20) << "," << 600 + 50 * s << ","
        << 200 + 10 * s << "," << 20 + s << "," << 60 + s << "," << s % 2 << "," << s % 3 << "," << 12 + s % 8
        << ",AV45\n";
  }
}

}  // namespace cpets::testing
