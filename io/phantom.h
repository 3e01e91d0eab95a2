// The phantom cohort (docs/phantom.md): an ADNI-like cohort drawn from a structural causal model
// whose truth is known, rendered on Colin27 + AAL anatomy (or an analytic head when those
// templates are absent), written in the same layout the real-data loader reads.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/volume.h"

namespace cpets::io::phantom {

// ---- the output grid ------------------------------------------------------------------------
struct GridSpec {
  std::array<int64_t, 3> shape{48, 64, 48};      // (D, H, W) = (z, y, x)
  double voxel_mm = 3.0;                          // isotropic
  std::array<double, 3> centre_mm{0, -17, 11};     // MNI point at the field-of-view centre
  Affine affine() const;
};
GridSpec demo_grid();  // 48×64×48 at 3 mm
GridSpec full_grid();  // 96×128×96 at 1.5 mm
GridSpec preset_grid(const std::string& name);  // "demo" | "full"; throws otherwise

enum class Tracer { av45, av1451 };
std::string tracer_name(Tracer t);  // "av45" / "av1451" (file names); the CSV writes "AV45"/"AV1451"
std::vector<Tracer> parse_tracers(const std::string& s);  // "av45", "av1451" or "both"

// ---- interventions and faults ---------------------------------------------------------------
// One counterfactual world: "apoe4=0", "abeta=800", the relative forms "apoe4-1" / "apoe4+1"
// (each session's own allele count ± 1; sessions where that is impossible are left out of the
// world) and "abeta*0.5" (the session's measured ABETA times a factor), or several joined by a
// comma.
struct Intervention {
  std::string name;               // directory name under counterfactual/
  std::optional<int> apoe4;       // do(APOE4 = a), a ∈ {0, 1, 2}
  std::optional<int> apoe4_shift; // do(APOE4 = APOE4 + k), k = ±1
  std::optional<double> abeta;    // do(ABETA = b) pg/mL, which sets A = (1700 − b)/1100 (clipped)
  std::optional<double> abeta_factor;  // do(ABETA = f · ABETA), the same rule on the product
  // false when the world does not exist for this subject (apoe4_shift leaves 0..2).
  bool applies_to(int apoe4_factual) const;
};
Intervention parse_intervention(const std::string& s);

enum class Fault { missing_csf, bad_date, truncated_image, not_nifti, wrong_grid, nan_voxel };
std::string fault_name(Fault f);
std::vector<Fault> parse_faults(const std::string& s);  // comma-separated names

// ---- the structural causal model ------------------------------------------------------------
enum class Dx { CN = 0, MCI = 1, AD = 2 };
std::string dx_name(Dx d);

// Every exogenous noise of one subject (drawn from the seed and the subject's index only).
struct SubjectNoise {
  double u_A = 0, u_T = 0, u_S = 0;  // latent-load noises (logit scale for A, T)
  double wm_binding = 1.6;           // AV45 white-matter non-specific uptake, U(1.5, 1.7)
  double head_noise = 0;             // log head-size deviation
  // MCI progression (docs/phantom.md "Disease progression"): the logit noise u_conv, the uniform
  // that decides conversion against its probability, and where in the 36 months it falls.
  double u_conv = 0, conversion_draw = 1, conversion_time = 0.5;
};
struct SessionNoise {
  double u_abeta = 0, u_tau = 0, u_ptau = 0;  // CSF assay noises
  std::array<double, 3> rot_deg{}, shift_mm{};  // small rigid jitter
  std::array<double, 6> bias{};                  // smooth T1 bias-field coefficients
  uint64_t voxel_noise_key = 0;                  // counter-based per-voxel noise stream
  int pet_day = 0, t1_offset_days = 0, csf_offset_days = 0;
};
struct Subject {
  std::string id;  // SSS_S_NNNN
  Dx dx = Dx::CN;
  double age = 73;  // at the first session
  int sex = 0;      // 0 = female, 1 = male
  int educ = 16, apoe4 = 0;
  SubjectNoise u;
  std::vector<SessionNoise> sessions;
};
// Latent and observed values of one session, possibly under an intervention.
struct SessionState {
  double age = 73, years = 0;  // years since the first session
  int apoe4 = 0;
  double A = 0, T = 0, s = 0;
  double abeta = 0, tau = 0, ptau = 0;  // uncensored CSF values
  bool abeta_set = false;               // ABETA fixed by do(abeta=…)
};

Subject sample_subject(uint64_t seed, int index, int* global_session_counter);

// An MCI subject converts to AD within 36 months of the first session with probability
// sigmoid(k0 + k_A·A + k_T·T + k_s·s + u_conv) at that session's latents (under `iv` when
// given: counterfactual worlds share u_conv and the draw); CN and AD subjects never do.
inline constexpr int kConversionWindowDays = 1096;  // 36 months
struct Progression {
  double probability = 0;
  bool converts = false;
  int conversion_day = -1;  // days since 1970-01-01; -1 for non-converters
};
Progression progression(const Subject& subj, const Intervention* iv = nullptr);
// The diagnosis at session k (AD from the conversion date on) and 36 months after it.
Dx session_dx(const Subject& subj, int session, const Progression& p);
Dx dx_in_36_months(const Subject& subj, int session, const Progression& p);
SessionState session_state(const Subject& subj, int session, const Intervention* iv = nullptr);
// ADNI-style CSF string: "<lo" / ">hi" outside the assay range, else one decimal.
std::string csf_string(double value, double lo, double hi);
std::string iso_date(int days_since_epoch);  // days since 1970-01-01 → "YYYY-MM-DD"

// ---- anatomy --------------------------------------------------------------------------------
struct Anatomy;  // template tissue maps on a working grid (phantom_anatomy.cpp)
struct AnatomyHandle {
  std::shared_ptr<const Anatomy> ptr;
  std::string source;  // "Colin27 + AAL (<dir>)" or "analytic head (templates not found in <dir>)"
  bool real = false;
};
// Loads ch2bet.nii.gz, aal.nii.gz (and aal.nii.txt) from `template_dir`, or builds the analytic
// head when any of them is missing. The working grid is derived from the output grid.
AnatomyHandle load_anatomy(const std::string& template_dir, const GridSpec& grid);
// The AAL labels (or the analytic head's) on the output grid, nearest neighbour.
Volume atlas_labels(const AnatomyHandle& a, const GridSpec& grid);

// Region label sets written to atlas/regions.json.
struct RegionSet { std::string name, description; std::vector<int> labels; };
std::vector<RegionSet> region_sets();  // cerebral_cortex, cerebellar_cortex, FC, TC, PC, OC, CI, OO

// ---- rendering ------------------------------------------------------------------------------
struct Rendered {
  Volume t1;                                 // skull-stripped, /max
  std::vector<Volume> pet;                   // one per requested tracer, /max
  std::vector<double> suvr;                  // atlas cortical SUVR of the noise-free PET, per tracer
  std::vector<std::array<double, 6>> roi_suvr;  // FC, TC, PC, OC, CI, OO per tracer
  std::vector<double> suvr_intrinsic;        // uptake-weighted subject-GM SUVR before blur
};
Rendered render_session(const AnatomyHandle& a, const GridSpec& grid, const Volume& atlas,
                        const Subject& subj, int session, const SessionState& st,
                        const std::vector<Tracer>& tracers);

// ---- the whole cohort -----------------------------------------------------------------------
struct Options {
  std::string out_dir;
  int subjects = 24;
  uint64_t seed = 1;
  GridSpec grid = demo_grid();
  std::vector<Tracer> tracers{Tracer::av45};
  std::vector<Intervention> interventions;
  std::vector<Fault> faults;
  bool montage = false;
  int montage_subjects = 3;
  std::string template_dir = "/usr/share/mricron/templates";
  std::optional<AnatomyHandle> anatomy;  // preloaded for this grid (tests, repeated runs); else loaded
  bool progress = true;  // a progress line on stderr
};
struct Summary {
  int subjects = 0, sessions = 0, images = 0;
  double seconds = 0;
  std::string anatomy;
  bool real_anatomy = false;
  std::vector<std::string> faults;  // "fault,Subject,date,where" lines, as in faults.csv (paths relative to out_dir)
};
Summary generate_cohort(const Options& opt);

}  // namespace cpets::io::phantom
