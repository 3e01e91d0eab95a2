// The phantom's structural causal model: who the subjects are, their latent loads (A, T, s),
// their CSF read-outs and session dates. Coefficients follow docs/phantom.md.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "io/phantom_internal.h"
#include "io/preprocess.h"

namespace cpets::io::phantom {

// ---- grids, names, parsing ------------------------------------------------------------------

Affine GridSpec::affine() const { return centred_affine(shape, {voxel_mm, voxel_mm, voxel_mm}, centre_mm); }

GridSpec demo_grid() { return GridSpec{{48, 64, 48}, 3.0, {0, -17, 11}}; }
GridSpec full_grid() { return GridSpec{{96, 128, 96}, 1.5, {0, -17, 11}}; }
GridSpec preset_grid(const std::string& name) {
  if (name == "demo") return demo_grid();
  if (name == "full") return full_grid();
  throw std::runtime_error("unknown preset '" + name + "': use demo (48×64×48 at 3 mm) or full (96×128×96 at 1.5 mm)");
}

std::string tracer_name(Tracer t) { return t == Tracer::av45 ? "av45" : "av1451"; }

std::vector<Tracer> parse_tracers(const std::string& s) {
  if (s == "av45") return {Tracer::av45};
  if (s == "av1451") return {Tracer::av1451};
  if (s == "both") return {Tracer::av45, Tracer::av1451};
  throw std::runtime_error("unknown tracer '" + s + "': use av45, av1451 or both");
}

namespace {
std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, sep);)
    if (!item.empty()) out.push_back(item);
  return out;
}
}  // namespace

Intervention parse_intervention(const std::string& s) {
  Intervention iv;
  for (const auto& part : split(s, ',')) {
    if (part == "apoe4-1" || part == "apoe4+1") {
      if (iv.apoe4) throw std::runtime_error("--do '" + s + "': APOE4 is both set and shifted");
      iv.apoe4_shift = part == "apoe4-1" ? -1 : 1;
      continue;
    }
    const auto op = part.find_first_of("=*");
    if (op == std::string::npos)
      throw std::runtime_error("--do '" + s + "': expected name=value, e.g. apoe4=0, apoe4-1, abeta=800 or abeta*0.5");
    const std::string key = part.substr(0, op), val = part.substr(op + 1);
    char* end = nullptr;
    const double x = std::strtod(val.c_str(), &end);
    if (val.empty() || *end != '\0' || !std::isfinite(x))
      throw std::runtime_error("--do '" + s + "': value '" + val + "' is not a number");
    if (key == "apoe4" && part[op] == '=') {
      if (x != 0 && x != 1 && x != 2) throw std::runtime_error("--do '" + s + "': APOE4 is an allele count 0, 1 or 2");
      if (iv.apoe4_shift) throw std::runtime_error("--do '" + s + "': APOE4 is both set and shifted");
      iv.apoe4 = int(x);
    } else if (key == "abeta" && part[op] == '=') {
      if (x < 0) throw std::runtime_error("--do '" + s + "': ABETA must be ≥ 0 pg/mL");
      iv.abeta = x;
    } else if (key == "abeta" && part[op] == '*') {
      if (!(x > 0)) throw std::runtime_error("--do '" + s + "': the ABETA factor must be > 0");
      iv.abeta_factor = x;
    } else {
      throw std::runtime_error("--do '" + s + "': unknown variable or form '" + part +
                               "' (supported: apoe4=a, apoe4-1, apoe4+1, abeta=v, abeta*f)");
    }
  }
  if (iv.abeta && iv.abeta_factor) throw std::runtime_error("--do '" + s + "': ABETA is both set and scaled");
  if (!iv.apoe4 && !iv.apoe4_shift && !iv.abeta && !iv.abeta_factor) throw std::runtime_error("--do '" + s + "': nothing to intervene on");
  iv.name = s;  // a folder name: "apoe4-1,abeta*1" → "apoe4-1_abetax1"
  std::replace(iv.name.begin(), iv.name.end(), ',', '_');
  std::replace(iv.name.begin(), iv.name.end(), '*', 'x');
  return iv;
}

std::string fault_name(Fault f) {
  switch (f) {
    case Fault::missing_csf: return "missing_csf";
    case Fault::bad_date: return "bad_date";
    case Fault::truncated_image: return "truncated_image";
    case Fault::not_nifti: return "not_nifti";
    case Fault::wrong_grid: return "wrong_grid";
    case Fault::nan_voxel: return "nan_voxel";
  }
  return "?";
}

std::vector<Fault> parse_faults(const std::string& s) {
  std::vector<Fault> out;
  for (const auto& name : split(s, ',')) {
    bool found = false;
    for (Fault f : {Fault::missing_csf, Fault::bad_date, Fault::truncated_image, Fault::not_nifti, Fault::wrong_grid,
                    Fault::nan_voxel})
      if (fault_name(f) == name) { out.push_back(f); found = true; }
    if (!found)
      throw std::runtime_error("unknown fault '" + name +
                               "': use missing_csf, bad_date, truncated_image, not_nifti, wrong_grid, nan_voxel");
  }
  return out;
}

std::string dx_name(Dx d) { return d == Dx::CN ? "CN" : d == Dx::MCI ? "MCI" : "AD"; }

// ---- dates and CSF strings ------------------------------------------------------------------

std::string iso_date(int z) {
  // Civil date from a day count (the proleptic Gregorian calendar in 400-year eras).
  z += 719468;
  const int era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = unsigned(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int y0 = int(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", y0 + (m <= 2), m, d);
  return buf;
}

std::string csf_string(double value, double lo, double hi) {
  char buf[32];
  if (value < lo) std::snprintf(buf, sizeof buf, "<%g", lo);
  else if (value > hi) std::snprintf(buf, sizeof buf, ">%g", hi);
  else std::snprintf(buf, sizeof buf, "%.1f", value);
  return buf;
}

// ---- subjects -------------------------------------------------------------------------------

namespace {
int categorical(Rng& rng, const double (&p)[3]) {
  const double u = rng.uniform();
  return u < p[0] ? 0 : u < p[0] + p[1] ? 1 : 2;
}
double logistic(double x) { return 1 / (1 + std::exp(-x)); }
constexpr int kFirstDay = 14853;  // 2010-09-01
constexpr int kLastFirstDay = 18443;  // 2020-07-01
}  // namespace

Subject sample_subject(uint64_t seed, int index, int* global_session_counter) {
  Rng rng(hash_combine(seed, uint64_t(index) + 1));
  Subject s;
  const int site = 2 + int(rng.next() % 140);
  char id[32];
  std::snprintf(id, sizeof id, "%03d_S_%04d", site, 4001 + index);  // unique (5 digits past 5998)
  s.id = id;
  const double p_dx[3] = {0.4, 0.4, 0.2};
  s.dx = Dx(categorical(rng, p_dx));
  s.age = std::clamp(rng.normal(73, 7), 55.0, 92.0);
  s.sex = rng.uniform() < 0.5 ? 1 : 0;
  s.educ = int(std::clamp(std::round(rng.normal(16, 2.7)), 6.0, 20.0));
  static const double p_apoe[3][3] = {{0.72, 0.25, 0.03}, {0.50, 0.40, 0.10}, {0.35, 0.45, 0.20}};
  s.apoe4 = categorical(rng, p_apoe[int(s.dx)]);
  s.u.u_A = rng.normal(0, 0.8);
  s.u.u_T = rng.normal(0, 0.7);
  s.u.u_S = rng.normal(0, 0.2);
  s.u.wm_binding = rng.uniform(1.5, 1.7);
  s.u.head_noise = rng.normal(0, 0.01);
  // Follow-up: older subjects and impaired ones come back more often.
  const double p_more = 0.3 + 0.1 * int(s.dx);
  const int n_sessions = rng.uniform() < p_more ? (rng.uniform() < 0.35 ? 3 : 2) : 1;
  int day = kFirstDay + int(rng.uniform() * (kLastFirstDay - kFirstDay));
  for (int k = 0; k < n_sessions; ++k) {
    SessionNoise n;
    if (k > 0) day += 365 + int(rng.uniform() * 365);
    n.pet_day = day;
    n.u_abeta = rng.normal(0, 90);
    n.u_tau = rng.normal(0, 35);
    n.u_ptau = rng.normal(0, 4);
    for (auto& r : n.rot_deg) r = rng.normal(0, 1.0);
    for (auto& t : n.shift_mm) t = rng.normal(0, 1.0);
    for (auto& b : n.bias) b = rng.normal(0, 0.06);
    n.voxel_noise_key = rng.next();
    n.t1_offset_days = int(std::clamp(rng.normal(0, 20), -60.0, 60.0));
    n.csf_offset_days = int(std::clamp(rng.normal(0, 30), -90.0, 90.0));
    // Far T1 offsets stay under 300 days: with normal offsets ≤ 60 days and sessions ≥ 365 days
    // apart, two sessions of one subject never share a T1 date (and so a T1 directory).
    const double sign_t1 = rng.uniform() < 0.5 ? -1 : 1, far_t1 = 200 + 100 * rng.uniform();
    const double sign_csf = rng.uniform() < 0.5 ? -1 : 1, far_csf = 200 + 200 * rng.uniform();
    // A fixed share of sessions (every 9th and every 11th in cohort order) has a T1 or a CSF date
    // more than 6 months from the PET, so the pairing rule always has something to reject.
    const int g = global_session_counter ? (*global_session_counter)++ : 0;
    if (g % 9 == 4) n.t1_offset_days = int(sign_t1 * far_t1);
    if (g % 11 == 7) n.csf_offset_days = int(sign_csf * far_csf);
    s.sessions.push_back(n);
  }
  // Drawn last, so adding progression left every earlier draw (and older cohorts) unchanged.
  s.u.u_conv = rng.normal(0, 0.6);
  s.u.conversion_draw = rng.uniform();
  s.u.conversion_time = rng.uniform();
  return s;
}

Progression progression(const Subject& subj, const Intervention* iv) {
  Progression p;
  if (subj.dx != Dx::MCI) return p;
  const SessionState st = session_state(subj, 0, iv);
  // Calibrated so that about 28 % of MCI subjects convert (ADNI: 281 of 1,053), driven by the
  // amyloid and tau loads and atrophy, which CSF and demographics measure only with noise.
  constexpr double k0 = -5.2, k_A = 2.5, k_T = 5.0, k_s = 2.0;
  p.probability = logistic(k0 + k_A * st.A + k_T * st.T + k_s * st.s + subj.u.u_conv);
  p.converts = subj.u.conversion_draw < p.probability;
  if (p.converts)
    p.conversion_day = subj.sessions.front().pet_day + 30 + int(subj.u.conversion_time * (kConversionWindowDays - 30));
  return p;
}

Dx session_dx(const Subject& subj, int session, const Progression& p) {
  return p.converts && subj.sessions.at(size_t(session)).pet_day >= p.conversion_day ? Dx::AD : subj.dx;
}

Dx dx_in_36_months(const Subject& subj, int session, const Progression& p) {
  const Dx now = session_dx(subj, session, p);
  if (now != Dx::MCI) return now;
  return p.converts && p.conversion_day <= subj.sessions.at(size_t(session)).pet_day + kConversionWindowDays ? Dx::AD
                                                                                                            : Dx::MCI;
}

bool Intervention::applies_to(int apoe4_factual) const {
  const int a = apoe4_factual + apoe4_shift.value_or(0);
  return a >= 0 && a <= 2;
}

SessionState session_state(const Subject& subj, int session, const Intervention* iv) {
  SessionState st;
  const auto& n = subj.sessions.at(size_t(session));
  st.years = (n.pet_day - subj.sessions.front().pet_day) / 365.25;
  st.age = subj.age + st.years;
  st.apoe4 = iv && iv->apoe4 ? *iv->apoe4 : subj.apoe4 + (iv ? iv->apoe4_shift.value_or(0) : 0);
  if (st.apoe4 < 0 || st.apoe4 > 2)
    throw std::logic_error("session_state: do(" + iv->name + ") does not exist for " + subj.id + " (APOE4 " +
                           std::to_string(subj.apoe4) + "); check Intervention::applies_to first");
  const int dx = int(subj.dx);
  const double a_dx[3] = {0, 1, 2.5}, t_dx[3] = {0, 0.7, 1.8}, s_dx[3] = {0, 0.3, 0.7};
  // Amyloid accumulates over follow-up, faster when impaired.
  const double logit_A = -1.5 + a_dx[dx] + 0.4 * (st.age - 73) / 10 + 1.0 * st.apoe4 +
                         (0.2 + 0.15 * dx) * st.years + subj.u.u_A;
  st.A = logistic(logit_A);
  std::optional<double> abeta_set;  // the CSF value the intervention fixes
  if (iv && iv->abeta) {
    abeta_set = *iv->abeta;
    st.A = std::clamp((1700 - *abeta_set) / 1100, 0.001, 0.999);
  }
  if (iv && iv->abeta_factor) {
    // f times the factual measurement (factual APOE4 too: "apoe4-1,abeta*1" holds the CSF at its
    // observed value), and the load that value implies with this session's assay noise abducted
    // — so abeta*1 alone is the factual world.
    const double logit_factual = logit_A + 1.0 * (subj.apoe4 - st.apoe4);
    abeta_set = *iv->abeta_factor * (1700 - 1100 * logistic(logit_factual) + n.u_abeta);
    st.A = std::clamp((1700 - *abeta_set + n.u_abeta) / 1100, 1e-6, 1 - 1e-6);
  }
  st.abeta_set = abeta_set.has_value();
  const double logit_T = -3.0 + t_dx[dx] + 0.3 * (st.age - 73) / 10 + 0.3 * st.apoe4 + 2.5 * st.A +
                         (0.1 + 0.1 * dx) * st.years + subj.u.u_T;
  st.T = logistic(logit_T);
  st.s = 0.03 * (st.age - 73) + s_dx[dx] + 0.1 * st.apoe4 - 0.03 * (subj.educ - 16) + 0.04 * dx * st.years +
         subj.u.u_S;
  st.abeta = abeta_set ? *abeta_set : 1700 - 1100 * st.A + n.u_abeta;
  st.tau = 150 + 350 * st.T + n.u_tau;
  st.ptau = 12 + 40 * st.T + n.u_ptau;
  return st;
}

// ---- regions ---------------------------------------------------------------------------------

namespace {
std::vector<int> range(int a, int b) {
  std::vector<int> v;
  for (int i = a; i <= b; ++i) v.push_back(i);
  return v;
}
std::vector<int> join(std::initializer_list<std::vector<int>> parts) {
  std::vector<int> v;
  for (const auto& p : parts) v.insert(v.end(), p.begin(), p.end());
  std::sort(v.begin(), v.end());
  return v;
}
}  // namespace

std::vector<RegionSet> region_sets() {
  return {
      {"cerebral_cortex", "AAL cerebral labels 1-90 without the subcortical nuclei 71-78", join({range(1, 70), range(79, 90)})},
      {"cerebellar_cortex", "AAL cerebellar hemispheres and vermis 91-116 (SUVR reference)", range(91, 116)},
      {"FC", "frontal: precentral, superior/middle frontal, inferior frontal triangular, SMA, superior medial, paracentral",
       join({range(1, 4), range(7, 8), range(13, 14), range(19, 20), range(23, 24), range(69, 70)})},
      {"TC", "temporal: hippocampus, parahippocampal, amygdala, fusiform, Heschl, superior/middle/inferior temporal and poles",
       join({range(37, 42), range(55, 56), range(79, 90)})},
      {"PC", "parietal: postcentral, superior/inferior parietal, supramarginal, angular, precuneus", range(57, 68)},
      {"OC", "occipital: calcarine, cuneus, lingual, superior/middle/inferior occipital", range(43, 54)},
      {"CI", "cingulate + insula", range(29, 36)},
      {"OO", "operculum + orbital: orbital frontal parts, inferior frontal opercular, Rolandic operculum, olfactory, medial orbital, rectus",
       join({range(5, 6), range(9, 12), range(15, 18), range(21, 22), range(25, 28)})},
  };
}

}  // namespace cpets::io::phantom
