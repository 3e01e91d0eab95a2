#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <stdexcept>

#include "io/preprocess.h"

using namespace cpets::io;

namespace {

// An oblique affine: voxel sizes (1.2, 0.8, 2.0) mm, a rotation about z, a translation.
Affine oblique_affine() {
  const double c = std::cos(0.3), s = std::sin(0.3);
  Affine a = identity_affine();
  a[0][0] = 1.2 * c; a[0][1] = -0.8 * s; a[0][2] = 0;   a[0][3] = -10;
  a[1][0] = 1.2 * s; a[1][1] = 0.8 * c;  a[1][2] = 0;   a[1][3] = 4;
  a[2][0] = 0;       a[2][1] = 0;        a[2][2] = 2.0; a[2][3] = 7;
  return a;
}

double ramp(const std::array<double, 3>& p) { return 0.5 * p[0] - 0.25 * p[1] + 0.75 * p[2] + 3.0; }

}  // namespace

TEST_CASE("affine helpers: inverse and product") {
  const Affine a = oblique_affine();
  const Affine i = multiply_affine(a, invert_affine(a));
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) CHECK(i[r][c] == doctest::Approx(r == c ? 1.0 : 0.0).epsilon(1e-12));
  auto p = apply_affine(a, 1, 2, 3);
  CHECK(p[2] == doctest::Approx(2.0 * 3 + 7));
  const Affine z = scaling_affine(1, 0, 1);
  CHECK_THROWS_AS(invert_affine(z), std::runtime_error);
  const Affine ca = centred_affine({4, 6, 8}, {2, 3, 1.5}, {1, 2, 3});
  auto centre = apply_affine(ca, 3.5, 2.5, 1.5);
  CHECK(centre[0] == doctest::Approx(1));
  CHECK(centre[1] == doctest::Approx(2));
  CHECK(centre[2] == doctest::Approx(3));
}

TEST_CASE("pad_crop_to: MONAI offsets and world coordinates of a marked voxel are preserved") {
  Volume v = make_volume({7, 10, 5}, 0.f, oblique_affine());
  v.at(3, 4, 2) = 9.f;
  v.at(0, 0, 0) = 1.f;
  const auto world_before = apply_affine(v.affine, 2, 4, 3);
  // D 7→9 pads (1 before, 1 after); H 10→6 crops from 10//2 − 6//2 = 2; W 5→8 pads 1 before, 2 after.
  Volume out = pad_crop_to(v, {9, 6, 8});
  CHECK(out.shape == std::array<int64_t, 3>{9, 6, 8});
  CHECK(out.at(3 + 1, 4 - 2, 2 + 1) == 9.f);
  int nonzero = 0;
  for (float x : out.data) nonzero += x != 0;
  CHECK(nonzero == 1);  // voxel (0,0,0) was cropped away along H
  const auto world_after = apply_affine(out.affine, 3, 2, 4);
  for (int c = 0; c < 3; ++c) CHECK(world_after[c] == doctest::Approx(world_before[c]).epsilon(1e-12));
  Volume same = pad_crop_to(v, v.shape);
  CHECK(same.data == v.data);
  CHECK_THROWS_AS(pad_crop_to(v, {0, 3, 3}), std::runtime_error);
}

TEST_CASE("resample_to_voxel_size: a linear ramp stays linear, FOV centre is kept") {
  Volume v = make_volume({12, 14, 16}, 0.f, oblique_affine());
  for (int64_t d = 0; d < 12; ++d)
    for (int64_t h = 0; h < 14; ++h)
      for (int64_t w = 0; w < 16; ++w) v.at(d, h, w) = float(ramp(apply_affine(v.affine, w, h, d)));
  Volume r = resample_to_voxel_size(v, {0.7, 1.1, 1.3});
  // shape = round(n · old / new): x 16·1.2/0.7 = 27.4 → 27, y 14·0.8/1.1 = 10.2 → 10, z 12·2/1.3 = 18.5 → 18
  CHECK(r.shape == std::array<int64_t, 3>{18, 10, 27});
  const auto vs = r.voxel_size();
  CHECK(vs[0] == doctest::Approx(0.7));
  CHECK(vs[1] == doctest::Approx(1.1));
  CHECK(vs[2] == doctest::Approx(1.3));
  const auto c0 = apply_affine(v.affine, 7.5, 6.5, 5.5), c1 = apply_affine(r.affine, 13, 4.5, 8.5);
  for (int c = 0; c < 3; ++c) CHECK(c1[c] == doctest::Approx(c0[c]).epsilon(1e-9));
  // Interior voxels (whose source point lies inside [0, n−1]) equal the ramp at their world point.
  const Affine to_src = multiply_affine(invert_affine(v.affine), r.affine);
  int checked = 0;
  for (int64_t d = 0; d < r.shape[0]; ++d)
    for (int64_t h = 0; h < r.shape[1]; ++h)
      for (int64_t w = 0; w < r.shape[2]; ++w) {
        auto s = apply_affine(to_src, w, h, d);
        if (s[0] < 0 || s[0] > 15 || s[1] < 0 || s[1] > 13 || s[2] < 0 || s[2] > 11) continue;
        CHECK(r.at(d, h, w) == doctest::Approx(ramp(apply_affine(r.affine, w, h, d))).epsilon(1e-5));
        ++checked;
      }
  CHECK(checked > 1000);
}

TEST_CASE("resample_to_grid: rotated target grid, outside value, nearest keeps labels") {
  Volume v = make_volume({10, 10, 10}, 0.f, scaling_affine(2, 2, 2));
  for (int64_t d = 0; d < 10; ++d)
    for (int64_t h = 0; h < 10; ++h)
      for (int64_t w = 0; w < 10; ++w) v.at(d, h, w) = float(ramp(apply_affine(v.affine, w, h, d)));
  Affine t = oblique_affine();
  t[0][3] = 3; t[1][3] = 2; t[2][3] = 1;
  Volume r = resample_to_grid(v, {14, 9, 8}, t, Interp::linear, -1.f);
  int inside = 0, outside = 0;
  for (int64_t d = 0; d < 14; ++d)
    for (int64_t h = 0; h < 9; ++h)
      for (int64_t w = 0; w < 8; ++w) {
        auto p = apply_affine(t, w, h, d);
        bool in = true, strict = true;
        for (double c : p) { in = in && c >= -1 && c <= 19; strict = strict && c >= 0 && c <= 18; }
        if (strict) { CHECK(r.at(d, h, w) == doctest::Approx(ramp(p)).epsilon(1e-5)); ++inside; }
        if (!in) { CHECK(r.at(d, h, w) == -1.f); ++outside; }
      }
  CHECK(inside > 50);
  CHECK(outside > 10);
  // Nearest neighbour on a label volume never invents values.
  Volume labels = make_volume({5, 5, 5}, 0.f, scaling_affine(3, 3, 3));
  for (int64_t i = 0; i < labels.numel(); ++i) labels.data[i] = float(i % 7);
  Volume n = resample_to_voxel_size(labels, {1, 1, 1}, Interp::nearest);
  for (float x : n.data) CHECK(x == std::round(x));
  CHECK(n.at(7, 7, 7) == labels.at(2, 2, 2));  // FOV centres coincide: new voxel 7 ↔ world 6 mm ↔ source voxel 2
}

TEST_CASE("normalize_by_max: divides by the maximum, refuses empty, zero and non-finite images") {
  Volume v = make_volume({2, 2, 2}, 1.f);
  v.data[3] = 4.f;
  CHECK(normalize_by_max(v) == 4.f);
  CHECK(v.data[3] == 1.f);
  CHECK(v.data[0] == 0.25f);
  Volume zero = make_volume({2, 2, 2}, 0.f);
  CHECK_THROWS_WITH_AS(normalize_by_max(zero), doctest::Contains("≤ 0"), std::runtime_error);
  Volume nan = make_volume({2, 2, 2}, 1.f);
  nan.data[5] = NAN;
  CHECK_THROWS_WITH_AS(normalize_by_max(nan), doctest::Contains("1 non-finite"), std::runtime_error);
  Volume empty;
  CHECK_THROWS_AS(normalize_by_max(empty), std::runtime_error);
}

TEST_CASE("gaussian_blur: preserves the sum, has the requested variance per axis, thread-count independent") {
  // Voxel sizes differ per axis, so the per-axis σ in voxels differs; FWHM 6 mm → σ = 2.548 mm.
  Volume v = make_volume({41, 37, 45}, 0.f, scaling_affine(1.0, 1.5, 0.75));
  v.at(20, 18, 22) = 1000.f;
  Volume b1 = v, b2 = v;
  omp_set_num_threads(1);
  gaussian_blur(b1, 6.0);
  omp_set_num_threads(2);
  gaussian_blur(b2, 6.0);
  CHECK(b1.data == b2.data);
  double sum = 0, m[3] = {0, 0, 0}, var[3] = {0, 0, 0};
  const double centre[3] = {22 * 1.0, 18 * 1.5, 20 * 0.75};
  for (int64_t d = 0; d < 41; ++d)
    for (int64_t h = 0; h < 37; ++h)
      for (int64_t w = 0; w < 45; ++w) {
        const double x = b1.at(d, h, w), p[3] = {w * 1.0, h * 1.5, d * 0.75};
        sum += x;
        for (int c = 0; c < 3; ++c) { m[c] += x * p[c]; var[c] += x * (p[c] - centre[c]) * (p[c] - centre[c]); }
      }
  CHECK(sum == doctest::Approx(1000).epsilon(1e-5));
  const double sigma = 6.0 / (2 * std::sqrt(2 * std::log(2.0)));
  for (int c = 0; c < 3; ++c) {
    CHECK(m[c] / sum == doctest::Approx(centre[c]).epsilon(1e-6));
    CHECK(var[c] / sum == doctest::Approx(sigma * sigma).epsilon(2e-3));
  }
  Volume same = v;
  gaussian_blur(same, 0.0);
  CHECK(same.data == v.data);
}
