#include <doctest/doctest.h>
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "io/nifti.h"
#include "io/phantom.h"

using namespace cpets::io;
using namespace cpets::io::phantom;
namespace fs = std::filesystem;

namespace {

const char* kTemplates = "/usr/share/mricron/templates";
bool have_templates() { return fs::exists(fs::path(kTemplates) / "ch2bet.nii.gz"); }

// A coarse grid keeps every test fast; the anatomy is loaded once per kind.
GridSpec small_grid() { return GridSpec{{24, 32, 24}, 6.0, {0, -17, 11}}; }
const AnatomyHandle& anatomy(bool real) {
  static std::map<bool, AnatomyHandle> cache;
  auto it = cache.find(real);
  if (it == cache.end()) it = cache.emplace(real, load_anatomy(real ? kTemplates : "/nonexistent/templates", small_grid())).first;
  return it->second;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("cpets_test_phantom_" + std::to_string(getpid()) + "_" + name)) {
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

using Table = std::vector<std::map<std::string, std::string>>;
Table read_csv(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE(f.good());
  std::string line;
  std::getline(f, line);
  std::vector<std::string> header;
  {
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) header.push_back(c);
  }
  Table t;
  while (std::getline(f, line)) {
    std::map<std::string, std::string> row;
    size_t start = 0;
    for (size_t k = 0; k < header.size(); ++k) {
      const size_t end = line.find(',', start);
      row[header[k]] = line.substr(start, end == std::string::npos ? std::string::npos : end - start);
      start = end == std::string::npos ? line.size() : end + 1;
    }
    t.push_back(row);
  }
  return t;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

int days(const std::string& iso) {  // days since 1970 for a valid ISO date (test-side, naive)
  int y, m, d;
  REQUIRE(std::sscanf(iso.c_str(), "%d-%d-%d", &y, &m, &d) == 3);
  const int mdays[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
  int n = (y - 1970) * 365 + mdays[m - 1] + d - 1;
  for (int yy = 1970; yy < y; ++yy) n += (yy % 4 == 0 && (yy % 100 != 0 || yy % 400 == 0));
  if (m > 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) ++n;
  return n;
}

double corr(const std::vector<double>& a, const std::vector<double>& b) {
  double ma = 0, mb = 0;
  for (size_t i = 0; i < a.size(); ++i) ma += a[i], mb += b[i];
  ma /= a.size(), mb /= b.size();
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i)
    sab += (a[i] - ma) * (b[i] - mb), saa += (a[i] - ma) * (a[i] - ma), sbb += (b[i] - mb) * (b[i] - mb);
  return sab / std::sqrt(saa * sbb);
}

}  // namespace

TEST_CASE("dates, CSF censoring strings, parsing of --do and --faults") {
  CHECK(iso_date(0) == "1970-01-01");
  CHECK(iso_date(14853) == "2010-09-01");
  CHECK(iso_date(days("2016-02-29")) == "2016-02-29");
  CHECK(iso_date(days("2021-12-31")) == "2021-12-31");
  CHECK(csf_string(150, 200, 1700) == "<200");
  CHECK(csf_string(1850, 200, 1700) == ">1700");
  CHECK(csf_string(1006, 200, 1700) == "1006.0");
  CHECK(csf_string(7.2, 8, 120) == "<8");
  const Intervention a = parse_intervention("apoe4=0");
  CHECK(a.apoe4 == 0);
  CHECK(!a.abeta);
  const Intervention b = parse_intervention("abeta=800,apoe4=2");
  CHECK(b.abeta == 800.0);
  CHECK(b.name == "abeta=800_apoe4=2");
  CHECK_THROWS_WITH(parse_intervention("apoe4=3"), doctest::Contains("0, 1 or 2"));
  CHECK_THROWS_WITH(parse_intervention("tau=3"), doctest::Contains("unknown variable"));
  CHECK_THROWS_WITH(parse_intervention("abeta"), doctest::Contains("name=value"));
  const Intervention minus = parse_intervention("apoe4-1"), times = parse_intervention("abeta*0.5");
  CHECK(minus.apoe4_shift == -1);
  CHECK(!minus.apoe4);
  CHECK(minus.name == "apoe4-1");
  CHECK(parse_intervention("apoe4+1").apoe4_shift == 1);
  CHECK(!minus.applies_to(0));
  CHECK(minus.applies_to(1));
  CHECK(!parse_intervention("apoe4+1").applies_to(2));
  CHECK(times.abeta_factor == 0.5);
  CHECK_THROWS_WITH(parse_intervention("apoe4-1,apoe4=0"), doctest::Contains("both set and shifted"));
  CHECK_THROWS_WITH(parse_intervention("abeta*0"), doctest::Contains("factor must be > 0"));
  CHECK_THROWS_WITH(parse_intervention("abeta*2,abeta=800"), doctest::Contains("both set and scaled"));
  CHECK_THROWS_WITH(parse_intervention("apoe4-2"), doctest::Contains("apoe4-1"));
  CHECK_THROWS_WITH(parse_intervention("apoe4*2"), doctest::Contains("unknown variable or form"));
  CHECK(parse_faults("nan_voxel,bad_date").size() == 2);
  CHECK_THROWS_WITH(parse_faults("nan_voxel,oops"), doctest::Contains("unknown fault 'oops'"));
  CHECK_THROWS(preset_grid("huge"));
  CHECK(full_grid().shape == std::array<int64_t, 3>{96, 128, 96});
}

TEST_CASE("SCM: the causal direction across subjects and under do()") {
  std::vector<double> A, abeta, T, tau;
  int carriers = 0, counter = 0, n_censored_high = 0;
  double dx_A[3] = {0, 0, 0};
  int dx_n[3] = {0, 0, 0};
  for (int i = 0; i < 600; ++i) {
    const Subject s = sample_subject(7, i, &counter);
    REQUIRE(!s.sessions.empty());
    CHECK(s.age >= 55);
    CHECK(s.age <= 92);
    const SessionState st = session_state(s, 0);
    A.push_back(st.A), abeta.push_back(st.abeta), T.push_back(st.T), tau.push_back(st.tau);
    dx_A[int(s.dx)] += st.A, dx_n[int(s.dx)] += 1;
    n_censored_high += csf_string(st.abeta, 200, 1700)[0] == '>';
    // Later sessions are older and carry more amyloid.
    for (size_t k = 1; k < s.sessions.size(); ++k) {
      const SessionState later = session_state(s, int(k));
      CHECK(later.age > st.age);
      CHECK(later.A > st.A);
      CHECK(s.sessions[k].pet_day - s.sessions[k - 1].pet_day >= 365);
      CHECK(s.sessions[k].pet_day - s.sessions[k - 1].pet_day <= 730);
    }
    // do(APOE4 = 0) with the same exogenous noise lowers A (and so raises Aβ42) for a carrier.
    if (s.apoe4 > 0) {
      ++carriers;
      const Intervention iv = parse_intervention("apoe4=0");
      const SessionState cf = session_state(s, 0, &iv);
      CHECK(cf.A < st.A);
      CHECK(cf.abeta > st.abeta);
      CHECK(cf.T < st.T);
      CHECK(cf.s < st.s);
    }
    // do(APOE4 − 1) is do(APOE4 = APOE4 − 1) for this subject; it does not exist for non-carriers.
    const Intervention minus = parse_intervention("apoe4-1");
    if (s.apoe4 > 0) {
      const Intervention same = parse_intervention("apoe4=" + std::to_string(s.apoe4 - 1));
      CHECK(session_state(s, 0, &minus).A == session_state(s, 0, &same).A);
    } else {
      CHECK_THROWS_AS(session_state(s, 0, &minus), std::logic_error);
    }
    // do(ABETA × f): the rule of do(ABETA = b) applied to f times the session's own value.
    const Intervention half = parse_intervention("abeta*0.5");
    const SessionState h = session_state(s, 0, &half);
    CHECK(h.abeta == doctest::Approx(0.5 * st.abeta));
    const double u = s.sessions[0].u_abeta;
    CHECK(h.A == doctest::Approx(std::clamp((1700 - 0.5 * st.abeta + u) / 1100, 1e-6, 1 - 1e-6)));
    // ×1 is the factual world; with do(APOE4 − 1) it holds the CSF at its observed value, so A
    // stays and only APOE4's other paths (tau, atrophy) change.
    const Intervention same = parse_intervention("abeta*1");
    CHECK(session_state(s, 0, &same).A == doctest::Approx(st.A).epsilon(1e-9));
    if (s.apoe4 > 0) {
      const Intervention held = parse_intervention("apoe4-1,abeta*1");
      const SessionState cs = session_state(s, 0, &held);
      CHECK(cs.A == doctest::Approx(st.A).epsilon(1e-9));
      CHECK(cs.abeta == doctest::Approx(st.abeta));
      CHECK(cs.T < st.T);
      CHECK(held.name == "apoe4-1_abetax1");
    }
    // do(ABETA = b): the amyloid load implied by the CSF value, downstream tau follows it.
    const Intervention low = parse_intervention("abeta=1500"), high = parse_intervention("abeta=500");
    const SessionState lo = session_state(s, 0, &low), hi = session_state(s, 0, &high);
    CHECK(lo.A == doctest::Approx(200.0 / 1100));
    CHECK(hi.A == doctest::Approx(0.999));  // (1700 − 500)/1100 > 1, clipped
    CHECK(hi.T > lo.T);
    CHECK(hi.abeta == 500.0);
  }
  CHECK(carriers > 100);
  CHECK(corr(A, abeta) < -0.9);  // more amyloid ⇒ lower CSF Aβ42
  CHECK(corr(T, tau) > 0.9);
  CHECK(dx_n[0] > 150);
  CHECK(dx_n[2] > 60);
  CHECK(dx_A[2] / dx_n[2] > dx_A[1] / dx_n[1]);
  CHECK(dx_A[1] / dx_n[1] > dx_A[0] / dx_n[0]);
  CHECK(n_censored_high > 0);  // some amyloid-free subjects read above the assay's range
  // Same seed and index → same subject; another seed → another subject.
  const Subject s1 = sample_subject(7, 3, nullptr), s2 = sample_subject(7, 3, nullptr), s3 = sample_subject(8, 3, nullptr);
  CHECK(s1.u.u_A == s2.u.u_A);
  CHECK(s1.u.u_A != s3.u.u_A);
}

TEST_CASE("SCM: MCI progression — about a quarter converts, driven by the latents; labels and worlds consistent") {
  int counter = 0, mci = 0, converters = 0, never = 0;
  double A_conv = 0, A_stable = 0, T_conv = 0, T_stable = 0;
  const Intervention less_apoe = parse_intervention("apoe4-1"), less_abeta = parse_intervention("abeta*0.5");
  int worlds_checked = 0;
  for (int i = 0; i < 3000; ++i) {
    const Subject s = sample_subject(11, i, &counter);
    const Progression p = progression(s);
    CHECK(progression(s).converts == p.converts);  // deterministic
    if (s.dx != Dx::MCI) {
      CHECK(p.probability == 0);
      never += !p.converts;
      for (int k = 0; k < int(s.sessions.size()); ++k) CHECK(dx_in_36_months(s, k, p) == s.dx);
      continue;
    }
    ++mci;
    const SessionState st = session_state(s, 0);
    (p.converts ? A_conv : A_stable) += st.A;
    (p.converts ? T_conv : T_stable) += st.T;
    if (p.converts) {
      ++converters;
      const int first = s.sessions.front().pet_day;
      CHECK(p.conversion_day > first);
      CHECK(p.conversion_day <= first + kConversionWindowDays);
      CHECK(dx_in_36_months(s, 0, p) == Dx::AD);  // converts within 36 months of the first session
      for (int k = 0; k < int(s.sessions.size()); ++k)
        CHECK((session_dx(s, k, p) == Dx::AD) == (s.sessions[size_t(k)].pet_day >= p.conversion_day));
    } else {
      for (int k = 0; k < int(s.sessions.size()); ++k) {
        CHECK(session_dx(s, k, p) == Dx::MCI);
        CHECK(dx_in_36_months(s, k, p) == Dx::MCI);
      }
    }
    // Worlds share u_conv and the draw: less amyloid (one allele fewer) never raises the risk,
    // more (CSF Aβ42 halved) never lowers it, and a conversion decided by a lower risk stays.
    if (less_apoe.applies_to(s.apoe4)) {
      const Progression w = progression(s, &less_apoe);
      CHECK(w.probability <= p.probability + 1e-12);
      if (w.converts) CHECK(p.converts);
      ++worlds_checked;
    }
    const Progression more = progression(s, &less_abeta);
    CHECK(more.probability >= p.probability - 1e-12);
    if (p.converts) CHECK(more.converts);
  }
  const double rate = double(converters) / mci;
  MESSAGE("MCI subjects " << mci << ", converters " << converters << " (" << rate << ")");
  CHECK(rate > 0.22);
  CHECK(rate < 0.34);
  CHECK(A_conv / converters > A_stable / (mci - converters) + 0.05);
  CHECK(T_conv / converters > T_stable / (mci - converters) + 0.05);
  CHECK(worlds_checked > 100);
  CHECK(never > 1000);
}

TEST_CASE("rendering: cortical SUVR follows amyloid (AV45) and tau (AV1451); thread-count independent") {
  for (bool real : {true, false}) {
    if (real && !have_templates()) continue;
    CAPTURE(real);
    const AnatomyHandle& an = anatomy(real);
    CHECK(an.real == real);
    const GridSpec grid = small_grid();
    const Volume atlas = atlas_labels(an, grid);
    int cortex = 0, cerebellum = 0;
    for (float l : atlas.data) cortex += (l >= 1 && l <= 70) || (l >= 79 && l <= 90), cerebellum += l >= 91;
    CHECK(cortex > 200);
    CHECK(cerebellum > 20);
    Subject s = sample_subject(3, 0, nullptr);
    std::vector<double> suvr45, suvr1451;
    for (double b : {1650.0, 1100.0, 500.0}) {
      const Intervention iv = parse_intervention("abeta=" + std::to_string(int(b)));
      const SessionState st = session_state(s, 0, &iv);
      const Rendered r = render_session(an, grid, atlas, s, 0, st, {Tracer::av45, Tracer::av1451});
      REQUIRE(r.pet.size() == 2);
      suvr45.push_back(r.suvr[0]);
      suvr1451.push_back(r.suvr[1]);
      float mx = 0;
      int brain = 0;
      for (float v : r.t1.data) mx = std::max(mx, v), brain += v > 0;
      CHECK(mx == 1.f);
      CHECK(brain > 1000);
    }
    CHECK(suvr45[0] > 0.6);  // amyloid-free: near the reference (coarse 6 mm grid, blur spill-over)
    CHECK(suvr45[0] < 1.3);
    CHECK(suvr45[1] > suvr45[0] + 0.05);
    CHECK(suvr45[2] > suvr45[1] + 0.05);
    CHECK(suvr1451[2] > suvr1451[0]);  // T rises with A, so tau uptake spreads
  }
  // Same session rendered with 1 and 2 threads: bitwise identical.
  const AnatomyHandle& an = anatomy(have_templates());
  const GridSpec grid = small_grid();
  const Volume atlas = atlas_labels(an, grid);
  const Subject s = sample_subject(11, 2, nullptr);
  const SessionState st = session_state(s, 0);
  omp_set_num_threads(1);
  const Rendered r1 = render_session(an, grid, atlas, s, 0, st, {Tracer::av45});
  omp_set_num_threads(2);
  const Rendered r2 = render_session(an, grid, atlas, s, 0, st, {Tracer::av45});
  CHECK(r1.t1.data == r2.t1.data);
  CHECK(r1.pet[0].data == r2.pet[0].data);
  CHECK(r1.suvr[0] == r2.suvr[0]);
}

TEST_CASE("generate_cohort: layout, determinism, counterfactual truth") {
  TempDir a("a"), b("b"), c("c");
  Options opt;
  opt.subjects = 6;
  opt.seed = 4;
  opt.grid = small_grid();
  opt.tracers = {Tracer::av45, Tracer::av1451};
  opt.interventions = {parse_intervention("apoe4=0"), parse_intervention("abeta=800"), parse_intervention("apoe4-1")};
  opt.anatomy = anatomy(have_templates());
  opt.progress = false;
  opt.out_dir = a.path.string();
  const Summary sum = generate_cohort(opt);
  CHECK(sum.subjects == 6);
  CHECK(sum.sessions >= 6);
  CHECK(sum.real_anatomy == have_templates());

  // Layout: every row's images exist on the output grid, /max-normalised.
  const Table cohort = read_csv(a.path / "cohort.csv");
  REQUIRE(cohort.size() == size_t(2 * sum.sessions));
  CHECK(slurp(a.path / "cohort.csv")
            .rfind("Subject,DX,T1_date,PET_date,CSF_date,ABETA,TAU,PTAU,Age,Sex,APOE4,PTEDUCAT,Tracer,DX_36m,Conversion_date\n",
                   0) == 0);
  std::set<std::string> tracers;
  for (const auto& row : cohort) {
    CHECK(row.at("Subject").size() == 10);
    CHECK(row.at("Subject").substr(3, 3) == "_S_");
    tracers.insert(row.at("Tracer"));
    const fs::path t1 = a.path / "t1" / row.at("Subject") / row.at("T1_date") / "t1.nii.gz";
    std::string tracer = row.at("Tracer");
    for (char& ch : tracer) ch = char(std::tolower(ch));
    const fs::path pet = a.path / "pet" / row.at("Subject") / row.at("PET_date") / (tracer + ".nii.gz");
    REQUIRE(fs::exists(t1));
    REQUIRE(fs::exists(pet));
    NiftiInfo info;
    const Volume v = read_nifti(pet.string(), &info);
    CHECK(v.shape == opt.grid.shape);
    CHECK(v.voxel_size()[0] == doctest::Approx(6.0));
    CHECK(info.max == doctest::Approx(1.0f));
    CHECK(info.min >= 0.f);
  }
  CHECK(tracers == std::set<std::string>{"AV45", "AV1451"});
  const Volume labels = read_nifti((a.path / "atlas" / "labels.nii.gz").string());
  CHECK(labels.shape == opt.grid.shape);
  const auto regions = nlohmann::json::parse(slurp(a.path / "atlas" / "regions.json"));
  for (const char* name : {"cerebral_cortex", "cerebellar_cortex", "FC", "TC", "PC", "OC", "CI", "OO"})
    CHECK(regions["regions"].contains(name));
  CHECK(regions["reference"] == "cerebellar_cortex");

  // Counterfactual worlds: same sessions, the intervened variables changed, truth consistent.
  const Table truth = read_csv(a.path / "truth.csv");
  const Table cf_apoe = read_csv(a.path / "counterfactual" / "apoe4=0" / "truth.csv");
  const Table cf_abeta = read_csv(a.path / "counterfactual" / "abeta=800" / "truth.csv");
  const Table cf_abeta_cohort = read_csv(a.path / "counterfactual" / "abeta=800" / "cohort.csv");
  REQUIRE(truth.size() == size_t(sum.sessions));
  REQUIRE(cf_apoe.size() == truth.size());
  REQUIRE(cf_abeta.size() == truth.size());
  for (const auto& row : cf_abeta_cohort) CHECK(row.at("ABETA") == "800.0");
  for (size_t i = 0; i < truth.size(); ++i) {
    CHECK(cf_apoe[i].at("u_A") == truth[i].at("u_A"));
    CHECK(std::stod(cf_abeta[i].at("A")) == doctest::Approx(900.0 / 1100).epsilon(1e-5));
    const double A = std::stod(truth[i].at("A")), A_cf = std::stod(cf_apoe[i].at("A"));
    if (truth[i].at("APOE4") != "0") {
      CHECK(A_cf < A);
      CHECK(std::stod(cf_apoe[i].at("SUVR_av45_intrinsic")) < std::stod(truth[i].at("SUVR_av45_intrinsic")));
    } else {
      CHECK(A_cf == A);
      CHECK(cf_apoe[i].at("SUVR_av45") == truth[i].at("SUVR_av45"));
    }
    // Raising amyloid to the level ABETA = 800 implies raises SUVR where A was lower.
    if (A < 900.0 / 1100 - 0.1)
      CHECK(std::stod(cf_abeta[i].at("SUVR_av45")) > std::stod(truth[i].at("SUVR_av45")));
    fs::path cf_t1 = a.path / "counterfactual" / "apoe4=0" / "t1" / truth[i].at("Subject");
    CHECK(fs::exists(cf_t1));
  }

  // do(APOE4 − 1): only the carriers' sessions, each with one allele fewer.
  const Table cf_minus = read_csv(a.path / "counterfactual" / "apoe4-1" / "truth.csv");
  size_t carriers = 0;
  for (const auto& row : truth) carriers += row.at("APOE4") != "0";
  CHECK(cf_minus.size() == carriers);
  for (const auto& row : cf_minus) {
    const auto it = std::find_if(truth.begin(), truth.end(), [&](const auto& t) {
      return t.at("Subject") == row.at("Subject") && t.at("PET_date") == row.at("PET_date");
    });
    REQUIRE(it != truth.end());
    CHECK(std::stoi(row.at("APOE4")) == std::stoi(it->at("APOE4")) - 1);
  }

  // Same seed → identical files, whatever the thread count; another seed → different ones.
  opt.out_dir = b.path.string();
  const int threads = omp_get_max_threads();
  omp_set_num_threads(threads == 1 ? 2 : 1);
  generate_cohort(opt);
  omp_set_num_threads(threads);
  for (const auto& e : fs::recursive_directory_iterator(a.path))
    if (e.is_regular_file()) {
      const fs::path other = b.path / fs::relative(e.path(), a.path);
      REQUIRE(fs::exists(other));
      CHECK_MESSAGE(slurp(e.path()) == slurp(other), e.path().string());
    }
  opt.out_dir = c.path.string();
  opt.seed = 5;
  opt.interventions.clear();
  generate_cohort(opt);
  CHECK(slurp(a.path / "cohort.csv") != slurp(c.path / "cohort.csv"));
}

TEST_CASE("generate_cohort: faults are injected where faults.csv says, far dates exist") {
  TempDir d("faults");
  Options opt;
  opt.subjects = 12;
  opt.seed = 9;
  opt.grid = small_grid();
  opt.anatomy = anatomy(have_templates());
  opt.progress = false;
  opt.faults = parse_faults("missing_csf,bad_date,truncated_image,not_nifti,wrong_grid,nan_voxel");
  opt.out_dir = d.path.string();
  const Summary sum = generate_cohort(opt);
  REQUIRE(sum.faults.size() == 6);
  const Table faults = read_csv(d.path / "faults.csv");
  REQUIRE(faults.size() == 6);
  std::map<std::string, std::string> where;
  for (const auto& f : faults) where[f.at("fault")] = f.at("where");
  CHECK_THROWS_WITH(read_nifti((d.path / where["truncated_image"]).string()), doctest::Contains("trunc"));
  CHECK_THROWS(read_nifti((d.path / where["not_nifti"]).string()));
  CHECK(read_nifti((d.path / where["wrong_grid"]).string()).shape != opt.grid.shape);
  CHECK_THROWS(read_nifti((d.path / where["nan_voxel"]).string()));
  NiftiInfo info;
  read_nifti((d.path / where["nan_voxel"]).string(), &info, NiftiReadOptions{true});
  CHECK(info.nan_count == 1);
  const Table cohort = read_csv(d.path / "cohort.csv");
  int empty_csf = 0, bad_dates = 0, far_t1 = 0, far_csf = 0;
  for (const auto& row : cohort) {
    empty_csf += row.at("ABETA").empty() && row.at("TAU").empty() && row.at("PTAU").empty();
    if (row.at("T1_date").substr(5, 2) == "13") { ++bad_dates; continue; }
    const int pet = days(row.at("PET_date"));
    far_t1 += std::abs(days(row.at("T1_date")) - pet) > 183;
    far_csf += std::abs(days(row.at("CSF_date")) - pet) > 183;
  }
  CHECK(empty_csf == 1);
  CHECK(bad_dates == 1);
  CHECK(far_t1 >= 1);
  CHECK(far_csf >= 1);
}

TEST_CASE("analytic fallback: used and announced when the template directory is absent") {
  const AnatomyHandle& an = anatomy(false);
  CHECK(!an.real);
  CHECK(an.source.find("analytic head") != std::string::npos);
  CHECK(an.source.find("/nonexistent/templates") != std::string::npos);
  TempDir d("analytic");
  Options opt;
  opt.subjects = 2;
  opt.grid = small_grid();
  opt.template_dir = "/nonexistent/templates";
  opt.progress = false;
  opt.out_dir = d.path.string();
  const Summary sum = generate_cohort(opt);
  CHECK(!sum.real_anatomy);
  CHECK(sum.anatomy.find("analytic") != std::string::npos);
  CHECK(nlohmann::json::parse(slurp(d.path / "atlas" / "regions.json"))["anatomy"].get<std::string>().find("analytic") !=
        std::string::npos);
}
