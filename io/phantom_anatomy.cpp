// The phantom's anatomy: Colin27 + AAL (or an analytic head) turned once into tissue maps on a
// working grid, so that each subject is rendered by two trilinear look-ups per output voxel.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "io/nifti.h"
#include "io/phantom_internal.h"
#include "io/preprocess.h"

namespace cpets::io::phantom {

namespace fs = std::filesystem;

// ---- label semantics (AAL numbering, shared with the analytic head) -------------------------

namespace {

bool is_cortex(int l) { return (l >= 1 && l <= 70) || (l >= 79 && l <= 90); }
bool is_cerebellum(int l) { return l >= 91 && l <= 116; }
bool is_deep_gm(int l) { return l >= 71 && l <= 78; }
bool is_striatal(int l) { return l >= 73 && l <= 76; }  // putamen, pallidum

// AV45 regional weight: precuneus/posterior cingulate highest, frontal and lateral
// temporo-parietal high, occipital and sensorimotor low.
double av45_weight(int l) {
  const int p = (l + 1) / 2;  // left/right pair index 1..45
  if (p == 34 || p == 18) return 1.0;                          // precuneus, posterior cingulate
  if ((p >= 2 && p <= 8) || p == 12 || p == 13 || p == 14) return 0.9;  // frontal, sup. medial, orbital, rectus
  if (p == 16 || p == 17) return 0.85;                         // anterior, middle cingulate
  if ((p >= 30 && p <= 33) || (p >= 41 && p <= 45)) return 0.85;  // inf. parietal, SMG, angular; lateral temporal
  if (p == 15) return 0.7;                                     // insula
  if (p == 28) return 0.75;                                    // fusiform
  if (p == 9 || p == 11) return 0.55;                          // Rolandic operculum, olfactory
  if (p == 29) return 0.7;                                     // superior parietal
  if (p >= 22 && p <= 27) return 0.5;                          // occipital
  if (p == 1 || p == 10 || p == 35 || p == 40 || p == 36) return 0.45;  // pre/postcentral, SMA, paracentral, Heschl
  if (p >= 19 && p <= 21) return 0.35;                         // hippocampus, parahippocampal, amygdala
  return 0.6;
}

// Braak-like stage of a cortical label for AV1451: 1 medial temporal, 2 inferior/lateral
// temporal and fusiform, 3 association neocortex, 0 primary cortices (late, not modelled).
int tau_stage(int l) {
  if (l >= 37 && l <= 42) return 1;
  if (l == 55 || l == 56 || (l >= 83 && l <= 90)) return 2;
  if ((l >= 3 && l <= 16) || (l >= 23 && l <= 36) || (l >= 49 && l <= 54) || (l >= 59 && l <= 68) || l == 81 || l == 82)
    return 3;
  return 0;
}

constexpr double kCsfIntensity = 50;  // Colin27 units: below this a labelled voxel is sulcal CSF

// ---- the analytic head ----------------------------------------------------------------------

struct Ellipsoid {
  double cx, cy, cz, rx, ry, rz;
  double r(double x, double y, double z) const {
    const double a = (x - cx) / rx, b = (y - cy) / ry, c = (z - cz) / rz;
    return std::sqrt(a * a + b * b + c * c);
  }
  bool inside(double x, double y, double z) const { return r(x, y, z) < 1; }
};
// A bilateral pair: the ellipsoid at +cx and its mirror at −cx; returns the side hit or 0.
int pair_side(const Ellipsoid& e, double x, double y, double z) {
  if (e.inside(x, y, z)) return 1;
  Ellipsoid m = e;
  m.cx = -e.cx;
  return m.inside(x, y, z) ? -1 : 0;
}
int lr(int left_label, double x) { return x < 0 ? left_label : left_label + 1; }

int cortical_lobe_label(double x, double y, double z) {
  const double ax = std::abs(x);
  if (z < -8 && ax > 28 && y > -75 && y < 22) {
    if (z < -22 && y > 0) return lr(87, x);  // temporal pole
    if (z < -24) return lr(89, x);           // inferior temporal
    if (z > -14 && y < -10) return lr(81, x);  // superior temporal
    return lr(85, x);
  }
  if (y > 22) {
    if (z < 0) return ax < 12 ? lr(25, x) : lr(5, x);  // medial orbital / superior orbital
    if (ax < 12) return lr(23, x);
    return z > 40 ? lr(3, x) : lr(7, x);
  }
  if (y > 0) {
    if (z > 25) return ax < 15 ? lr(19, x) : lr(7, x);
    return z > 5 ? lr(13, x) : lr(11, x);  // inferior frontal triangular / opercular
  }
  if (y > -22) {
    if (ax < 10 && z > 40) return lr(69, x);   // paracentral lobule
    if (z < 15 && ax > 40) return lr(17, x);   // Rolandic operculum
    return y > -10 ? lr(1, x) : lr(57, x);     // precentral / postcentral
  }
  if (y > -72) {
    if (ax < 12) return lr(67, x);                 // precuneus
    if (z > 38) return lr(59, x);                  // superior parietal
    return y > -46 ? lr(63, x) : lr(65, x);        // supramarginal / angular
  }
  if (ax < 12) return z < 5 ? lr(43, x) : lr(45, x);  // calcarine / cuneus
  return z < -5 ? lr(53, x) : lr(51, x);               // inferior / middle occipital
}

// One voxel of the analytic head: T1 intensity (Colin27-like units) and an AAL-style label.
void analytic_voxel(double x, double y, double z, float& t1, int& label) {
  t1 = 0;
  label = 0;
  static const Ellipsoid cerebrum{0, -17, 14, 68, 87, 64}, cerebellum{0, -60, -32, 50, 30, 20};
  const double rcb = cerebellum.r(x, y, z);
  if (rcb < 1 && z < -12) {
    if (rcb > 0.55) {
      t1 = rcb > 0.97 ? 35 : 84;
      label = std::abs(x) <= 8 ? 113 : lr(91, x) + (y < -62 ? 8 : 0);  // vermis / crus I / lobule 6
    } else {
      t1 = 108;
    }
    return;
  }
  if (std::hypot(x, (y + 26) / 0.9) < 11 && z > -62 && z < 0) {  // brainstem
    t1 = 100;
    return;
  }
  const double rc = cerebrum.r(x, y, z);
  if (rc >= 1) return;
  if (std::abs(x) < 1.5 && rc > 0.25) { t1 = 30; return; }  // interhemispheric fissure
  const double folds = 0.05 * std::sin(x / 4.5) * std::sin(y / 5.5) * std::sin(z / 4.5);
  const bool medial_wall = std::abs(x) < 6.5 && rc > 0.45;
  if (rc > 0.85 + folds || medial_wall) {
    t1 = rc > 0.975 ? 35 : 85;
    label = cortical_lobe_label(x, y, z);
  } else {
    t1 = 110;
  }
  // Deep structures, later entries win.
  struct Deep { Ellipsoid e; int left_label; float t1; };
  static const Deep deep[] = {
      {{37, 2, 4, 4, 16, 10}, 29, 85},      // insula
      {{34, -50, -18, 7, 18, 5}, 55, 84},   // fusiform
      {{24, -32, -20, 5, 12, 4}, 39, 84},   // parahippocampal
      {{28, -22, -14, 5, 16, 5}, 37, 84},   // hippocampus
      {{22, -3, -18, 6, 6, 6}, 41, 86},     // amygdala
      {{11, -18, 6, 8, 13, 8}, 77, 92},     // thalamus
      {{25, 2, 0, 5, 14, 9}, 73, 90},       // putamen
      {{13, 12, 12, 4, 10, 8}, 71, 88},     // caudate
  };
  for (const auto& d : deep)
    if (int side = pair_side(d.e, x, y, z)) {
      label = d.left_label + (side > 0 ? 1 : 0);
      t1 = d.t1;
    }
  static const Ellipsoid cingulate{0, -12, 26, 7, 42, 8};
  if (std::abs(x) < 7 && std::abs(x) >= 1.5 && cingulate.inside(x, y, z)) {
    label = y > 10 ? lr(31, x) : y > -25 ? lr(33, x) : lr(35, x);
    t1 = 85;
  }
  if (pair_side({10, -6, 18, 5, 30, 7}, x, y, z) || pair_side({20, -30, 2, 3, 8, 8}, x, y, z)) {
    label = 0;  // lateral ventricles (bodies and temporal horns)
    t1 = 25;
  }
}

void analytic_head(Volume& t1, Volume& labels) {
  const double vox = 1.0;
  const std::array<int64_t, 3> shape{180, 212, 166};
  const Affine a = centred_affine(shape, {vox, vox, vox}, {0, -17, 9});
  t1 = make_volume(shape, 0.f, a);
  labels = make_volume(shape, 0.f, a);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t d = 0; d < shape[0]; ++d)
    for (int64_t h = 0; h < shape[1]; ++h)
      for (int64_t w = 0; w < shape[2]; ++w) {
        const auto p = apply_affine(a, double(w), double(h), double(d));
        float v;
        int l;
        analytic_voxel(p[0], p[1], p[2], v, l);
        t1.at(d, h, w) = v;
        labels.at(d, h, w) = float(l);
      }
}

// ---- maps on the working grid ---------------------------------------------------------------

Volume channel_volume(const Anatomy& an, int c) {
  Volume v = make_volume(an.shape, 0.f, scaling_affine(an.voxel_mm, an.voxel_mm, an.voxel_mm));
  for (int r = 0; r < 3; ++r) v.affine[r][3] = an.origin[r];
  for (int64_t i = 0; i < v.numel(); ++i) v.data[size_t(i)] = an.maps[size_t(i * kChannels + c)];
  return v;
}
void set_channel(Anatomy& an, int c, const Volume& v) {
  for (int64_t i = 0; i < v.numel(); ++i) an.maps[size_t(i * kChannels + c)] = v.data[size_t(i)];
}

// Box-filters the source (T1, labels) into the tissue channels: each working voxel averages
// n³ nearest-neighbour sub-samples spread evenly over its extent.
void fill_tissue_channels(Anatomy& an, const Volume& t1, const Volume& labels) {
  const Affine to_src = invert_affine(t1.affine);
  const double src_vox = t1.voxel_size()[0];
  const int n = int(std::ceil(an.voxel_mm / src_vox)) + 1;
  const double inv_n3 = 1.0 / (n * n * n);
  const auto [D, H, W] = an.shape;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t d = 0; d < D; ++d)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        double acc[kChannels] = {};
        for (int a = 0; a < n; ++a)
          for (int b = 0; b < n; ++b)
            for (int c = 0; c < n; ++c) {
              const double x = an.origin[0] + (w + (c + 0.5) / n - 0.5) * an.voxel_mm;
              const double y = an.origin[1] + (h + (b + 0.5) / n - 0.5) * an.voxel_mm;
              const double z = an.origin[2] + (d + (a + 0.5) / n - 0.5) * an.voxel_mm;
              const auto s = apply_affine(to_src, x, y, z);
              const int64_t i = std::lround(s[0]), j = std::lround(s[1]), k = std::lround(s[2]);
              if (i < 0 || j < 0 || k < 0 || i >= t1.shape[2] || j >= t1.shape[1] || k >= t1.shape[0]) continue;
              const double I = t1.at(k, j, i);
              if (!(I > 0)) continue;
              const int l = int(std::lround(labels.at(k, j, i)));
              acc[kT1] += I;
              acc[kBrain] += 1;
              const bool sulcal = I < kCsfIntensity;
              if (is_cortex(l) || is_cerebellum(l) || is_deep_gm(l)) {
                if (sulcal && !is_deep_gm(l)) { acc[kCsf] += 1; continue; }
                if (is_cortex(l)) {
                  acc[kGmCtx] += 1;
                  acc[kAmyW] += av45_weight(l);
                  const int st = tau_stage(l);
                  if (st) acc[kTau1 + st - 1] += 1;
                } else if (is_cerebellum(l)) {
                  acc[kGmCb] += 1;
                } else {
                  acc[kGmSub] += 1;
                  if (is_striatal(l)) acc[kStriatum] += 1;
                }
              } else {  // unlabelled brain: white matter or CSF by intensity
                const double wm = std::clamp((I - 55) / 40, 0.0, 1.0);
                acc[kWm] += wm;
                acc[kCsf] += 1 - wm;
              }
            }
        float* row = &an.maps[size_t(((d * H + h) * W + w) * kChannels)];
        for (int c = 0; c < kDispX; ++c) row[c] = float(acc[c] * inv_n3);
      }
}

// Pial-side weight: how much non-tissue (CSF or outside) surrounds a voxel, within ~4 mm.
void fill_outer_channel(Anatomy& an) {
  Volume tissue = channel_volume(an, kGmCtx);
  for (int64_t i = 0; i < tissue.numel(); ++i) {
    const float* row = &an.maps[size_t(i * kChannels)];
    tissue.data[size_t(i)] = 1.f - std::min(1.f, row[kGmCtx] + row[kGmCb] + row[kGmSub] + row[kWm]);
  }
  gaussian_blur(tissue, 4.0);
  for (float& x : tissue.data) x = std::clamp(2.f * x, 0.f, 1.f);
  set_channel(an, kOuter, tissue);
}

// Unit displacement toward the lateral ventricles: the gradient of the smoothed ventricle mask,
// scaled so its largest magnitude is 1. Sampling the template at q + g·field(q) grows the
// ventricles by about g mm.
void fill_ventricle_field(Anatomy& an) {
  Volume deep = channel_volume(an, kBrain);
  gaussian_blur(deep, 14.0);
  Volume vent = channel_volume(an, kCsf);
  const auto [D, H, W] = an.shape;
  for (int64_t d = 0; d < D; ++d)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        const double x = an.origin[0] + w * an.voxel_mm, y = an.origin[1] + h * an.voxel_mm,
                     z = an.origin[2] + d * an.voxel_mm;
        const bool central = std::abs(x) < 30 && y > -50 && y < 35 && z > -5 && z < 35;
        if (!central || deep.at(d, h, w) < 0.85f) vent.at(d, h, w) = 0;
      }
  gaussian_blur(vent, 10.0);
  std::vector<float> g(size_t(vent.numel()) * 3, 0.f);
  double gmax = 0;
  for (int64_t d = 1; d + 1 < D; ++d)
    for (int64_t h = 1; h + 1 < H; ++h)
      for (int64_t w = 1; w + 1 < W; ++w) {
        const size_t i = size_t((d * H + h) * W + w);
        g[3 * i + 0] = (vent.at(d, h, w + 1) - vent.at(d, h, w - 1)) / float(2 * an.voxel_mm);
        g[3 * i + 1] = (vent.at(d, h + 1, w) - vent.at(d, h - 1, w)) / float(2 * an.voxel_mm);
        g[3 * i + 2] = (vent.at(d + 1, h, w) - vent.at(d - 1, h, w)) / float(2 * an.voxel_mm);
        gmax = std::max(gmax, std::sqrt(double(g[3 * i]) * g[3 * i] + double(g[3 * i + 1]) * g[3 * i + 1] +
                                        double(g[3 * i + 2]) * g[3 * i + 2]));
      }
  const float inv = gmax > 0 ? float(1 / gmax) : 0.f;
  for (int64_t i = 0; i < vent.numel(); ++i)
    for (int c = 0; c < 3; ++c) an.maps[size_t(i * kChannels + kDispX + c)] = g[size_t(3 * i + c)] * inv;
}

std::shared_ptr<Anatomy> build_anatomy(const Volume& t1, const Volume& labels, const GridSpec& grid) {
  auto an = std::make_shared<Anatomy>();
  an->voxel_mm = std::min(grid.voxel_mm, 2.0);
  // The working box covers the MNI brain (x ±72, y −106…73, z −67…84 mm) with a margin.
  const std::array<double, 3> lo{-84, -122, -82}, hi{84, 90, 100};
  for (int c = 0; c < 3; ++c) an->origin[c] = lo[c];
  an->shape = {int64_t(std::ceil((hi[2] - lo[2]) / an->voxel_mm)) + 1, int64_t(std::ceil((hi[1] - lo[1]) / an->voxel_mm)) + 1,
               int64_t(std::ceil((hi[0] - lo[0]) / an->voxel_mm)) + 1};
  an->maps.assign(size_t(an->shape[0] * an->shape[1] * an->shape[2] * kChannels), 0.f);
  fill_tissue_channels(*an, t1, labels);
  fill_outer_channel(*an);
  fill_ventricle_field(*an);
  an->labels_1mm = labels;
  return an;
}

}  // namespace

AnatomyHandle load_anatomy(const std::string& template_dir, const GridSpec& grid) {
  const fs::path dir(template_dir);
  const fs::path t1_path = dir / "ch2bet.nii.gz", aal_path = dir / "aal.nii.gz", txt_path = dir / "aal.nii.txt";
  AnatomyHandle h;
  Volume t1, labels;
  if (fs::exists(t1_path) && fs::exists(aal_path) && fs::exists(txt_path)) {
    t1 = read_nifti(t1_path.string());
    labels = read_nifti(aal_path.string());
    check_same_grid(t1, labels, {t1_path.string(), aal_path.string()});
    // aal.nii.txt: "<label> <name> <code>" per line; 116 labels are the AAL the phantom knows.
    std::ifstream txt(txt_path);
    int count = 0, label;
    std::string name, code;
    while (txt >> label >> name >> code) ++count;
    if (count != 116)
      throw std::runtime_error("'" + txt_path.string() + "' lists " + std::to_string(count) +
                               " labels; the phantom expects the 116-label AAL of mricron-data");
    h.source = "Colin27 + AAL (" + template_dir + ")";
    h.real = true;
  } else {
    analytic_head(t1, labels);
    h.source = "analytic head (Colin27/AAL not found in " + template_dir + "; install the Debian package mricron-data)";
    h.real = false;
  }
  h.ptr = build_anatomy(t1, labels, grid);
  return h;
}

Volume atlas_labels(const AnatomyHandle& a, const GridSpec& grid) {
  return resample_to_grid(a.ptr->labels_1mm, grid.shape, grid.affine(), Interp::nearest, 0.f);
}

}  // namespace cpets::io::phantom
