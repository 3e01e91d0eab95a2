// io/cohort: CSV reading, value parsing, the 6-month pairing rule, the subject-level split and
// the training-only min–max ranges.
#include <doctest/doctest.h>

#include <cmath>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "io/cohort.h"

using namespace cpets::io;
namespace fs = std::filesystem;

namespace {

const std::string kDir = std::string(CPETS_FIXTURES) + "/cohort/";

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() / ("cpets_cohort_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

const int64_t P = days_from_civil(2015, 6, 1);  // a reference PET date

// One cohort row with dates given as day offsets from P.
struct Row {
  std::string subject;
  int64_t t1, pet, csf;
  std::string abeta = "900", tracer = "AV45";
  double age = 72.5, educ = 16;
};

std::string write_rows(const TempDir& dir, const std::vector<Row>& rows, const std::string& name = "cohort.csv") {
  std::ofstream f(dir.file(name));
  f << "Subject,DX,T1_date,PET_date,CSF_date,ABETA,TAU,PTAU,Age,Sex,APOE4,PTEDUCAT,Tracer\n";
  for (const auto& r : rows)
    f << r.subject << ",MCI," << format_date(P + r.t1) << "," << format_date(P + r.pet) << "," << format_date(P + r.csf)
      << "," << r.abeta << ",250,24," << r.age << ",1,1," << r.educ << "," << r.tracer << "\n";
  return dir.file(name);
}

std::map<std::string, PairedRecord> by_subject(const Pairing& p) {
  std::map<std::string, PairedRecord> m;
  for (const auto& r : p.paired) m[r.subject] = r;
  return m;
}

std::vector<PairedRecord> synthetic_records(int first, int count, int sessions_per_subject = 1) {
  std::vector<PairedRecord> out;
  for (int s = first; s < first + count; ++s)
    for (int k = 0; k < sessions_per_subject; ++k) {
      PairedRecord r;
      char id[32];
      std::snprintf(id, sizeof id, "%03d_S_%04d", s % 941, s);
      r.subject = id;
      r.tracer = "AV45";
      r.pet_date = P + 400 * k;
      out.push_back(r);
    }
  return out;
}

}  // namespace

TEST_CASE("cohort: dates, ISO and ADNI's month/day/year") {
  CHECK(days_from_civil(1970, 1, 1) == 0);
  CHECK(days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28) == 2);  // 2000 is a leap year
  CHECK(days_from_civil(1900 + 200, 3, 1) - days_from_civil(2100, 2, 28) == 1);  // 2100 is not
  CHECK(parse_date("2011-06-15") == days_from_civil(2011, 6, 15));
  CHECK(parse_date("6/15/2011") == days_from_civil(2011, 6, 15));
  CHECK(parse_date(" 06/05/2011 ") == days_from_civil(2011, 6, 5));
  CHECK(parse_date("2012-02-29").has_value());
  for (const char* bad : {"", "2011-02-29", "2011-13-01", "2011-06-31", "15/6/2011", "2011/06/15", "20110615",
                          "2011-06-15T10:00", "June 2011", "2011-6"})
    CHECK_MESSAGE(!parse_date(bad).has_value(), bad);
  for (int64_t d = days_from_civil(1995, 1, 1); d < days_from_civil(2030, 1, 1); d += 37)
    CHECK(parse_date(format_date(d)) == d);
}

TEST_CASE("cohort: CSV with BOM, CRLF, quotes, commas and line breaks in quotes") {
  const CsvTable t = read_csv(kDir + "adni_style.csv");
  REQUIRE(t.header.size() == 14);
  CHECK(t.header[0] == "Subject");  // the BOM is not part of the name
  REQUIRE(t.rows.size() == 3);      // the trailing blank line is not a row
  CHECK(t.rows[0][0] == "002_S_0413");
  CHECK(t.rows[0][13] == "repeat scan, motion");
  CHECK(t.rows[1][13] == "quoted \"note\", with\r\na line break");
  CHECK(t.rows[2][13] == "");
  CHECK(t.lines == std::vector<int>{2, 3, 5});  // the third row starts after the two-line field
}

TEST_CASE("cohort: ADNI-style table, censored CSF values mapped to the bound and flagged") {
  const Cohort c = read_cohort(kDir + "adni_style.csv");
  REQUIRE(c.rows.size() == 3);
  const CohortRow& a = c.rows[0];
  CHECK(a.dx == "CN");
  CHECK(a.t1_date == days_from_civil(2011, 6, 1));
  CHECK(a.pet_date == days_from_civil(2011, 6, 15));
  CHECK(a.csf_date == days_from_civil(2011, 5, 20));
  CHECK(a.abeta.value == 1700);
  CHECK(a.abeta.censored == Censor::above);
  CHECK(a.abeta.raw == ">1700");
  CHECK(a.tau.value == 240.5);
  CHECK(a.tau.censored == Censor::none);
  CHECK(a.sex == 0);
  CHECK(a.tracer == "AV45");
  const CohortRow& b = c.rows[2];
  CHECK(b.dx == "AD");  // "Dementia" in ADNIMERGE
  CHECK(b.abeta.value == 200);
  CHECK(b.abeta.censored == Censor::below);
  CHECK(b.sex == 1);
  CHECK(b.apoe4 == 2);
  CHECK(b.tracer == "AV1451");
  CHECK(b.line == 5);
  CHECK(!parse_csf("about 900").has_value());
  CHECK(!parse_csf(">").has_value());
  CHECK(parse_csf("<8")->value == 8);
}

TEST_CASE("cohort: ADNI's own column names (PTID/RID, PTGENDER, ABETA42) are read; ours win when both exist") {
  TempDir dir;
  auto write = [&](const std::string& header, const std::string& row) {
    std::ofstream(dir.file("adni.csv")) << header << "\n" << row << "\n";
    return read_cohort(dir.file("adni.csv"));
  };
  const std::string rest = ",Dementia,2011-06-01,2011-06-15,2011-05-20,";
  // As ADNIMERGE-style exports name them, with VISCODE and RID as extra columns.
  Cohort c = write("RID,PTID,VISCODE,DX,T1_date,PET_date,CSF_date,ABETA42,TAU,PTAU,Age,PTGENDER,APOE4,PTEDUCAT,Tracer",
                   "413,002_S_0413,m12" + rest + ">1700,240.5,22,74.2,Female,1,16,AV45");
  REQUIRE(c.rows.size() == 1);
  CHECK(c.rows[0].subject == "002_S_0413");  // PTID before RID
  CHECK(c.rows[0].sex == 0);
  CHECK(c.rows[0].abeta.censored == Censor::above);
  CHECK(c.rows[0].dx == "AD");
  c = write("RID,DX,T1_date,PET_date,CSF_date,ABETA,TAU,PTAU,Age,Sex,APOE4,PTEDUCAT,Tracer",
            "413" + rest + "900,240,22,74,1,0,16,AV45");
  CHECK(c.rows[0].subject == "413");
  // Our own name wins over ADNI's when a table has both (the alias is then an ordinary extra column).
  c = write("Subject,PTID,DX,T1_date,PET_date,CSF_date,ABETA,ABETA42,TAU,PTAU,Age,Sex,APOE4,PTEDUCAT,Tracer",
            "S1,002_S_0413" + rest + "900,800,240,22,74,1,0,16,AV45");
  CHECK(c.rows[0].subject == "S1");
  CHECK(c.rows[0].abeta.value == 900);
  const std::string twice = error_of([&] {
    write("PTID,ptid,DX,T1_date,PET_date,CSF_date,ABETA,TAU,PTAU,Age,Sex,APOE4,PTEDUCAT,Tracer",
          "A,B" + rest + "900,240,22,74,1,0,16,AV45");
  });
  CHECK(twice.find("'PTID' (read as Subject) more than once") != std::string::npos);
}

TEST_CASE("cohort: the optional progression columns DX_36m and Conversion_date are read, paired and round-trip") {
  TempDir dir;
  std::ofstream(dir.file("c.csv"))
      << "Subject,DX,T1_date,PET_date,CSF_date,ABETA,TAU,PTAU,Age,Sex,APOE4,PTEDUCAT,Tracer,DX_36m,Conversion_date\n"
      << "S1,MCI,2011-06-01,2011-06-15,2011-05-20,900,240,22,74,1,0,16,AV45,AD,2012-09-01\n"
      << "S2,MCI,2011-06-01,2011-06-15,2011-05-20,900,240,22,74,1,0,16,AV45,MCI,\n"
      << "S3,CN,2011-06-01,2011-06-15,2011-05-20,900,240,22,74,1,0,16,AV45,,\n";
  const Cohort c = read_cohort(dir.file("c.csv"));
  REQUIRE(c.rows.size() == 3);
  CHECK(c.rows[0].dx_36m == "AD");
  CHECK(c.rows[0].conversion_date == days_from_civil(2012, 9, 1));
  CHECK(c.rows[1].dx_36m == "MCI");
  CHECK(!c.rows[1].conversion_date.has_value());
  CHECK(c.rows[2].dx_36m.empty());  // unknown
  Pairing p = pair_sessions(c);
  REQUIRE(p.paired.size() == 3);
  assign_splits(p.paired, 3);
  write_paired_csv(dir.file("paired.csv"), p.paired);
  const auto back = read_paired(dir.file("paired.csv"));
  REQUIRE(back.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(back[i].dx_36m == p.paired[i].dx_36m);
    CHECK(back[i].conversion_date == p.paired[i].conversion_date);
  }
  CHECK(back[0].conversion_date == days_from_civil(2012, 9, 1));
  // Labels: S1 progresses (AD within 36 months), S2 is stable, S3 (CN) has no pMCI label.
  CHECK(diagnosis_label(back[0], DiagnosisTask::pmci_vs_smci) == 1);
  CHECK(diagnosis_label(back[1], DiagnosisTask::pmci_vs_smci) == 0);
  CHECK(!diagnosis_label(back[2], DiagnosisTask::pmci_vs_smci).has_value());
  CHECK(diagnosis_label(back[2], DiagnosisTask::ad_vs_cn) == 0);
  CHECK(!diagnosis_label(back[0], DiagnosisTask::ad_vs_cn).has_value());
  PairedRecord after = back[0];  // a session on the conversion date is no longer MCI
  after.pet_date = *after.conversion_date;
  CHECK(!diagnosis_label(after, DiagnosisTask::pmci_vs_smci).has_value());
  after.dx = "AD";
  CHECK(diagnosis_label(after, DiagnosisTask::ad_vs_cn) == 1);
  PairedRecord unknown = back[1];
  unknown.dx_36m.clear();
  CHECK(!diagnosis_label(unknown, DiagnosisTask::pmci_vs_smci).has_value());
  // A value that is not a diagnosis or a date is a row problem, named like any other.
  std::ofstream(dir.file("bad.csv"))
      << "Subject,DX,T1_date,PET_date,CSF_date,ABETA,TAU,PTAU,Age,Sex,APOE4,PTEDUCAT,Tracer,DX_36m,Conversion_date\n"
      << "S1,MCI,2011-06-01,2011-06-15,2011-05-20,900,240,22,74,1,0,16,AV45,converted,2012-13-01\n";
  const std::string e = error_of([&] { read_cohort(dir.file("bad.csv")); });
  CHECK(e.find("DX_36m = 'converted'") != std::string::npos);
  CHECK(e.find("Conversion_date = '2012-13-01'") != std::string::npos);
}

TEST_CASE("cohort: a missing column names the file, the column and the columns found") {
  const std::string msg = error_of([] { read_cohort(kDir + "missing_column.csv"); });
  CHECK(msg.find("missing_column.csv") != std::string::npos);
  CHECK(msg.find("no column 'CSF_date'") != std::string::npos);
  CHECK(msg.find("columns found: Subject, DX, T1_date, PET_date, ABETA, TAU, PTAU, Age, Sex, APOE4, PTEDUCAT, Tracer") !=
        std::string::npos);
}

TEST_CASE("cohort: bad rows fail listing each problem, or are skipped with a warning") {
  const std::string path = kDir + "bad_rows.csv";
  const std::vector<std::string> expected = {
      "bad_rows.csv:3: ABETA = '' (missing)",
      "bad_rows.csv:4: T1_date = '2012-13-10' (not a date",
      "bad_rows.csv:5: Sex = 'X' (not 0/1",
      "bad_rows.csv:6: 11 fields, but the header has 13",
      "bad_rows.csv:7: Tracer = 'PIB' (not AV45 or AV1451)",
  };
  const std::string msg = error_of([&] { read_cohort(path, MissingPolicy::fail); });
  CHECK(msg.find("5 of 7 rows") != std::string::npos);
  for (const auto& e : expected) CHECK_MESSAGE(msg.find(e) != std::string::npos, e);

  std::ostringstream warnings;
  const Cohort c = read_cohort(path, MissingPolicy::skip_row, &warnings);
  CHECK(c.rows_read == 7);
  CHECK(c.rows_skipped == 5);
  REQUIRE(c.rows.size() == 2);
  CHECK(c.rows[0].subject == "100_S_0001");
  CHECK(c.rows[1].subject == "100_S_0007");
  CHECK(c.issues.size() == 5);
  CHECK(warnings.str().find("warning: skipping 5 of 7 rows") != std::string::npos);
  for (const auto& e : expected) CHECK_MESSAGE(warnings.str().find(e) != std::string::npos, e);
  CHECK(parse_missing_policy("skip") == MissingPolicy::skip_row);
  CHECK_THROWS_WITH_AS(parse_missing_policy("ignore"), doctest::Contains("'ignore'"), std::runtime_error);
}

TEST_CASE("cohort: hostile tables — path-like IDs, control bytes, duplicated columns, missing codes, bad UTF-8") {
  TempDir dir;
  auto table = [&](const std::string& header, const std::string& row) {
    std::ofstream(dir.file("t.csv"), std::ios::binary) << header << "\n" << row << "\n";
    return dir.file("t.csv");
  };
  const std::string header = "Subject,DX,T1_date,PET_date,CSF_date,ABETA,TAU,PTAU,Age,Sex,APOE4,PTEDUCAT,Tracer";
  auto row = [](const std::string& subject, const std::string& abeta = "900") {
    return subject + ",MCI,2015-06-01,2015-06-01,2015-06-01," + abeta + ",250,24,72.5,1,1,16,AV45";
  };
  CHECK(read_cohort(table(header, row("002_S_0413"))).rows.size() == 1);
  // A Subject ID names folders: it cannot climb out of the cohort or hide bytes.
  for (const std::string& bad : std::vector<std::string>{"../../x", "..", "a/b", ".hidden", std::string("S\0_1", 4), "S 1", "a\\b"}) {
    const std::string e = error_of([&] { read_cohort(table(header, row(bad))); });
    CHECK_MESSAGE(e.find("Subject") != std::string::npos, bad);
    CHECK_MESSAGE(e.find("letters, digits") != std::string::npos, bad);
  }
  CHECK(error_of([&] { read_cohort(table(header, row(std::string("S\0_1", 4)))); }).find("S\\x00_1") != std::string::npos);
  PairedRecord forged;
  forged.subject = "../../etc";
  forged.tracer = "AV45";
  CHECK_THROWS_WITH_AS(image_paths(forged), doctest::Contains("cannot name an image folder"), std::runtime_error);
  // ADNI's missing-value codes and negative concentrations are not measurements.
  CHECK(error_of([&] { read_cohort(table(header, row("002_S_0413", "-4"))); }).find("ADNI's code for a missing value") !=
        std::string::npos);
  CHECK(error_of([&] { read_cohort(table(header, row("002_S_0413", "-1"))); }).find("missing value") != std::string::npos);
  CHECK(error_of([&] { read_cohort(table(header, row("002_S_0413", "-12.5"))); }).find("cannot be negative") !=
        std::string::npos);
  const Cohort skipped = read_cohort(table(header, row("002_S_0413", "-4")), MissingPolicy::skip_row);
  CHECK(skipped.rows.empty());
  // A column twice (case-insensitive) is ambiguous.
  const std::string e = error_of([&] { read_cohort(table(header + ",abeta", row("002_S_0413") + ",800")); });
  CHECK(e.find("'ABETA' twice (columns 6 and 14") != std::string::npos);
  // Text that is not UTF-8 is refused where the file and line can be named.
  const std::string latin1 = error_of([&] { read_cohort(table(header, row("002_S_0413") + ",caf\xE9")); });
  CHECK(latin1.find("t.csv:2") != std::string::npos);
  CHECK(latin1.find("not UTF-8") != std::string::npos);
  CHECK_FALSE(invalid_utf8_at("Zürich 北京 ✓").has_value());
  CHECK(invalid_utf8_at("ab\xC0\x80") == 2u);    // overlong NUL
  CHECK(invalid_utf8_at("\xED\xA0\x80") == 0u);  // a UTF-16 surrogate
  CHECK(invalid_utf8_at("ok\xF4\x90\x80\x80") == 2u);  // beyond U+10FFFF
  CHECK(invalid_utf8_at("\xE2\x82") == 0u);      // truncated
}

TEST_CASE("cohort: only the tracer's own CSF marker is required (AV45: ABETA; AV1451: TAU and PTAU)") {
  TempDir dir;
  const std::string path = dir.file("tracers.csv");
  {
    std::ofstream f(path);
    f << "Subject,DX,T1_date,PET_date,CSF_date,ABETA,TAU,PTAU,Age,Sex,APOE4,PTEDUCAT,Tracer\n"
      << "100_S_0001,CN,2012-01-10,2012-01-20,2012-01-05,900,,,70.1,0,0,16,AV45\n"
      << "100_S_0002,MCI,2012-02-10,2012-02-20,2012-02-05,,250,23,71.2,1,1,14,AV1451\n"
      << "100_S_0003,AD,2012-03-10,2012-03-20,2012-03-05,700,,30,72.3,1,2,12,AV1451\n"
      << "100_S_0004,CN,2012-04-10,2012-04-20,2012-04-05,950,abc,21,73.4,0,0,18,AV45\n";
  }
  const std::string msg = error_of([&] { read_cohort(path, MissingPolicy::fail); });
  CHECK(msg.find("tracers.csv:4: TAU = '' (missing)") != std::string::npos);
  CHECK(msg.find("tracers.csv:5: TAU = 'abc'") != std::string::npos);  // present but unparseable
  CHECK(msg.find("tracers.csv:2:") == std::string::npos);
  CHECK(msg.find("tracers.csv:3:") == std::string::npos);
  std::ostringstream warnings;
  const Cohort c = read_cohort(path, MissingPolicy::skip_row, &warnings);
  REQUIRE(c.rows.size() == 2);
  CHECK(std::isnan(c.rows[0].tau.value));
  CHECK(std::isnan(c.rows[1].abeta.value));
}

TEST_CASE("cohort: pairing at the 6-month boundary, each of the three gaps") {
  TempDir dir;
  const std::string path = write_rows(dir, {
                                               {"T1_182", -182, 0, 0},   // |PET − T1| = 182: kept
                                               {"T1_183", -183, 0, 0},   // = 183: the rule is strict
                                               {"T1_184", 184, 0, 0},
                                               {"CSF_182", 0, 0, 182},   // |PET − CSF|
                                               {"CSF_184", 0, 0, -184},
                                               {"T1CSF_182", -91, 0, 91},   // |T1 − CSF| = 182, PET gaps 91
                                               {"T1CSF_184", -92, 0, 92},   // |T1 − CSF| = 184, PET gaps 92
                                               {"T1CSF_200", -100, 0, 100},
                                           });
  const Pairing p = pair_sessions(read_cohort(path));
  CHECK(p.sessions == 8);
  const auto kept = by_subject(p);
  CHECK(kept.size() == 3);
  CHECK(kept.count("T1_182"));
  CHECK(kept.count("CSF_182"));
  CHECK(kept.count("T1CSF_182"));
  CHECK(kept.at("T1CSF_182").max_gap_days == 182);
  std::map<std::string, int64_t> rejected;
  for (const auto& r : p.rejected) rejected[r.subject] = r.best_gap_days;
  CHECK(rejected == std::map<std::string, int64_t>{
                        {"T1_183", 183}, {"T1_184", 184}, {"CSF_184", 184}, {"T1CSF_184", 184}, {"T1CSF_200", 200}});
}

TEST_CASE("cohort: candidates from all of a subject's rows; the smallest max-gap wins, ties by earliest date") {
  TempDir dir;
  const std::string path = write_rows(
      dir, {
               // PET at 0 has its own T1 150 days off, but the second row's T1 (+30) pairs better
               // with the CSF at −10: max gap 40.
               {"A", -150, 0, -10, "800"},
               {"A", 30, 700, 690, "600"},
               // two T1s equally far from PET and CSF: the earlier one (−20) is chosen
               {"B", 20, 0, 0},
               {"B", -20, 0, 0},
               // the same session on two rows gives one record (values from the first row)
               {"C", 0, 0, 0, "1000"},
               {"C", 0, 0, 0, "1000"},
           });
  const Pairing p = pair_sessions(read_cohort(path));
  CHECK(p.sessions == 4);  // A@0, A@700, B@0, C@0
  REQUIRE(p.paired.size() == 3);
  const PairedRecord& a0 = p.paired[0];
  CHECK(a0.subject == "A");
  CHECK(a0.pet_date == P);
  CHECK(a0.t1_date == P + 30);
  CHECK(a0.csf_date == P - 10);
  CHECK(a0.abeta.raw == "800");
  CHECK(a0.max_gap_days == 40);
  CHECK(p.paired[1].subject == "B");
  CHECK(p.paired[1].t1_date == P - 20);
  CHECK(p.paired[2].subject == "C");
  CHECK(p.paired[2].abeta.raw == "1000");
  // A@700: the best candidates (T1 +30, CSF +690) leave |PET − T1| = 670 days.
  REQUIRE(p.rejected.size() == 1);
  CHECK(p.rejected[0].subject == "A");
  CHECK(p.rejected[0].pet_date == P + 700);
  CHECK(p.rejected[0].best_gap_days == 670);
}

TEST_CASE("cohort: the split is 4:1:1 by subject, seeded, stable when subjects are added") {
  for (uint64_t seed : {0ull, 1ull, 777ull, 20260101ull}) {
    CAPTURE(seed);
    auto records = synthetic_records(0, 600, 2);
    assign_splits(records, seed);
    std::map<std::string, std::set<std::string>> subjects;
    for (const auto& r : records) subjects[r.split].insert(r.subject);
    const double n = 600;
    CHECK(std::abs(subjects["train"].size() / n - 4.0 / 6) < 0.04);
    CHECK(std::abs(subjects["val"].size() / n - 1.0 / 6) < 0.04);
    CHECK(std::abs(subjects["test"].size() / n - 1.0 / 6) < 0.04);
    // no leakage: every subject in exactly one split, sessions of a subject together
    CHECK(subjects["train"].size() + subjects["val"].size() + subjects["test"].size() == 600);
    std::map<std::string, std::string> split_of_subject;
    for (const auto& r : records) {
      auto [it, fresh] = split_of_subject.emplace(r.subject, r.split);
      CHECK(it->second == r.split);
    }
    // adding 300 subjects moves none of the first 600
    auto more = synthetic_records(0, 900, 1);
    assign_splits(more, seed);
    for (const auto& r : more)
      if (split_of_subject.count(r.subject)) CHECK(split_of_subject[r.subject] == r.split);
  }
  // a different seed gives a different split
  int moved = 0;
  for (const auto& r : synthetic_records(0, 600)) moved += split_of(1, r.subject) != split_of(2, r.subject);
  CHECK(moved > 200);
}

TEST_CASE("cohort: min–max ranges come from the training split only and travel with the split") {
  auto records = synthetic_records(0, 120);
  assign_splits(records, 5);
  double lo = 1e9, hi = -1e9, age_lo = 1e9, age_hi = -1e9;
  for (size_t i = 0; i < records.size(); ++i) {
    auto& r = records[i];
    const bool train = r.split == "train";
    // held-out subjects get values far outside the training ones
    r.abeta = *parse_csf(train ? std::to_string(300 + 7 * i) : "5000");
    r.tau = *parse_csf(std::to_string(150 + i % 50)), r.ptau = *parse_csf(train ? std::to_string(10 + i % 13) : "900");
    r.age = train ? 60 + 0.25 * i : 20;
    r.pteducat = train ? 8 + i % 13 : 40;
    if (train) lo = std::min(lo, r.abeta.value), hi = std::max(hi, r.abeta.value);
    if (train) age_lo = std::min(age_lo, r.age), age_hi = std::max(age_hi, r.age);
    r.sex = i % 2, r.apoe4 = i % 3;
  }
  const NormRanges ranges = fit_ranges(records);
  CHECK(ranges.at("ABETA").min == lo);
  CHECK(ranges.at("ABETA").max == hi);
  CHECK(ranges.at("Age").min == age_lo);
  CHECK(ranges.at("Age").max == age_hi);
  CHECK(ranges.at("PTEDUCAT").min == 8);
  CHECK(ranges.at("PTEDUCAT").max == 20);
  CHECK(ranges.at("PTAU").max == 22);

  TempDir dir;
  const SplitInfo info = make_split_info(records, 5);
  save_split_json(dir.file("split.json"), info);
  const SplitInfo back = load_split_json(dir.file("split.json"));
  CHECK(back.seed == 5);
  CHECK(back.subjects == info.subjects);
  for (const auto& [k, r] : ranges) {
    CHECK(back.ranges.at(k).min == r.min);
    CHECK(back.ranges.at(k).max == r.max);
  }
  for (const auto& r : records) {
    const Tabular t = normalise(r, back.ranges);
    CHECK(t.abeta == doctest::Approx((r.abeta.value - lo) / (hi - lo)));
    CHECK(t.age == doctest::Approx((r.age - age_lo) / (age_hi - age_lo)));
    CHECK(t.sex == r.sex);
    CHECK(t.apoe4 == r.apoe4);
    if (r.split == "train") CHECK((t.abeta >= 0 && t.abeta <= 1));
    else CHECK(t.abeta > 1);  // not clipped: held-out values may leave [0, 1]
    const auto m = covariate_inputs(r, back.ranges);
    CHECK(m == std::vector<float>{float(t.age), float(r.sex), float(r.apoe4), float(t.pteducat)});
    CHECK(csf_inputs(r, back.ranges) == std::vector<float>{float(t.abeta)});
  }
  // ranges with no width are an error, not a division by zero
  NormRanges flat = ranges;
  flat["TAU"] = {200, 200};
  CHECK_THROWS_WITH_AS(normalise(records[0], flat), doctest::Contains("range of TAU is empty"), std::runtime_error);
  for (auto& r : records) r.split = "val";
  CHECK_THROWS_WITH_AS(fit_ranges(records), doctest::Contains("no record in the training split"), std::runtime_error);
}

TEST_CASE("cohort: the paired table round-trips, censoring included; image paths and missing files") {
  TempDir dir;
  Cohort c = read_cohort(kDir + "adni_style.csv");
  Pairing p = pair_sessions(c);
  REQUIRE(p.paired.size() == 3);
  assign_splits(p.paired, 3);
  write_paired_csv(dir.file("paired.csv"), p.paired);
  const auto back = read_paired(dir.file("paired.csv"));
  REQUIRE(back.size() == 3);
  for (size_t i = 0; i < back.size(); ++i) {
    CHECK(back[i].subject == p.paired[i].subject);
    CHECK(back[i].t1_date == p.paired[i].t1_date);
    CHECK(back[i].abeta.value == p.paired[i].abeta.value);
    CHECK(back[i].abeta.censored == p.paired[i].abeta.censored);
    CHECK(back[i].age == p.paired[i].age);
    CHECK(back[i].split == p.paired[i].split);
    CHECK(back[i].max_gap_days == p.paired[i].max_gap_days);
  }
  const ImagePaths ip = image_paths(back[2]);
  CHECK(ip.t1 == "t1/011_S_4827/2014-01-10/t1.nii.gz");
  CHECK(ip.pet == "pet/011_S_4827/2014-02-01/av1451.nii.gz");
  fs::create_directories(dir.path / "t1/011_S_4827/2014-01-10");
  std::ofstream(dir.path / ip.t1) << "x";
  const auto missing = missing_images(back, dir.path.string());
  CHECK(missing.size() == 5);  // 3 PET + 2 T1 of the first subject
  CHECK(std::find(missing.begin(), missing.end(), "pet/011_S_4827/2014-02-01/av1451.nii.gz (011_S_4827, PET 2014-02-01)") !=
        missing.end());
  CHECK(std::none_of(missing.begin(), missing.end(), [&](const std::string& m) { return m.rfind(ip.t1, 0) == 0; }));
  // a cohort table is not a paired table
  CHECK_THROWS_WITH_AS(read_paired(kDir + "adni_style.csv"), doctest::Contains("split = ''"), std::runtime_error);
}

TEST_CASE("cohort: mutated tables are read or rejected with a runtime_error, never a crash") {
  std::ifstream in(kDir + "adni_style.csv", std::ios::binary);
  const std::string clean((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TempDir dir;
  const std::string p = dir.file("fuzz.csv");
  uint64_t state = 99;
  auto next = [&] {
    state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
    return state * 2685821657736338717ull;
  };
  const std::string alphabet = ",\"\r\n0123456789-/<>.aZ ";
  int ok = 0, rejected = 0;
  for (int it = 0; it < 600; ++it) {
    std::string text = clean;
    for (int k = 0, n = 1 + int(next() % 5); k < n; ++k) {
      const size_t pos = next() % text.size();
      switch (next() % 3) {
        case 0: text[pos] = alphabet[next() % alphabet.size()]; break;
        case 1: text.erase(pos, 1 + next() % 8); break;
        default: text.insert(pos, 1, alphabet[next() % alphabet.size()]);
      }
      if (text.empty()) text = ",";
    }
    std::ofstream(p, std::ios::binary) << text;
    for (MissingPolicy policy : {MissingPolicy::fail, MissingPolicy::skip_row}) {
      try {
        const Cohort c = read_cohort(p, policy);
        pair_sessions(c);
        ++ok;
      } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()).find("fuzz.csv") != std::string::npos);
        ++rejected;
      }
    }
  }
  MESSAGE("csv fuzz: " << ok << " read, " << rejected << " rejected");
  CHECK(rejected > 100);
  CHECK(ok > 100);
}
