// cpets-infer: synthesise PET from T1 + tabular data with a trained Causal PETS checkpoint
// (docs/model.md §1 and §6), optionally under interventions do(X = x).
//
//   one subject:  cpets-infer --checkpoint RUN --t1 t1.nii.gz --age 74 --sex 1 --apoe4 1 --education 16
//                             --abeta 812 --out OUT [--do apoe4=0 --do abeta=1500]
//                 (an AV1451 checkpoint takes --tau and --ptau instead of --abeta)
//   a split:      cpets-infer --checkpoint RUN --cohort DIR --split test --out OUT [--do apoe4=0]
//
// Writes the synthetic PET as NIfTI on the input T1's grid and affine (values relative to the
// image maximum, as the model was trained; ε = 0, i.e. decoded from μ_S), a PNG montage, and for
// each --do the counterfactual PET and the difference map counterfactual − factual, made from
// the same abducted S. Tabular values are in raw units and normalised with the checkpoint's
// training ranges (never refitted). In cohort mode with an atlas, prints the mean SUVR change
// each intervention causes (cortical and the six ROIs) with paired t-tests, and on a phantom
// cohort generated with the same --do (cpets-phantom --do apoe4=0) the true change beside it.
// Exit codes: 0 done, 1 runtime failure (files, data), 2 bad command line.
#include <CLI/CLI.hpp>

#include "cli_main.h"
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/causal.h"
#include "eval/inference.h"
#include "eval/stats.h"
#include "eval/suvr.h"
#include "io/cohort.h"
#include "io/files.h"
#include "io/nifti.h"
#include "io/png.h"
#include "train/checkpoint.h"
#include "train/data.h"

namespace {

using namespace cpets;
namespace fs = std::filesystem;

using tools::UsageError;

struct Args {
  std::string checkpoint, out, t1, name, cohort, split = "test", atlas;
  std::optional<double> age, sex, apoe4, education, abeta, tau, ptau;
  std::vector<std::string> interventions;
  int threads = 0;
  bool no_montage = false;
  std::string device = "cpu";
};

// One input to synthesise from.
struct Job {
  std::string label;       // "002_S_0413 2011-06-01" or the --name
  fs::path out_dir;        // where its files go
  std::string t1_path;
  std::string pet_path;    // real PET when known (cohort mode), for the montage and SUVR
  io::PairedRecord record; // raw tabular values (tracer set)
};

struct Outcome {
  eval::Suvr factual_suvr;          // of the synthetic PET (NaN without an atlas)
  std::vector<std::optional<eval::Suvr>> cf_suvr;  // per intervention; nullopt: no such world for it
};

// SUVR of a synthetic volume; NaN when it has no signal in the reference region (an untrained
// model can produce that), which is a result to show, not a reason to stop.
eval::Suvr suvr_or_nan(const io::Volume& v, const eval::Atlas* atlas, const std::string& label) {
  eval::Suvr s;
  s.cortical = s.reference_mean = NAN;
  s.roi.fill(NAN);
  if (!atlas) return s;
  std::string why;
  s = eval::suvr_or_nan(v, *atlas, &why);
  if (!why.empty()) std::fprintf(stderr, "warning: %s: no SUVR for the synthetic PET: %s\n", label.c_str(), why.c_str());
  return s;
}

std::string upper(std::string s) {
  for (auto& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// ---- the single-subject record ----------------------------------------------------------------

io::CsfValue csf_value(double v) {
  io::CsfValue c;
  c.value = v;
  c.raw = std::to_string(v);
  return c;
}

io::PairedRecord single_record(const Args& a, const std::string& tracer) {
  std::vector<std::string> missing;
  auto need = [&](const std::optional<double>& v, const char* flag) {
    if (!v) missing.push_back(flag);
  };
  need(a.age, "--age");
  need(a.sex, "--sex");
  need(a.apoe4, "--apoe4");
  need(a.education, "--education");
  if (tracer == "AV45") {
    need(a.abeta, "--abeta");
    if (a.tau || a.ptau) throw UsageError("this checkpoint is an AV45 model: its CSF input is --abeta, not --tau/--ptau");
  } else {
    need(a.tau, "--tau");
    need(a.ptau, "--ptau");
    if (a.abeta) throw UsageError("this checkpoint is an AV1451 model: its CSF inputs are --tau and --ptau, not --abeta");
  }
  if (!missing.empty()) {
    std::string m;
    for (const auto& s : missing) m += (m.empty() ? "" : ", ") + s;
    throw UsageError("one subject (--t1) needs its tabular values in raw units: missing " + m);
  }
  if (*a.sex != 0 && *a.sex != 1) throw UsageError("--sex is 0 (female) or 1 (male)");
  if (*a.apoe4 != 0 && *a.apoe4 != 1 && *a.apoe4 != 2) throw UsageError("--apoe4 is the ε4 allele count: 0, 1 or 2");
  io::PairedRecord r;
  r.subject = a.name.empty() ? "subject" : a.name;
  r.tracer = tracer;
  r.age = *a.age;
  r.sex = int(*a.sex);
  r.apoe4 = int(*a.apoe4);
  r.pteducat = *a.education;
  if (a.abeta) r.abeta = csf_value(*a.abeta);
  if (a.tau) r.tau = csf_value(*a.tau);
  if (a.ptau) r.ptau = csf_value(*a.ptau);
  return r;
}

std::string stem_of(const std::string& path) {
  std::string s = fs::path(path).filename().string();
  for (const char* ext : {".nii.gz", ".nii"})
    if (s.size() > std::strlen(ext) && s.compare(s.size() - std::strlen(ext), std::string::npos, ext) == 0)
      return s.substr(0, s.size() - std::strlen(ext));
  return s;
}

// ---- cohort mode -------------------------------------------------------------------------------

std::vector<Job> cohort_jobs(const Args& a, const train::InferenceBundle& b) {
  train::DataConfig cfg = b.meta.config.data;
  cfg.cohort = a.cohort;
  cfg.paired_csv.clear();  // pair and split the given cohort with the checkpoint's split seed
  cfg.tracer = b.tracer;
  const train::CohortSplits splits = train::open_cohort(cfg, &b.ranges);
  std::vector<const train::Session*> chosen;
  auto add = [&](const std::vector<train::Session>& v) {
    for (const auto& s : v) chosen.push_back(&s);
  };
  if (a.split == "train" || a.split == "all") add(splits.train);
  if (a.split == "val" || a.split == "all") add(splits.val);
  if (a.split == "test" || a.split == "all") add(splits.test);
  if (chosen.empty())
    throw std::runtime_error("the " + a.split + " split of " + a.cohort + " has no " + b.tracer + " session");
  std::vector<Job> jobs;
  for (const auto* s : chosen) {
    Job j;
    const std::string date = io::format_date(s->record.pet_date);
    j.label = s->record.subject + " " + date;
    j.out_dir = fs::path(a.out) / s->record.subject / date;
    j.t1_path = s->t1_path;
    j.pet_path = s->pet_path;
    j.record = s->record;
    jobs.push_back(std::move(j));
  }
  return jobs;
}

// ---- one job -------------------------------------------------------------------------------------

void write_volume(const fs::path& path, const io::Volume& v) {
  fs::create_directories(path.parent_path());
  io::write_nifti(path.string(), v);
}

Outcome run_job(const Job& job, const eval::Synthesiser& syn, const train::InferenceBundle& b,
                const std::vector<eval::Intervention>& ivs, const eval::Atlas* native_atlas, bool montage) {
  const auto& volume = b.model_config.volume;
  const train::PreparedVolume t1 = train::prepare_volume(job.t1_path, volume, b.model_config.voxel_mm);
  std::optional<eval::Atlas> atlas_here;
  if (native_atlas) {
    try {
      atlas_here = eval::atlas_on_grid(*native_atlas, t1.volume.shape, t1.volume.affine);
    } catch (const std::invalid_argument& e) {  // e.g. the model volume crops the reference region away
      std::fprintf(stderr, "warning: %s: no SUVR: the atlas does not fit the model grid: %s\n", job.label.c_str(), e.what());
    }
  }
  const eval::Atlas* atlas = atlas_here ? &*atlas_here : nullptr;
  const eval::TabularInputs tab = eval::tabular_inputs(job.record, b.ranges, b.tracer);
  const models::Abduction s = syn.abduct(t1.volume, tab.covariates);  // S, abducted once
  const io::Volume factual = syn.synthesise(s, tab, t1.volume);
  const io::Volume factual_native = train::restore_to_grid(factual, t1.original);
  write_volume(job.out_dir / "pet_syn.nii.gz", factual_native);

  Outcome out;
  out.factual_suvr = suvr_or_nan(factual, atlas, job.label);
  std::vector<io::Volume> cfs, diffs;
  std::vector<std::string> cf_names;
  for (const auto& iv : ivs) {
    const std::optional<io::PairedRecord> cf_record = eval::apply_intervention(job.record, iv);
    if (!cf_record) {  // e.g. do(APOE4 − 1) for a non-carrier
      out.cf_suvr.push_back(std::nullopt);
      continue;
    }
    const io::Volume cf = syn.synthesise(s, eval::tabular_inputs(*cf_record, b.ranges, b.tracer), t1.volume);
    const io::Volume diff = eval::difference(cf, factual);
    const fs::path dir = job.out_dir / eval::intervention_folder(iv);
    write_volume(dir / "pet_syn.nii.gz", train::restore_to_grid(cf, t1.original));
    write_volume(dir / "diff.nii.gz", train::restore_to_grid(diff, t1.original));
    out.cf_suvr.push_back(suvr_or_nan(cf, atlas, job.label + " do(" + iv.name + ")"));
    cf_names.push_back(iv.name);
    cfs.push_back(cf);
    diffs.push_back(diff);
  }

  if (montage) {
    std::optional<io::Volume> real;
    if (!job.pet_path.empty()) real = train::prepare_volume(job.pet_path, volume, b.model_config.voxel_mm).volume;
    float hi = 1e-6f;
    for (float v : factual.data) hi = std::max(hi, v);
    if (real)
      for (float v : real->data) hi = std::max(hi, v);
    const std::pair<float, float> range{0.f, hi};
    std::vector<io::MontageRow> rows{{&t1.volume, "T1", io::ColorMap::grey, std::nullopt}};
    if (real) rows.push_back({&*real, "REAL PET", io::ColorMap::hot, range});
    rows.push_back({&factual, "SYNTHETIC", io::ColorMap::hot, range});
    for (size_t k = 0; k < cfs.size(); ++k) {
      rows.push_back({&cfs[k], upper("DO " + cf_names[k]), io::ColorMap::hot, range});
      rows.push_back({&diffs[k], "DIFF", io::ColorMap::diverging, std::nullopt});  // its own ±max|diff|
    }
    io::write_montage((job.out_dir / "montage.png").string(), rows);
  }
  return out;
}

// ---- the intervention summary over a split -------------------------------------------------------

// "+0.01234", or "+3.2e-06" for changes too small for five decimals (an untrained model's).
std::string signed_value(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, x != 0 && std::fabs(x) < 1e-4 ? "%+8.1e" : "%+8.5f", x);
  return buf;
}

// Per intervention and region: the mean synthetic ΔSUVR with its paired t-test, and on a phantom
// cohort (truth.csv, counterfactual/<world>/truth.csv) the true ΔSUVR beside it with the
// per-session correlation and slope of model against truth. Also written to interventions.json.
void report_interventions(const std::vector<eval::Intervention>& ivs, const std::vector<Job>& jobs,
                          const std::vector<Outcome>& outcomes, const std::string& cohort, const std::string& tracer,
                          const fs::path& out_dir) {
  if (outcomes.size() < 2) return;
  const auto factual_truth =
      cohort.empty() ? std::nullopt : eval::read_suvr_truth((fs::path(cohort) / "truth.csv").string(), tracer);
  std::printf("intervention effects on synthetic SUVR over %zu sessions (counterfactual − factual, paired t-test%s):\n",
              outcomes.size(), factual_truth ? "; the phantom's true effect beside it" : "");
  nlohmann::json all = nlohmann::json::array();
  for (size_t k = 0; k < ivs.size(); ++k) {
    std::optional<eval::SuvrTruth> cf_truth;
    if (factual_truth)
      cf_truth = eval::read_suvr_truth(
          (fs::path(cohort) / "counterfactual" / eval::phantom_world_folder(ivs[k].name) / "truth.csv").string(), tracer);
    eval::EffectAccumulator acc(ivs[k].name);
    for (size_t i = 0; i < outcomes.size(); ++i) {
      if (!outcomes[i].cf_suvr[k]) {
        acc.skip();
        continue;
      }
      const eval::RegionSuvr a = eval::region_suvr(outcomes[i].factual_suvr), b = eval::region_suvr(*outcomes[i].cf_suvr[k]);
      std::optional<std::pair<eval::RegionSuvr, eval::RegionSuvr>> truth;
      if (cf_truth) {
        const std::pair<std::string, std::string> key{jobs[i].record.subject, io::format_date(jobs[i].record.pet_date)};
        const auto x = factual_truth->find(key);
        const auto y = cf_truth->find(key);
        if (x != factual_truth->end() && y != cf_truth->end()) truth = std::make_pair(x->second, y->second);
      }
      acc.add(a, b, truth);
    }
    const eval::EffectSummary sum = acc.summary();
    all.push_back(sum.to_json());
    std::printf("  do(%s)  %lld sessions%s%s\n", ivs[k].name.c_str(), static_cast<long long>(sum.sessions),
                sum.skipped ? (", " + std::to_string(sum.skipped) + " skipped: the world does not exist for them").c_str() : "",
                factual_truth && !cf_truth ? "  (no counterfactual truth: cpets-phantom --do writes it)" : "");
    for (size_t r = 0; r < 7; ++r) {
      if (!sum.regions[r]) continue;
      const eval::RegionEffect& e = *sum.regions[r];
      std::printf("    %-7s ΔSUVR %s  t %7.2f  p %-8.2g", eval::region_name(r).c_str(), signed_value(e.mean_model).c_str(),
                  e.t, e.p);
      if (std::isfinite(e.mean_true)) {
        std::printf("  true ΔSUVR %s", signed_value(e.mean_true).c_str());
        if (std::isfinite(e.r)) std::printf("  r(model, true) %+.2f  slope %+.2f", e.r, e.slope);
      }
      std::printf("\n");
    }
  }
  io::write_text_atomic((out_dir / "interventions.json").string(), all.dump(2) + "\n");
}

int run(const Args& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  const bool single = !a.t1.empty(), cohort = !a.cohort.empty();
  if (single == cohort) throw UsageError("give either --t1 FILE (one subject) or --cohort DIR (a split), not " +
                                         std::string(single ? "both" : "neither"));
  if (cohort && a.split != "train" && a.split != "val" && a.split != "test" && a.split != "all")
    throw UsageError("--split is train, val, test or all, got '" + a.split + "'");
  std::vector<eval::Intervention> ivs;
  for (const auto& text : a.interventions) {
    try {
      ivs.push_back(eval::parse_intervention(text));
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }
  if (single && !fs::is_regular_file(a.t1)) throw std::runtime_error("--t1 " + a.t1 + ": no such file");

  const train::InferenceBundle bundle = train::load_for_inference(a.checkpoint, a.device);
  for (const auto& iv : ivs) {
    try {
      eval::check_intervention_for_tracer(iv, bundle.tracer);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }
  std::vector<Job> jobs;
  if (single) {
    Job j;
    j.record = single_record(a, bundle.tracer);
    j.label = a.name.empty() ? stem_of(a.t1) : a.name;
    j.out_dir = a.out;
    j.t1_path = a.t1;
    jobs.push_back(j);
  } else {
    jobs = cohort_jobs(a, bundle);
  }

  // The atlas for SUVR: --atlas, or the cohort's own atlas/ when it has one; on the model grid.
  std::optional<eval::Atlas> atlas;
  std::string atlas_path = a.atlas;
  if (atlas_path.empty() && cohort && fs::is_regular_file(fs::path(a.cohort) / "atlas" / "regions.json"))
    atlas_path = a.cohort;
  if (!atlas_path.empty()) atlas = eval::load_atlas(atlas_path);  // moved onto each T1's model grid per job

  std::fprintf(stderr, "checkpoint %s (%s, step %lld), %zu input%s, %zu intervention%s\n", bundle.path.c_str(),
               bundle.tracer.c_str(), static_cast<long long>(bundle.meta.state.step), jobs.size(),
               jobs.size() == 1 ? "" : "s", ivs.size(), ivs.size() == 1 ? "" : "s");
  const eval::Synthesiser syn(bundle.model);
  std::vector<Outcome> outcomes;
  std::vector<std::vector<std::string>> index;
  for (const auto& job : jobs) {
    outcomes.push_back(run_job(job, syn, bundle, ivs, atlas ? &*atlas : nullptr, !a.no_montage));
    std::string line = job.label + " → " + (job.out_dir / "pet_syn.nii.gz").string();
    if (atlas) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "  SUVR %.4f", outcomes.back().factual_suvr.cortical);
      line += buf;
      for (size_t k = 0; k < ivs.size(); ++k) {
        const auto& cf = outcomes.back().cf_suvr[k];
        if (cf) std::snprintf(buf, sizeof buf, "  do(%s) %.4f", ivs[k].name.c_str(), cf->cortical);
        else std::snprintf(buf, sizeof buf, "  do(%s) does not exist here", ivs[k].name.c_str());
        line += buf;
      }
    }
    std::printf("%s\n", line.c_str());
    index.push_back({job.record.subject, io::format_date(job.record.pet_date), job.t1_path,
                     (job.out_dir / "pet_syn.nii.gz").string()});
  }
  if (cohort) io::write_csv((fs::path(a.out) / "index.csv").string(), {"Subject", "PET_date", "t1", "pet_syn"}, index);
  if (atlas && !ivs.empty()) report_interventions(ivs, jobs, outcomes, a.cohort, bundle.tracer, a.out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cpets-infer: synthesise PET from T1 + tabular data with a Causal PETS checkpoint (ε = 0), "
               "optionally under interventions --do VAR=VALUE"};
  Args a;
  app.add_option("--checkpoint", a.checkpoint, "a run folder (its best checkpoint) or a .safetensors/.json checkpoint")
      ->required();
  app.add_option("--out", a.out, "output folder")->required();
  app.add_option("--t1", a.t1, "one subject: its T1 NIfTI (any grid; the output is written on it)");
  app.add_option("--name", a.name, "one subject: a name for the montage and the record");
  app.add_option("--age", a.age, "one subject: age in years");
  app.add_option("--sex", a.sex, "one subject: 0 female, 1 male");
  app.add_option("--apoe4", a.apoe4, "one subject: APOE ε4 allele count 0/1/2");
  app.add_option("--education", a.education, "one subject: years of education (PTEDUCAT)");
  app.add_option("--abeta", a.abeta, "one subject, AV45 model: CSF Aβ42 in pg/mL");
  app.add_option("--tau", a.tau, "one subject, AV1451 model: CSF total tau in pg/mL");
  app.add_option("--ptau", a.ptau, "one subject, AV1451 model: CSF p-tau181 in pg/mL");
  app.add_option("--cohort", a.cohort, "a cohort folder (cohort.csv, t1/, pet/): synthesise a whole split");
  app.add_option("--split", a.split, "with --cohort: train, val, test (default) or all; split as the checkpoint's run did");
  app.add_option("--atlas", a.atlas, "atlas for SUVR (regions.json or its folder); default: the cohort's atlas/");
  app.add_option("--do", a.interventions,
                 "intervention VAR=VALUE in raw units (age, sex, apoe4, education, abeta, tau, ptau), or relative: "
                 "apoe4-1 / apoe4+1 (each session's own count ± 1; sessions where that is impossible are skipped), "
                 "abeta*0.5; "
                 "comma-join for one joint world; repeatable");
  app.add_option("--threads", a.threads, "OpenMP threads (default: OMP_NUM_THREADS / all cores)")->check(CLI::NonNegativeNumber);
  app.add_option("--device", a.device, "where the model runs: cpu (default), cuda or cuda:N");
  app.add_flag("--no-montage", a.no_montage, "do not write montage.png");
  return tools::run_main<train::ConfigError>(app, argc, argv, [&] { return run(a); });
}
