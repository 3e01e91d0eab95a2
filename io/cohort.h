// The cohort table (ADNI-style CSV): reading with row-by-row problem reports, the 6-month pairing
// of PET, T1 and CSF records, the seeded subject-level 4:1:1 split, min–max ranges fitted on the
// training split, and the image paths of the phantom/ADNI-like folder layout.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cpets::io {

// ---- dates -----------------------------------------------------------------------------------
// Days since 1970-01-01 in the proleptic Gregorian calendar.
int64_t days_from_civil(int year, int month, int day);
// ISO "2011-06-01" or ADNI's "6/1/2011" (month/day/year); nullopt when unparseable or invalid.
std::optional<int64_t> parse_date(std::string_view s);
std::string format_date(int64_t days);  // ISO

// The paper's "6 months", made exact: 183 days (⌈365.25 / 2⌉). Pairing requires gaps < 183 days,
// so 182 days pairs and 183 does not.
inline constexpr int64_t kSixMonthsDays = 183;

// ---- CSV ---------------------------------------------------------------------------------------
struct CsvTable {
  std::string path;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<int> lines;  // 1-based line where each row starts (the header is line 1)
};
// RFC 4180: quoted fields, "" escapes, commas and newlines inside quotes, CRLF or LF, a UTF-8 BOM.
// Rows are returned as they are, even with the wrong number of fields (the caller reports those).
CsvTable read_csv(const std::string& path);  // throws naming the file and line (also for text that is not UTF-8)
// The byte offset of the first invalid UTF-8 sequence (overlong forms and surrogates included).
std::optional<size_t> invalid_utf8_at(std::string_view s);
// Control and non-ASCII bytes as \xNN, for messages that quote untrusted text.
std::string printable(std::string_view s);
// Quotes fields that need it; atomic (temporary file renamed into place).
void write_csv(const std::string& path, const std::vector<std::string>& header,
               const std::vector<std::vector<std::string>>& rows);

// ---- cohort rows --------------------------------------------------------------------------------
enum class Censor { none, below, above };  // "<200" is below the assay range, ">1700" above

struct CsfValue {
  double value = NAN;  // censored values are mapped to the bound (">1700" → 1700)
  Censor censored = Censor::none;
  std::string raw;  // as written in the table
};
std::optional<CsfValue> parse_csf(std::string_view s);  // "1006.0", ">1700", "<200"

struct CohortRow {
  std::string subject, dx, tracer;  // dx ∈ {CN, MCI, AD}; tracer ∈ {AV45, AV1451}
  int64_t t1_date = 0, pet_date = 0, csf_date = 0;
  CsfValue abeta, tau, ptau;
  double age = 0, pteducat = 0;
  int sex = 0, apoe4 = 0;  // sex 0 = female, 1 = male; APOE4 = ε4 allele count
  std::string split;       // the optional "split" column of a paired table
  // The optional progression columns (the downstream classifiers need them): the diagnosis 36
  // months after this session ("" when unknown) and the date of MCI → AD conversion, if any.
  std::string dx_36m;
  std::optional<int64_t> conversion_date;
  int line = 0;
};

inline const std::vector<std::string>& cohort_columns() {
  static const std::vector<std::string> cols = {"Subject", "DX",    "T1_date", "PET_date", "CSF_date",
                                                "ABETA",   "TAU",   "PTAU",    "Age",      "Sex",
                                                "APOE4",   "PTEDUCAT", "Tracer"};
  return cols;
}

// ADNI's names for our columns, as its tables export them, each taken when the column itself is
// absent, in this order: Subject ← PTID, RID; Sex ← PTGENDER; ABETA ← ABETA42.
inline const std::vector<std::pair<std::string, std::vector<std::string>>>& cohort_column_aliases() {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> aliases = {
      {"Subject", {"PTID", "RID"}}, {"Sex", {"PTGENDER"}}, {"ABETA", {"ABETA42"}}};
  return aliases;
}

enum class MissingPolicy { fail, skip_row };
MissingPolicy parse_missing_policy(const std::string& s);  // "fail" or "skip"

struct RowIssue {
  int line = 0;
  std::string column, value, reason;
  std::string describe(const std::string& path) const;  // "cohort.csv:17: ABETA = '' (missing)"
};

struct Cohort {
  std::string path;
  std::vector<CohortRow> rows;
  std::vector<RowIssue> issues;  // of the skipped rows (skip_row policy)
  int rows_read = 0, rows_skipped = 0;
};

// Reads a cohort table. A missing column throws, naming the file, the column and the columns
// found. Missing or unparseable values are collected row by row; MissingPolicy::fail throws
// listing them, skip_row drops those rows and writes a warning listing them to `warnings`.
Cohort read_cohort(const std::string& path, MissingPolicy policy = MissingPolicy::fail,
                   std::ostream* warnings = nullptr);

// ---- pairing --------------------------------------------------------------------------------------
struct PairedRecord {
  std::string subject, dx, tracer;
  int64_t pet_date = 0, t1_date = 0, csf_date = 0;
  CsfValue abeta, tau, ptau;
  double age = 0, pteducat = 0;
  int sex = 0, apoe4 = 0;
  int64_t max_gap_days = 0;  // max(|PET−T1|, |PET−CSF|, |T1−CSF|)
  std::string split;         // "train", "val" or "test" once assigned
  std::string dx_36m;                      // as CohortRow
  std::optional<int64_t> conversion_date;  // as CohortRow
};

struct RejectedSession {
  std::string subject, tracer;
  int64_t pet_date = 0;
  int64_t best_gap_days = 0;  // the smallest max-gap any T1/CSF candidate gave
};

struct Pairing {
  std::vector<PairedRecord> paired;
  std::vector<RejectedSession> rejected;
  int sessions = 0;  // distinct (Subject, Tracer, PET_date)
};

// One record per PET session (Subject, Tracer, PET_date). Candidates are every T1 date and every
// CSF record (date + values) among the subject's rows; the pair (T1, CSF) minimising
// max(|PET−T1|, |PET−CSF|, |T1−CSF|) wins, ties by earliest T1 then earliest CSF date, and it is
// kept if that maximum is < kSixMonthsDays. Demographics come from the session's own row (the
// first one when a session appears on several rows). Output is sorted by subject, tracer, date.
Pairing pair_sessions(const Cohort& cohort);

// ---- diagnosis labels (the downstream classifiers) -----------------------------------------------
enum class DiagnosisTask { pmci_vs_smci, ad_vs_cn };
// pMCI vs sMCI: an MCI session with a known DX_36m is 1 (progressive: AD within 36 months) or 0
// (stable); a session on or after the subject's conversion date is not MCI any more and, like
// every non-MCI session or one without DX_36m, has no label (the reference drops a converter's
// post-conversion sessions). AD vs CN: AD 1, CN 0, MCI no label.
std::optional<int> diagnosis_label(const PairedRecord& r, DiagnosisTask task);

// ---- split ------------------------------------------------------------------------------------------
// A subject's position in [0, 1) from a hash of (seed, subject ID): train below 4/6, val below
// 5/6, test above. Depends on nothing else, so adding subjects never moves existing ones.
double subject_unit(uint64_t seed, std::string_view subject);
std::string split_of(uint64_t seed, std::string_view subject);
void assign_splits(std::vector<PairedRecord>& records, uint64_t seed);

// Min–max ranges of the continuous columns (ABETA, TAU, PTAU, Age, PTEDUCAT).
struct Range {
  double min = 0, max = 0;
};
using NormRanges = std::map<std::string, Range>;
inline const std::vector<std::string>& continuous_columns() {
  static const std::vector<std::string> cols = {"ABETA", "TAU", "PTAU", "Age", "PTEDUCAT"};
  return cols;
}
// Fitted on the records whose split is "train" only; throws if there are none.
NormRanges fit_ranges(const std::vector<PairedRecord>& records);

// The normalised tabular values: continuous (v − min)/(max − min) with the saved ranges, not
// clipped (a test value may leave [0, 1]); Sex and APOE4 raw.
struct Tabular {
  double abeta = 0, tau = 0, ptau = 0, age = 0, pteducat = 0;
  double sex = 0, apoe4 = 0;
};
Tabular normalise(const PairedRecord& r, const NormRanges& ranges);
// Model inputs (model.md §4): B_CSF = [ABETA] for AV45, [TAU, PTAU] for AV1451;
// M = [Age, Sex, APOE4, PTEDUCAT].
std::vector<float> csf_inputs(const PairedRecord& r, const NormRanges& ranges);
std::vector<float> covariate_inputs(const PairedRecord& r, const NormRanges& ranges);

struct SplitInfo {
  uint64_t seed = 0;
  std::map<std::string, std::vector<std::string>> subjects;  // split → sorted subject IDs
  NormRanges ranges;
};
SplitInfo make_split_info(const std::vector<PairedRecord>& records, uint64_t seed);
void save_split_json(const std::string& path, const SplitInfo& info);  // atomic
SplitInfo load_split_json(const std::string& path);

// ---- tables and files -----------------------------------------------------------------------------
// The paired table: the cohort columns (CSF strings as read, censoring included), DX_36m and
// Conversion_date (empty when unknown), max_gap_days and split; read back by read_paired.
void write_paired_csv(const std::string& path, const std::vector<PairedRecord>& records);
std::vector<PairedRecord> read_paired(const std::string& path);

// Paths relative to the cohort folder: t1/<Subject>/<T1_date>/t1.nii.gz and
// pet/<Subject>/<PET_date>/<tracer lowercase>.nii.gz.
struct ImagePaths {
  std::string t1, pet;
};
ImagePaths image_paths(const PairedRecord& r);
// One line per missing file: "pet/002_S_0413/2011-06-01/av45.nii.gz (002_S_0413, PET 2011-06-01)".
std::vector<std::string> missing_images(const std::vector<PairedRecord>& records, const std::string& cohort_dir);

}  // namespace cpets::io
