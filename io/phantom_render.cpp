// Rendering one session of one subject on the output grid: deformation (head size, rigid jitter,
// ventricle growth), cortical thinning, T1 contrast with bias and noise, PET uptake per tracer
// with partial-volume blur and signal-dependent noise.
#include <algorithm>
#include <cmath>

#include "io/phantom_internal.h"
#include "io/preprocess.h"

namespace cpets::io::phantom {

namespace {

constexpr double kGmIntensity = 85, kCsfIntensity = 30;  // what thinning turns GM into
constexpr double kPetFwhmMm = 7.0;

// Trilinear fetch of channels [c0, c0 + nc) at working-voxel coordinates; zero outside.
inline void fetch(const Anatomy& an, double x, double y, double z, int c0, int nc, float* out) {
  const int64_t W = an.shape[2], H = an.shape[1], D = an.shape[0];
  if (!(x >= 0 && y >= 0 && z >= 0 && x < W - 1 && y < H - 1 && z < D - 1)) {
    for (int c = 0; c < nc; ++c) out[c] = 0;
    return;
  }
  const int64_t x0 = int64_t(x), y0 = int64_t(y), z0 = int64_t(z);
  const float fx = float(x - x0), fy = float(y - y0), fz = float(z - z0);
  const float w[8] = {(1 - fx) * (1 - fy) * (1 - fz), fx * (1 - fy) * (1 - fz), (1 - fx) * fy * (1 - fz), fx * fy * (1 - fz),
                      (1 - fx) * (1 - fy) * fz,       fx * (1 - fy) * fz,       (1 - fx) * fy * fz,       fx * fy * fz};
  const float* base = an.maps.data();
  const int64_t o[8] = {(z0 * H + y0) * W + x0,           (z0 * H + y0) * W + x0 + 1,
                        (z0 * H + y0 + 1) * W + x0,       (z0 * H + y0 + 1) * W + x0 + 1,
                        ((z0 + 1) * H + y0) * W + x0,     ((z0 + 1) * H + y0) * W + x0 + 1,
                        ((z0 + 1) * H + y0 + 1) * W + x0, ((z0 + 1) * H + y0 + 1) * W + x0 + 1};
  for (int c = 0; c < nc; ++c) out[c] = 0;
  for (int k = 0; k < 8; ++k) {
    const float* row = base + o[k] * kChannels + c0;
    for (int c = 0; c < nc; ++c) out[c] += w[k] * row[c];
  }
}

// Output voxel index → template working-voxel index, before the ventricle warp:
// q = c + Rᵀ(p − c − t)/k with p the subject's world point.
Affine subject_to_template(const Anatomy& an, const GridSpec& grid, const Subject& subj, const SessionNoise& n) {
  const double k = (subj.sex ? 1.025 : 0.975) * std::exp(subj.u.head_noise);  // males ≈ 5 % larger
  const double deg = 3.14159265358979323846 / 180;
  const double ax = n.rot_deg[0] * deg, ay = n.rot_deg[1] * deg, az = n.rot_deg[2] * deg;
  const double cx = std::cos(ax), sx = std::sin(ax), cy = std::cos(ay), sy = std::sin(ay), cz = std::cos(az), sz = std::sin(az);
  // R = Rz · Ry · Rx
  const double R[3][3] = {{cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx},
                          {sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx},
                          {-sy, cy * sx, cy * cx}};
  const auto& c = an.brain_centre;
  Affine q = identity_affine();  // world p → template world q
  for (int r = 0; r < 3; ++r) {
    double off = c[r];
    for (int j = 0; j < 3; ++j) {
      q[r][j] = R[j][r] / k;  // Rᵀ / k
      off -= R[j][r] / k * (c[j] + n.shift_mm[j]);
    }
    q[r][3] = off;
  }
  Affine work = scaling_affine(an.voxel_mm, an.voxel_mm, an.voxel_mm);
  for (int r = 0; r < 3; ++r) work[r][3] = an.origin[r];
  return multiply_affine(invert_affine(work), multiply_affine(q, grid.affine()));
}

double stage_strength(double T, double threshold) { return 1 / (1 + std::exp(-(T - threshold) / 0.07)); }

struct TracerModel {
  // uptake = wm·c_wm + gm_cb + deep·c_deep + striatum·c_str + ctx·f + amyW·c_amy·f + Σ tau_k·c_tau_k·f + csf·c_csf
  double c_wm, c_deep, c_str, c_amy, c_tau[3], c_csf;
};
TracerModel tracer_model(Tracer t, const Subject& subj, const SessionState& st) {
  if (t == Tracer::av45) return {subj.u.wm_binding, 1.25 + 0.25 * st.A, 0, 1.2 * st.A, {0, 0, 0}, 0.1};
  return {1.15, 1.15, 0.4, 0,
          {1.8 * stage_strength(st.T, 0.2), 1.6 * stage_strength(st.T, 0.45), 1.4 * stage_strength(st.T, 0.7)}, 0.1};
}

}  // namespace

Rendered render_session(const AnatomyHandle& handle, const GridSpec& grid, const Volume& atlas, const Subject& subj,
                        int session, const SessionState& st, const std::vector<Tracer>& tracers) {
  const Anatomy& an = *handle.ptr;
  const SessionNoise& n = subj.sessions.at(size_t(session));
  const Affine m = subject_to_template(an, grid, subj, n);
  const Affine out_aff = grid.affine();
  const double vent_gain = std::clamp(8 * st.s, -3.0, 10.0) / an.voxel_mm;  // working voxels
  const float thin = float(std::clamp(0.2 * st.s, -0.1, 0.35));
  const int nt = int(tracers.size());
  std::vector<TracerModel> models;
  for (Tracer t : tracers) models.push_back(tracer_model(t, subj, st));

  Rendered r;
  r.t1 = make_volume(grid.shape, 0.f, out_aff);
  r.pet.assign(size_t(nt), r.t1);
  Volume mask = r.t1;
  const auto [D, H, W] = grid.shape;
  // Per-slice partial sums for the intrinsic SUVR (numerator, denominator per tracer), combined
  // in slice order so the result does not depend on the thread count.
  std::vector<double> part(size_t(D * nt * 2), 0.0);
  const uint64_t t1_key = hash_combine(n.voxel_noise_key, 1);

#pragma omp parallel for schedule(static)
  for (int64_t d = 0; d < D; ++d) {
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        const auto q = apply_affine(m, double(w), double(h), double(d));
        float disp[3];
        fetch(an, q[0], q[1], q[2], kDispX, 3, disp);
        float ch[kChannels];
        fetch(an, q[0] + vent_gain * disp[0], q[1] + vent_gain * disp[1], q[2] + vent_gain * disp[2], 0, kDispX, ch);
        const int64_t i = (d * H + h) * W + w;
        const bool inside = ch[kBrain] > 0.5f;
        mask.data[size_t(i)] = inside ? 1.f : 0.f;
        const float lost = thin * ch[kOuter];  // share of cortical GM turned into CSF
        const float f = 1 - lost;
        // T1: template contrast, thinned cortex, smooth bias, noise, skull-stripped.
        const auto p = apply_affine(out_aff, double(w), double(h), double(d));
        const double X = p[0] / 80, Y = (p[1] + 17) / 100, Z = (p[2] - 9) / 80;
        const double bias = std::exp(n.bias[0] * X + n.bias[1] * Y + n.bias[2] * Z + n.bias[3] * X * X +
                                     n.bias[4] * Y * Y + n.bias[5] * X * Z);
        float t1 = float((ch[kT1] - ch[kGmCtx] * lost * (kGmIntensity - kCsfIntensity)) * bias) +
                   2.5f * voxel_normal(t1_key, uint64_t(i));
        r.t1.data[size_t(i)] = inside ? std::max(t1, 0.f) : 0.f;
        // PET uptake (SUVR units, cerebellar GM = 1) before blur.
        const float csf = ch[kCsf] + ch[kGmCtx] * lost;
        for (int t = 0; t < nt; ++t) {
          const TracerModel& tm = models[size_t(t)];
          const float ctx = f * float(ch[kGmCtx] + tm.c_amy * ch[kAmyW] + tm.c_tau[0] * ch[kTau1] +
                                      tm.c_tau[1] * ch[kTau2] + tm.c_tau[2] * ch[kTau3]);
          const float u = float(tm.c_wm * ch[kWm] + ch[kGmCb] + tm.c_deep * ch[kGmSub] + tm.c_str * ch[kStriatum] +
                                tm.c_csf * csf) + ctx;
          r.pet[size_t(t)].data[size_t(i)] = u;
          part[size_t((d * nt + t) * 2)] += ctx;
          part[size_t((d * nt + t) * 2 + 1)] += f * ch[kGmCtx];
        }
      }
  }

  // Partial-volume blur, true SUVR on the noise-free image, then noise, mask, /max.
  const auto sets = region_sets();
  for (int t = 0; t < nt; ++t) {
    Volume& pet = r.pet[size_t(t)];
    double num = 0, den = 0;
    for (int64_t d = 0; d < D; ++d) num += part[size_t((d * nt + t) * 2)], den += part[size_t((d * nt + t) * 2 + 1)];
    r.suvr_intrinsic.push_back(den > 0 ? num / den : 0);
    gaussian_blur(pet, kPetFwhmMm);
    for (int64_t i = 0; i < pet.numel(); ++i) pet.data[size_t(i)] *= mask.data[size_t(i)];
    // Region means by label (labels are small integers), accumulated serially in voxel order.
    std::vector<double> sum(256, 0.0), cnt(256, 0.0);
    for (int64_t i = 0; i < pet.numel(); ++i) {
      const int l = int(atlas.data[size_t(i)]);
      if (l > 0 && l < 256) sum[size_t(l)] += pet.data[size_t(i)], cnt[size_t(l)] += 1;
    }
    auto mean_of = [&](const std::vector<int>& labels) {
      double s = 0, c = 0;
      for (int l : labels) s += sum[size_t(l)], c += cnt[size_t(l)];
      return c > 0 ? s / c : 0.0;
    };
    const double ref = mean_of(sets[1].labels);
    r.suvr.push_back(ref > 0 ? mean_of(sets[0].labels) / ref : 0);
    std::array<double, 6> roi{};
    for (int k = 0; k < 6; ++k) roi[size_t(k)] = ref > 0 ? mean_of(sets[size_t(2 + k)].labels) / ref : 0;
    r.roi_suvr.push_back(roi);
    const uint64_t key = hash_combine(n.voxel_noise_key, 2 + uint64_t(tracers[size_t(t)]));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < pet.numel(); ++i) {
      float& v = pet.data[size_t(i)];
      if (mask.data[size_t(i)] == 0.f) { v = 0; continue; }
      v = std::max(0.f, v + 0.025f * std::sqrt(std::max(v, 0.f)) * voxel_normal(key, uint64_t(i)));
    }
    normalize_by_max(pet);
  }
  normalize_by_max(r.t1);
  return r;
}

}  // namespace cpets::io::phantom
