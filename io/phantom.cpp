// Writing the phantom cohort: subjects rendered in parallel (one subject per thread, each with its
// own noise streams, so files are identical for any thread count), CSVs written in subject order.
#include "io/phantom.h"

#include "io/files.h"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "io/nifti.h"
#include "io/phantom_internal.h"
#include "io/png.h"
#include "io/preprocess.h"

namespace cpets::io::phantom {

namespace fs = std::filesystem;

namespace {

std::string fmt(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string upper(std::string s) {
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

void write_volume(const fs::path& path, const Volume& v) {
  fs::create_directories(path.parent_path());
  write_nifti(path.string(), v);
}

struct CohortRow {
  std::string subject, dx, t1_date, pet_date, csf_date, abeta, tau, ptau, age, sex, apoe4, educ, tracer;
  std::string dx_36m, conversion_date;  // the progression columns an ADNI user builds from DXSUM
  std::string line() const {
    return subject + "," + dx + "," + t1_date + "," + pet_date + "," + csf_date + "," + abeta + "," + tau + "," + ptau +
           "," + age + "," + sex + "," + apoe4 + "," + educ + "," + tracer + "," + dx_36m + "," + conversion_date + "\n";
  }
};
const char* kCohortHeader =
    "Subject,DX,T1_date,PET_date,CSF_date,ABETA,TAU,PTAU,Age,Sex,APOE4,PTEDUCAT,Tracer,DX_36m,Conversion_date\n";

std::string truth_header(const std::vector<Tracer>& tracers) {
  std::string h = "Subject,Session,PET_date,DX,Age,Sex,APOE4,PTEDUCAT,A,T,s,u_A,u_T,u_S,u_ABETA,u_TAU,u_PTAU,"
                  "wm_binding,head_noise,rot_x,rot_y,rot_z,shift_x,shift_y,shift_z,T1_offset_days,CSF_offset_days,"
                  "ABETA_true,TAU_true,PTAU_true,P_conversion,Converts,Conversion_date";
  for (Tracer t : tracers) {
    const std::string n = tracer_name(t);
    h += ",SUVR_" + n + ",SUVR_" + n + "_intrinsic";
    for (const char* roi : {"FC", "TC", "PC", "OC", "CI", "OO"}) h += ",SUVR_" + n + "_" + roi;
  }
  return h + "\n";
}

std::string truth_line(const Subject& subj, int k, const SessionState& st, const Progression& prog, const Rendered& r) {
  const auto& n = subj.sessions[size_t(k)];
  std::string s = subj.id + "," + std::to_string(k) + "," + iso_date(n.pet_day) + "," + dx_name(subj.dx) + "," +
                  fmt(st.age, 2) + "," + std::to_string(subj.sex) + "," + std::to_string(st.apoe4) + "," +
                  std::to_string(subj.educ) + "," + fmt(st.A, 6) + "," + fmt(st.T, 6) + "," + fmt(st.s, 6) + "," +
                  fmt(subj.u.u_A, 6) + "," + fmt(subj.u.u_T, 6) + "," + fmt(subj.u.u_S, 6) + "," + fmt(n.u_abeta, 4) +
                  "," + fmt(n.u_tau, 4) + "," + fmt(n.u_ptau, 4) + "," + fmt(subj.u.wm_binding, 6) + "," +
                  fmt(subj.u.head_noise, 6) + "," + fmt(n.rot_deg[0], 4) + "," + fmt(n.rot_deg[1], 4) + "," +
                  fmt(n.rot_deg[2], 4) + "," + fmt(n.shift_mm[0], 4) + "," + fmt(n.shift_mm[1], 4) + "," +
                  fmt(n.shift_mm[2], 4) + "," + std::to_string(n.t1_offset_days) + "," +
                  std::to_string(n.csf_offset_days) + "," + fmt(st.abeta, 3) + "," + fmt(st.tau, 3) + "," + fmt(st.ptau, 3) +
                  "," + fmt(prog.probability, 6) + "," + (prog.converts ? "1" : "0") + "," +
                  (prog.converts ? iso_date(prog.conversion_day) : "");
  for (size_t t = 0; t < r.suvr.size(); ++t) {
    s += "," + fmt(r.suvr[t], 6) + "," + fmt(r.suvr_intrinsic[t], 6);
    for (double v : r.roi_suvr[t]) s += "," + fmt(v, 6);
  }
  return s + "\n";
}

// Which subject each requested fault lands on: fault j → subject j mod N, first session.
std::map<Fault, int> fault_targets(const std::vector<Fault>& faults, int n_subjects) {
  std::map<Fault, int> t;
  for (size_t j = 0; j < faults.size(); ++j) t[faults[j]] = int(j) % std::max(1, n_subjects);
  return t;
}

struct SubjectOutput {
  std::vector<CohortRow> rows;
  std::string truth;
  std::vector<std::string> faults;
  std::map<std::string, std::pair<std::vector<CohortRow>, std::string>> counterfactual;  // name → rows, truth
  int images = 0;
};

CohortRow cohort_row(const Subject& subj, int k, const SessionState& st, const Progression& prog, Tracer tracer) {
  const auto& n = subj.sessions[size_t(k)];
  CohortRow r;
  r.subject = subj.id;
  r.dx = dx_name(session_dx(subj, k, prog));
  r.dx_36m = dx_name(dx_in_36_months(subj, k, prog));
  r.conversion_date = prog.converts ? iso_date(prog.conversion_day) : "";
  r.t1_date = iso_date(n.pet_day + n.t1_offset_days);
  r.pet_date = iso_date(n.pet_day);
  r.csf_date = iso_date(n.pet_day + n.csf_offset_days);
  // Elecsys-like assay ranges, which ADNI reports as censoring strings.
  r.abeta = csf_string(st.abeta, 200, 1700);
  r.tau = csf_string(st.tau, 80, 1300);
  r.ptau = csf_string(st.ptau, 8, 120);
  r.age = fmt(st.age, 2);
  r.sex = std::to_string(subj.sex);
  r.apoe4 = std::to_string(st.apoe4);
  r.educ = std::to_string(subj.educ);
  r.tracer = upper(tracer_name(tracer));
  return r;
}

// Renders and writes every session of one subject (factual, then each counterfactual world).
SubjectOutput process_subject(const Options& opt, const AnatomyHandle& anatomy, const Volume& atlas,
                              const Subject& subj, int index, const std::map<Fault, int>& faults,
                              std::vector<std::pair<std::string, Rendered>>* keep) {
  SubjectOutput out;
  const fs::path root(opt.out_dir);
  auto rel = [&](const fs::path& p) { return fs::relative(p, root).generic_string(); };
  auto has_fault = [&](Fault f) {
    auto it = faults.find(f);
    return it != faults.end() && it->second == index;
  };
  const Progression prog = progression(subj);
  for (int k = 0; k < int(subj.sessions.size()); ++k) {
    const SessionState st = session_state(subj, k, nullptr);
    Rendered r = render_session(anatomy, opt.grid, atlas, subj, k, st, opt.tracers);
    const auto& n = subj.sessions[size_t(k)];
    const std::string t1_date = iso_date(n.pet_day + n.t1_offset_days), pet_date = iso_date(n.pet_day);
    const fs::path t1_path = root / "t1" / subj.id / t1_date / "t1.nii.gz";
    write_volume(t1_path, r.t1);
    ++out.images;
    for (size_t t = 0; t < opt.tracers.size(); ++t) {
      const fs::path pet_path = root / "pet" / subj.id / pet_date / (tracer_name(opt.tracers[t]) + ".nii.gz");
      Volume pet = r.pet[t];
      const bool first = k == 0 && t == 0;
      if (first && has_fault(Fault::nan_voxel)) {
        pet.at(pet.shape[0] / 2, pet.shape[1] / 2, pet.shape[2] / 2) = NAN;
        out.faults.push_back("nan_voxel," + subj.id + "," + pet_date + "," + rel(pet_path));
      }
      if (first && has_fault(Fault::wrong_grid)) {
        const double v = opt.grid.voxel_mm * 1.25;
        pet = resample_to_voxel_size(pet, {v, v, v});
        out.faults.push_back("wrong_grid," + subj.id + "," + pet_date + "," + rel(pet_path));
      }
      write_volume(pet_path, pet);
      ++out.images;
      if (first && has_fault(Fault::truncated_image)) {
        fs::resize_file(pet_path, fs::file_size(pet_path) / 2);
        out.faults.push_back("truncated_image," + subj.id + "," + pet_date + "," + rel(pet_path));
      }
      out.rows.push_back(cohort_row(subj, k, st, prog, opt.tracers[t]));
    }
    if (k == 0 && has_fault(Fault::not_nifti)) {
      write_text_atomic(t1_path.string(), "this is not a NIfTI image: the phantom's not_nifti fault\n");
      out.faults.push_back("not_nifti," + subj.id + "," + t1_date + "," + rel(t1_path));
    }
    if (k == 0 && has_fault(Fault::missing_csf)) {
      for (auto& row : out.rows) row.abeta = row.tau = row.ptau = "";
      out.faults.push_back("missing_csf," + subj.id + "," + pet_date + ",cohort.csv");
    }
    if (k == 0 && has_fault(Fault::bad_date)) {
      std::string bad = t1_date;
      bad.replace(5, 2, "13");  // month 13: well-formed digits, impossible date
      for (auto& row : out.rows) row.t1_date = bad;
      out.faults.push_back("bad_date," + subj.id + "," + pet_date + ",cohort.csv T1_date=" + bad);
    }
    out.truth += truth_line(subj, k, st, prog, r);
    if (keep && k == 0) keep->push_back({subj.id + "_" + pet_date, std::move(r)});

    for (const auto& iv : opt.interventions) {
      if (!iv.applies_to(subj.apoe4)) continue;  // e.g. do(APOE4 − 1) for a non-carrier
      const SessionState cst = session_state(subj, k, &iv);
      const Progression cprog = progression(subj, &iv);  // the same u_conv and draw
      const Rendered cr = render_session(anatomy, opt.grid, atlas, subj, k, cst, opt.tracers);
      const fs::path croot = root / "counterfactual" / iv.name;
      write_volume(croot / "t1" / subj.id / t1_date / "t1.nii.gz", cr.t1);
      ++out.images;
      auto& [rows, truth] = out.counterfactual[iv.name];
      for (size_t t = 0; t < opt.tracers.size(); ++t) {
        write_volume(croot / "pet" / subj.id / pet_date / (tracer_name(opt.tracers[t]) + ".nii.gz"), cr.pet[t]);
        ++out.images;
        rows.push_back(cohort_row(subj, k, cst, cprog, opt.tracers[t]));
      }
      truth += truth_line(subj, k, cst, cprog, cr);
    }
  }
  return out;
}

void write_regions_json(const fs::path& path, const AnatomyHandle& anatomy) {
  nlohmann::ordered_json j;
  j["anatomy"] = anatomy.source;
  j["label_volume"] = "labels.nii.gz";
  j["roi"] = "cerebral_cortex";
  j["reference"] = "cerebellar_cortex";
  nlohmann::ordered_json regions;
  for (const auto& r : region_sets()) regions[r.name] = {{"description", r.description}, {"labels", r.labels}};
  j["regions"] = regions;
  write_text_atomic(path.string(), j.dump(2) + "\n");
}

}  // namespace

Summary generate_cohort(const Options& opt) {
  if (opt.out_dir.empty()) throw std::runtime_error("phantom: no output directory given (--out DIR)");
  if (opt.subjects < 1) throw std::runtime_error("phantom: --subjects must be ≥ 1, got " + std::to_string(opt.subjects));
  if (opt.tracers.empty()) throw std::runtime_error("phantom: no tracer requested");
  const auto t0 = std::chrono::steady_clock::now();
  Summary sum;
  const AnatomyHandle anatomy = opt.anatomy ? *opt.anatomy : load_anatomy(opt.template_dir, opt.grid);
  sum.anatomy = anatomy.source;
  sum.real_anatomy = anatomy.real;
  if (opt.progress) std::fprintf(stderr, "[cpets-phantom] anatomy: %s\n", anatomy.source.c_str());
  const fs::path root(opt.out_dir);
  fs::create_directories(root);
  const Volume atlas = atlas_labels(anatomy, opt.grid);
  write_volume(root / "atlas" / "labels.nii.gz", atlas);
  write_regions_json(root / "atlas" / "regions.json", anatomy);

  // The cohort is drawn sequentially (the far-date pattern counts sessions in cohort order),
  // then rendered one subject per thread.
  std::vector<Subject> subjects;
  int counter = 0;
  for (int i = 0; i < opt.subjects; ++i) subjects.push_back(sample_subject(opt.seed, i, &counter));
  const auto faults = fault_targets(opt.faults, opt.subjects);
  std::vector<SubjectOutput> outputs(subjects.size());
  std::vector<std::vector<std::pair<std::string, Rendered>>> kept(subjects.size());
  std::atomic<int> done{0}, sessions_done{0};
  std::mutex progress_mutex;
  std::string error;
#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < opt.subjects; ++i) {
    try {
      auto* keep = opt.montage && i < opt.montage_subjects ? &kept[size_t(i)] : nullptr;
      outputs[size_t(i)] = process_subject(opt, anatomy, atlas, subjects[size_t(i)], i, faults, keep);
      sessions_done += int(subjects[size_t(i)].sessions.size());
      const int d = ++done;
      if (opt.progress) {
        std::lock_guard<std::mutex> lock(progress_mutex);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "\r[cpets-phantom] %d/%d subjects, %d sessions, %.1f s", d, opt.subjects,
                     sessions_done.load(), s);
        std::fflush(stderr);
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(progress_mutex);
      if (error.empty()) error = std::string(e.what()) + " (subject " + subjects[size_t(i)].id + ")";
    }
  }
  if (opt.progress) std::fprintf(stderr, "\n");
  if (!error.empty()) throw std::runtime_error("phantom: " + error);

  std::string cohort = kCohortHeader, truth = truth_header(opt.tracers), faults_csv = "fault,Subject,date,where\n";
  std::map<std::string, std::pair<std::string, std::string>> cf;
  for (const auto& iv : opt.interventions) cf[iv.name] = {kCohortHeader, truth_header(opt.tracers)};
  for (size_t i = 0; i < outputs.size(); ++i) {
    for (const auto& r : outputs[i].rows) cohort += r.line();
    truth += outputs[i].truth;
    for (const auto& f : outputs[i].faults) faults_csv += f + "\n", sum.faults.push_back(f);
    for (const auto& [name, rt] : outputs[i].counterfactual) {
      for (const auto& r : rt.first) cf[name].first += r.line();
      cf[name].second += rt.second;
    }
    sum.sessions += int(subjects[i].sessions.size());
    sum.images += outputs[i].images;
  }
  write_text_atomic((root / "cohort.csv").string(), cohort);
  write_text_atomic((root / "truth.csv").string(), truth);
  if (!opt.faults.empty()) write_text_atomic((root / "faults.csv").string(), faults_csv);
  for (const auto& [name, ct] : cf) {
    write_text_atomic((root / "counterfactual" / name / "cohort.csv").string(), ct.first);
    write_text_atomic((root / "counterfactual" / name / "truth.csv").string(), ct.second);
  }
  if (opt.montage)
    for (const auto& per_subject : kept)
      for (const auto& [name, r] : per_subject) {
        std::vector<MontageRow> rows{{&r.t1, "T1", ColorMap::grey, std::nullopt}};
        for (size_t t = 0; t < r.pet.size(); ++t)
          rows.push_back({&r.pet[t], upper(tracer_name(opt.tracers[t])), ColorMap::hot, std::nullopt});
        fs::create_directories(root / "montage");
        // A paramedian sagittal slice: the exact midline runs through the interhemispheric fissure.
        const auto& g = opt.grid.shape;
        MontageOptions mo;
        mo.point = std::array<int64_t, 3>{g[0] / 2, g[1] / 2, std::min(g[2] - 1, g[2] / 2 + g[2] / 12)};
        write_montage((root / "montage" / (name + ".png")).string(), rows, mo);
      }
  sum.subjects = opt.subjects;
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

}  // namespace cpets::io::phantom
