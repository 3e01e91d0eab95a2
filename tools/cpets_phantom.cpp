// cpets-phantom: writes the phantom cohort (docs/phantom.md) in the ADNI-like layout.
#include <CLI/CLI.hpp>

#include "cli_main.h"

#include <cstdio>
#include <exception>

#include "io/phantom.h"

int main(int argc, char** argv) {
  using namespace cpets::io::phantom;
  CLI::App app{"cpets-phantom: an ADNI-like cohort with a known causal truth (T1, AV45/AV1451 PET, CSF, atlas)"};
  Options opt;
  std::string preset = "demo", tracer = "av45", faults;
  std::vector<std::string> interventions;
  app.add_option("--out", opt.out_dir, "output directory")->required();
  app.add_option("--subjects", opt.subjects, "number of subjects (each has 1-3 sessions)")->check(CLI::PositiveNumber);
  app.add_option("--seed", opt.seed, "random seed (same seed → identical files)");
  app.add_option("--preset", preset, "grid: demo (48×64×48 at 3 mm) or full (96×128×96 at 1.5 mm)")
      ->check(CLI::IsMember({"demo", "full"}));
  app.add_option("--tracer", tracer, "av45, av1451 or both")->check(CLI::IsMember({"av45", "av1451", "both"}));
  app.add_option("--do", interventions,
                 "counterfactual world, e.g. apoe4=0, apoe4-1 (each subject's own count − 1; non-carriers left out), abeta=800 "
                 "or abeta*0.5 (repeatable; a comma joins assignments)");
  app.add_option("--faults", faults,
                 "comma-separated faults to inject: missing_csf,bad_date,truncated_image,not_nifti,wrong_grid,nan_voxel");
  app.add_flag("--montage", opt.montage, "write PNG montages (T1 grey, PET hot) of the first subjects");
  app.add_option("--montage-subjects", opt.montage_subjects, "how many subjects --montage draws (default 3)");
  app.add_option("--templates", opt.template_dir, "directory with ch2bet.nii.gz, aal.nii.gz, aal.nii.txt (mricron-data)");
  app.add_flag("!--no-progress", opt.progress, "no progress line");
  return cpets::tools::run_main(app, argc, argv, [&] {
    opt.grid = preset_grid(preset);
    opt.tracers = parse_tracers(tracer);
    try {
      for (const auto& s : interventions) opt.interventions.push_back(parse_intervention(s));
      opt.faults = parse_faults(faults);
    } catch (const std::exception& e) {  // a bad --do or --faults value: a usage error
      throw cpets::tools::UsageError(e.what());
    }
    const Summary s = generate_cohort(opt);
    std::printf("cpets-phantom: %d subjects, %d sessions, %d images in %.1f s (%.1f subjects/min), %s grid %s at %g mm\n",
                s.subjects, s.sessions, s.images, s.seconds, s.subjects / s.seconds * 60, preset.c_str(),
                cpets::io::shape_string(opt.grid.shape).c_str(), opt.grid.voxel_mm);
    if (s.real_anatomy) std::printf("cpets-phantom: anatomy: %s\n", s.anatomy.c_str());
    else std::printf("cpets-phantom: *** WARNING: anatomy is the ANALYTIC HEAD fallback, not Colin27/AAL: %s\n", s.anatomy.c_str());
    for (const auto& f : s.faults) std::printf("cpets-phantom: injected fault %s\n", f.c_str());
    std::printf("cpets-phantom: wrote %s (cohort.csv, truth.csv, t1/, pet/, atlas/%s%s)\n", opt.out_dir.c_str(),
                opt.interventions.empty() ? "" : ", counterfactual/", opt.montage ? ", montage/" : "");
    return 0;
  });
}
