#include "io/cohort.h"

#include "io/files.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>

namespace cpets::io {
namespace {

namespace fs = std::filesystem;

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::optional<double> parse_number(std::string_view s) {
  const std::string t = trim(s);
  if (t.empty()) return std::nullopt;
  double v = 0;
  const char* end = t.data() + t.size();
  auto [p, ec] = std::from_chars(t.data(), end, v);
  if (ec != std::errc() || p != end || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<int> parse_int(std::string_view s) {
  const auto v = parse_number(s);
  if (!v || *v != std::floor(*v) || std::abs(*v) > 1e9) return std::nullopt;
  return static_cast<int>(*v);
}

std::string format_number(double v) {
  if (std::isnan(v)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

// ---- dates -----------------------------------------------------------------------------------

// Calendar arithmetic is <chrono>'s (C++20 civil calendar): days since 1970-01-01.
int64_t days_from_civil(int y, int m, int d) {
  using namespace std::chrono;
  return sys_days{year{y} / month{static_cast<unsigned>(m)} / day{static_cast<unsigned>(d)}}.time_since_epoch().count();
}

std::string format_date(int64_t z) {
  using namespace std::chrono;
  const year_month_day ymd{sys_days{days{z}}};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()));
  return buf;
}

std::optional<int64_t> parse_date(std::string_view s) {
  const std::string t = trim(s);
  std::vector<std::string> parts;
  const char sep = t.find('-') != std::string::npos ? '-' : '/';
  std::string cur;
  for (char c : t) {
    if (c == sep) {
      parts.push_back(cur);
      cur.clear();
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      cur += c;
    } else {
      return std::nullopt;
    }
  }
  parts.push_back(cur);
  if (parts.size() != 3) return std::nullopt;
  for (const auto& p : parts)
    if (p.empty() || p.size() > 4) return std::nullopt;
  int y, m, d;
  if (sep == '-') {  // ISO year-month-day
    if (parts[0].size() != 4) return std::nullopt;
    y = std::stoi(parts[0]), m = std::stoi(parts[1]), d = std::stoi(parts[2]);
  } else {  // ADNI month/day/year
    if (parts[2].size() != 4) return std::nullopt;
    m = std::stoi(parts[0]), d = std::stoi(parts[1]), y = std::stoi(parts[2]);
  }
  if (y < 1900 || y > 2200 || m < 1 || m > 12 || d < 1) return std::nullopt;
  const std::chrono::year_month_day date{std::chrono::year{y}, std::chrono::month{static_cast<unsigned>(m)},
                                         std::chrono::day{static_cast<unsigned>(d)}};
  if (!date.ok()) return std::nullopt;  // 31 April, 29 February of a common year
  return days_from_civil(y, m, d);
}

// ---- CSV ---------------------------------------------------------------------------------------

std::optional<size_t> invalid_utf8_at(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size() || (n == 2 && c < 0xC2)) return i;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return i;
    const unsigned char d = n > 1 ? static_cast<unsigned char>(s[i + 1]) : 0;
    if ((n == 3 && c == 0xE0 && d < 0xA0) || (n == 3 && c == 0xED && d >= 0xA0) || (n == 4 && c == 0xF0 && d < 0x90) ||
        (n == 4 && (c > 0xF4 || (c == 0xF4 && d >= 0x90))))
      return i;  // overlong, surrogate or beyond U+10FFFF
    i += n;
  }
  return std::nullopt;
}

std::string printable(std::string_view s) {
  std::string out;
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F || c >= 0x80) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out;
}

CsvTable read_csv(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open CSV file '" + path + "'");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;  // UTF-8 BOM (Excel writes one)
  CsvTable t;
  t.path = path;
  std::vector<std::string> record;
  std::string field;
  int line = 1, record_line = 1;
  bool in_quotes = false, field_started = false;
  auto end_field = [&] {
    record.push_back(field);
    field.clear();
    field_started = false;
  };
  auto end_record = [&] {
    end_field();
    const bool blank = record.size() == 1 && trim(record[0]).empty();
    if (!blank) {
      if (t.header.empty()) {
        t.header = record;
      } else {
        t.rows.push_back(record);
        t.lines.push_back(record_line);
      }
    }
    record.clear();
  };
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        in_quotes = false;
      } else {
        if (c == '\n') ++line;
        field += c;
      }
      continue;
    }
    if (c == '"' && !field_started && trim(field).empty()) {
      field.clear();
      in_quotes = field_started = true;
    } else if (c == ',') {
      end_field();
    } else if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_record();
      record_line = ++line;
    } else {
      field += c;
      if (!std::isspace(static_cast<unsigned char>(c))) field_started = true;
    }
  }
  if (in_quotes) throw std::runtime_error(path + ":" + std::to_string(record_line) + ": unterminated quoted field");
  if (!field.empty() || !record.empty()) end_record();
  if (t.header.empty()) throw std::runtime_error("CSV file '" + path + "' is empty (no header row)");
  for (auto& h : t.header) h = trim(h);
  // Everything read here ends up in JSON (split.json, reports), which is UTF-8 only: refuse other
  // encodings here, where the file and line can be named.
  auto check_text = [&](const std::string& field, int at) {
    if (const auto bad = invalid_utf8_at(field))
      throw std::runtime_error(path + ":" + std::to_string(at) + ": '" + printable(field) + "' is not UTF-8 text (byte " +
                               std::to_string(*bad + 1) + " of the field); save the table as UTF-8");
  };
  for (const auto& h : t.header) check_text(h, 1);
  for (size_t r = 0; r < t.rows.size(); ++r)
    for (const auto& f : t.rows[r]) check_text(f, t.lines[r]);
  return t;
}

void write_csv(const std::string& path, const std::vector<std::string>& header,
               const std::vector<std::vector<std::string>>& rows) {
  std::ostringstream out;
  auto write_row = [&](const std::vector<std::string>& r) {
    for (size_t i = 0; i < r.size(); ++i) out << (i ? "," : "") << csv_field(r[i]);
    out << "\n";
  };
  write_row(header);
  for (const auto& r : rows) write_row(r);
  write_text_atomic(path, out.str());
}

// ---- values -----------------------------------------------------------------------------------

std::optional<CsfValue> parse_csf(std::string_view s) {
  const std::string t = trim(s);
  CsfValue v;
  v.raw = t;
  std::string_view num = t;
  if (!num.empty() && (num[0] == '<' || num[0] == '>')) {
    v.censored = num[0] == '<' ? Censor::below : Censor::above;
    num.remove_prefix(1);
  }
  const auto x = parse_number(num);
  if (!x) return std::nullopt;
  v.value = *x;
  return v;
}

MissingPolicy parse_missing_policy(const std::string& s) {
  if (s == "fail") return MissingPolicy::fail;
  if (s == "skip" || s == "skip_row") return MissingPolicy::skip_row;
  throw std::runtime_error("unknown missing-value policy '" + s + "' (use fail or skip)");
}

std::string RowIssue::describe(const std::string& path) const {
  if (column.empty()) return path + ":" + std::to_string(line) + ": " + reason;
  return path + ":" + std::to_string(line) + ": " + column + " = '" + value + "' (" + reason + ")";
}

namespace {

bool valid_subject_id(const std::string& s) {
  if (s.empty() || s[0] == '.') return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

std::optional<std::string> parse_dx(const std::string& s) {
  const std::string u = lower(trim(s));
  if (u == "cn" || u == "smc" || u == "nl") return "CN";
  if (u == "mci" || u == "emci" || u == "lmci") return "MCI";
  if (u == "ad" || u == "dementia") return "AD";
  return std::nullopt;
}

std::optional<std::string> parse_tracer(const std::string& s) {
  const std::string u = lower(trim(s));
  if (u == "av45" || u == "fbp") return "AV45";
  if (u == "av1451" || u == "ftp") return "AV1451";
  return std::nullopt;
}

std::optional<int> parse_sex(const std::string& s) {
  const std::string u = lower(trim(s));
  if (u == "0" || u == "f" || u == "female") return 0;
  if (u == "1" || u == "m" || u == "male") return 1;
  return std::nullopt;
}

// Parses one row; every problem goes to `issues` (all of them, not just the first).
CohortRow parse_row(const std::vector<std::string>& f, const std::map<std::string, size_t>& col, int line,
                    std::vector<RowIssue>& issues) {
  CohortRow r;
  r.line = line;
  auto get = [&](const std::string& name) { return trim(f[col.at(name)]); };
  auto issue = [&](const std::string& name, const std::string& reason) {
    const std::string v = get(name);
    issues.push_back({line, name, v, v.empty() ? "missing" : reason});
  };
  r.subject = get("Subject");
  if (r.subject.empty()) issue("Subject", "");
  else if (!valid_subject_id(r.subject))
    issues.push_back({line, "Subject", printable(r.subject),
                      "a Subject ID names the folders t1/<Subject>/ and pet/<Subject>/: letters, digits, '_', '-' "
                      "and '.' only, not starting with '.'"});
  if (auto dx = parse_dx(get("DX"))) r.dx = *dx;
  else issue("DX", "not CN, MCI or AD (also accepted: SMC, EMCI, LMCI, Dementia)");
  const std::pair<const char*, int64_t*> dates[] = {
      {"T1_date", &r.t1_date}, {"PET_date", &r.pet_date}, {"CSF_date", &r.csf_date}};
  for (auto [name, dst] : dates) {
    if (auto d = parse_date(get(name))) *dst = *d;
    else issue(name, "not a date: use YYYY-MM-DD or M/D/YYYY");
  }
  if (auto t = parse_tracer(get("Tracer"))) r.tracer = *t;
  else issue("Tracer", "not AV45 or AV1451");
  // A tracer's model input is its CSF marker (AV45: ABETA; AV1451: TAU and PTAU), so only those
  // must be present; ADNI's AV45 rows often lack tau. A value that is there must still parse.
  const std::pair<const char*, CsfValue*> csf[] = {{"ABETA", &r.abeta}, {"TAU", &r.tau}, {"PTAU", &r.ptau}};
  for (auto [name, dst] : csf) {
    const bool is_abeta = std::string_view(name) == "ABETA";
    const bool required = r.tracer.empty() || (r.tracer == "AV45") == is_abeta;
    if (!required && get(name).empty()) continue;
    const auto v = parse_csf(get(name));
    if (!v) issue(name, "not a number (censored values are written like >1700 or <200)");
    else if (v->value == -1 || v->value == -4) issue(name, "ADNI's code for a missing value");
    else if (v->value < 0) issue(name, "a concentration cannot be negative");
    else *dst = *v;
  }
  auto number = [&](const char* name, double lo, double hi, double& dst) {
    const auto v = parse_number(get(name));
    if (v && *v >= lo && *v <= hi) dst = *v;
    else issue(name, "not a number in [" + format_number(lo) + ", " + format_number(hi) + "]");
  };
  number("Age", 0, 130, r.age);
  number("PTEDUCAT", 0, 40, r.pteducat);
  if (auto s = parse_sex(get("Sex"))) r.sex = *s;
  else issue("Sex", "not 0/1 or Female/Male");
  const auto apoe = parse_int(get("APOE4"));
  if (apoe && *apoe >= 0 && *apoe <= 2) r.apoe4 = *apoe;
  else issue("APOE4", "not an allele count 0, 1 or 2");
  if (col.count("split")) r.split = get("split");
  if (col.count("DX_36m") && !get("DX_36m").empty()) {
    if (auto d = parse_dx(get("DX_36m"))) r.dx_36m = *d;
    else issue("DX_36m", "not CN, MCI or AD (or empty when unknown)");
  }
  if (col.count("Conversion_date") && !get("Conversion_date").empty()) {
    if (auto d = parse_date(get("Conversion_date"))) r.conversion_date = *d;
    else issue("Conversion_date", "not a date (ISO or month/day/year), or empty for a non-converter");
  }
  return r;
}

std::string list_issues(const std::string& path, const std::vector<RowIssue>& issues, size_t max_lines) {
  std::string s;
  for (size_t i = 0; i < issues.size() && i < max_lines; ++i) s += "\n  " + issues[i].describe(path);
  if (issues.size() > max_lines) s += "\n  … and " + std::to_string(issues.size() - max_lines) + " more";
  return s;
}

}  // namespace

Cohort read_cohort(const std::string& path, MissingPolicy policy, std::ostream* warnings) {
  const CsvTable t = read_csv(path);
  std::map<std::string, size_t> col;
  auto claim = [&](const std::string& name, size_t i) {
    const auto [it, fresh] = col.emplace(name, i);
    if (!fresh)
      throw std::runtime_error("cohort table '" + path + "' has the column '" + name + "' twice (columns " +
                               std::to_string(it->second + 1) + " and " + std::to_string(i + 1) +
                               ", names compared without case); keep one");
  };
  for (size_t i = 0; i < t.header.size(); ++i) {
    const std::string& h = t.header[i];
    for (const auto& want : cohort_columns())
      if (lower(h) == lower(want)) claim(want, i);
    for (const char* optional : {"split", "DX_36m", "Conversion_date"})
      if (lower(h) == lower(optional)) claim(optional, i);
  }
  for (const auto& [want, aliases] : cohort_column_aliases()) {
    if (col.count(want)) continue;
    for (const auto& alias : aliases) {
      size_t found = 0, at = 0;
      for (size_t i = 0; i < t.header.size(); ++i)
        if (lower(t.header[i]) == lower(alias)) ++found, at = i;
      if (found > 1)
        throw std::runtime_error("cohort table '" + path + "' has the column '" + alias + "' (read as " + want +
                                 ") more than once; keep one");
      if (found == 1) {
        claim(want, at);
        break;
      }
    }
  }
  for (const auto& want : cohort_columns())
    if (!col.count(want)) {
      std::string found;
      for (const auto& h : t.header) found += (found.empty() ? "" : ", ") + h;
      throw std::runtime_error("cohort table '" + path + "' has no column '" + want + "'; columns found: " + found +
                               " (expected " + std::to_string(cohort_columns().size()) +
                               ": Subject, DX, T1_date, PET_date, CSF_date, ABETA, TAU, PTAU, Age, Sex, APOE4, "
                               "PTEDUCAT, Tracer; ADNI's PTID or RID, PTGENDER and ABETA42 are read as Subject, "
                               "Sex and ABETA)");
    }
  Cohort c;
  c.path = path;
  std::vector<RowIssue> all;
  std::set<int> bad_lines;
  for (size_t i = 0; i < t.rows.size(); ++i) {
    ++c.rows_read;
    const int line = t.lines[i];
    if (t.rows[i].size() != t.header.size()) {
      all.push_back({line, "", "",
                     std::to_string(t.rows[i].size()) + " fields, but the header has " + std::to_string(t.header.size())});
      bad_lines.insert(line);
      continue;
    }
    std::vector<RowIssue> issues;
    CohortRow r = parse_row(t.rows[i], col, line, issues);
    if (issues.empty()) {
      c.rows.push_back(std::move(r));
    } else {
      bad_lines.insert(line);
      all.insert(all.end(), issues.begin(), issues.end());
    }
  }
  if (!all.empty()) {
    const std::string rows = std::to_string(bad_lines.size()) + " of " + std::to_string(c.rows_read) + " rows of '" + path + "'";
    if (policy == MissingPolicy::fail)
      throw std::runtime_error(rows + " have missing or unparseable values:" + list_issues(path, all, 50) +
                               "\nfix them, or skip those rows (cpets-data pair --on-missing skip)");
    if (warnings)
      *warnings << "warning: skipping " << rows << " with missing or unparseable values:" << list_issues(path, all, 1000)
                << "\n";
    c.issues = all;
    c.rows_skipped = static_cast<int>(bad_lines.size());
  }
  return c;
}

// ---- pairing ------------------------------------------------------------------------------------

Pairing pair_sessions(const Cohort& cohort) {
  std::map<std::string, std::vector<const CohortRow*>> by_subject;
  for (const auto& r : cohort.rows) by_subject[r.subject].push_back(&r);
  Pairing out;
  for (auto& [subject, rows] : by_subject) {
    std::stable_sort(rows.begin(), rows.end(), [](auto* a, auto* b) { return a->line < b->line; });
    std::set<int64_t> t1_dates;
    std::map<int64_t, const CohortRow*> csf_by_date;  // first row with that CSF date supplies the values
    std::map<std::pair<std::string, int64_t>, const CohortRow*> sessions;  // (tracer, PET date) → first row
    for (const CohortRow* r : rows) {
      t1_dates.insert(r->t1_date);
      csf_by_date.emplace(r->csf_date, r);
      sessions.emplace(std::make_pair(r->tracer, r->pet_date), r);
    }
    for (const auto& [key, row] : sessions) {
      ++out.sessions;
      const int64_t pet = key.second;
      int64_t best = INT64_MAX, best_t1 = 0;
      const CohortRow* best_csf = nullptr;
      // Sets iterate in ascending date order and only a strictly smaller gap replaces the best,
      // so ties go to the earliest T1, then the earliest CSF date.
      for (int64_t t1 : t1_dates)
        for (const auto& [csf_date, csf_row] : csf_by_date) {
          const int64_t gap = std::max({std::llabs(pet - t1), std::llabs(pet - csf_date), std::llabs(t1 - csf_date)});
          if (gap < best) best = gap, best_t1 = t1, best_csf = csf_row;
        }
      if (best >= kSixMonthsDays) {
        out.rejected.push_back({subject, key.first, pet, best});
        continue;
      }
      PairedRecord p;
      p.subject = subject;
      p.dx = row->dx;
      p.tracer = key.first;
      p.pet_date = pet;
      p.t1_date = best_t1;
      p.csf_date = best_csf->csf_date;
      p.abeta = best_csf->abeta, p.tau = best_csf->tau, p.ptau = best_csf->ptau;
      p.age = row->age, p.sex = row->sex, p.apoe4 = row->apoe4, p.pteducat = row->pteducat;
      p.max_gap_days = best;
      p.split = row->split;
      p.dx_36m = row->dx_36m, p.conversion_date = row->conversion_date;
      out.paired.push_back(std::move(p));
    }
  }
  return out;
}

// ---- diagnosis labels -------------------------------------------------------------------------------

std::optional<int> diagnosis_label(const PairedRecord& r, DiagnosisTask task) {
  if (task == DiagnosisTask::ad_vs_cn) {
    if (r.dx == "AD") return 1;
    if (r.dx == "CN") return 0;
    return std::nullopt;
  }
  if (r.dx != "MCI" || r.dx_36m.empty()) return std::nullopt;
  if (r.conversion_date && r.pet_date >= *r.conversion_date) return std::nullopt;
  return r.dx_36m == "AD" ? 1 : 0;
}

// ---- split ------------------------------------------------------------------------------------------

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
}  // namespace

double subject_unit(uint64_t seed, std::string_view subject) {
  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a over the ID, then mixed with the seed
  for (unsigned char c : subject) h = (h ^ c) * 0x100000001B3ull;
  const uint64_t x = splitmix64(h ^ splitmix64(seed));
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

std::string split_of(uint64_t seed, std::string_view subject) {
  const double u = subject_unit(seed, subject);
  return u < 4.0 / 6.0 ? "train" : u < 5.0 / 6.0 ? "val" : "test";
}

void assign_splits(std::vector<PairedRecord>& records, uint64_t seed) {
  for (auto& r : records) r.split = split_of(seed, r.subject);
}

NormRanges fit_ranges(const std::vector<PairedRecord>& records) {
  NormRanges ranges;
  int n = 0;
  auto widen = [&](const std::string& key, double v) {
    if (std::isnan(v)) return;
    auto [it, fresh] = ranges.try_emplace(key, Range{v, v});
    if (!fresh) it->second.min = std::min(it->second.min, v), it->second.max = std::max(it->second.max, v);
  };
  for (const auto& r : records) {
    if (r.split != "train") continue;
    ++n;
    widen("ABETA", r.abeta.value);
    widen("TAU", r.tau.value);
    widen("PTAU", r.ptau.value);
    widen("Age", r.age);
    widen("PTEDUCAT", r.pteducat);
  }
  if (n == 0) throw std::runtime_error("fit_ranges: no record in the training split (assign splits first)");
  return ranges;
}

namespace {
double scale01(const NormRanges& ranges, const std::string& key, double v) {
  const auto it = ranges.find(key);
  if (it == ranges.end()) throw std::runtime_error("normalise: no saved range for " + key);
  const double w = it->second.max - it->second.min;
  if (!(w > 0))
    throw std::runtime_error("normalise: the saved range of " + key + " is empty [" + format_number(it->second.min) +
                             ", " + format_number(it->second.max) + "]; the training split has one value only");
  return (v - it->second.min) / w;
}
}  // namespace

Tabular normalise(const PairedRecord& r, const NormRanges& ranges) {
  Tabular t;
  t.abeta = scale01(ranges, "ABETA", r.abeta.value);
  t.tau = scale01(ranges, "TAU", r.tau.value);
  t.ptau = scale01(ranges, "PTAU", r.ptau.value);
  t.age = scale01(ranges, "Age", r.age);
  t.pteducat = scale01(ranges, "PTEDUCAT", r.pteducat);
  t.sex = r.sex;
  t.apoe4 = r.apoe4;
  return t;
}

std::vector<float> csf_inputs(const PairedRecord& r, const NormRanges& ranges) {
  if (r.tracer == "AV45") return {static_cast<float>(scale01(ranges, "ABETA", r.abeta.value))};
  if (r.tracer == "AV1451")
    return {static_cast<float>(scale01(ranges, "TAU", r.tau.value)),
            static_cast<float>(scale01(ranges, "PTAU", r.ptau.value))};
  throw std::runtime_error("csf_inputs: unknown tracer '" + r.tracer + "' for " + r.subject);
}

std::vector<float> covariate_inputs(const PairedRecord& r, const NormRanges& ranges) {
  return {static_cast<float>(scale01(ranges, "Age", r.age)), static_cast<float>(r.sex),
          static_cast<float>(r.apoe4), static_cast<float>(scale01(ranges, "PTEDUCAT", r.pteducat))};
}

SplitInfo make_split_info(const std::vector<PairedRecord>& records, uint64_t seed) {
  SplitInfo info;
  info.seed = seed;
  std::map<std::string, std::set<std::string>> sets{{"train", {}}, {"val", {}}, {"test", {}}};
  for (const auto& r : records) sets[r.split].insert(r.subject);
  for (const auto& [split, subjects] : sets) info.subjects[split].assign(subjects.begin(), subjects.end());
  info.ranges = fit_ranges(records);
  return info;
}

void save_split_json(const std::string& path, const SplitInfo& info) {
  nlohmann::ordered_json j;
  j["format"] = "cpets-split-1";
  j["seed"] = info.seed;
  j["rule"] = "split by subject: u = hash(seed, Subject) in [0,1) (FNV-1a 64 + splitmix64); train u < 4/6, "
              "val u < 5/6, test otherwise; ranges fitted on train only";
  j["six_months_days"] = kSixMonthsDays;
  for (const auto& [split, subjects] : info.subjects) j["counts"][split] = subjects.size();
  for (const auto& [key, r] : info.ranges) j["ranges"][key] = {{"min", r.min}, {"max", r.max}};
  for (const auto& [split, subjects] : info.subjects) j["subjects"][split] = subjects;
  write_text_atomic(path, j.dump(1) + "\n");
}

SplitInfo load_split_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open split file '" + path + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
    SplitInfo info;
    info.seed = j.at("seed").get<uint64_t>();
    for (const auto& [key, r] : j.at("ranges").items())
      info.ranges[key] = Range{r.at("min").get<double>(), r.at("max").get<double>()};
    for (const auto& [split, subjects] : j.at("subjects").items())
      info.subjects[split] = subjects.get<std::vector<std::string>>();
    return info;
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("split file '" + path + "' is not a valid cpets split: " + e.what());
  }
}

// ---- tables and files -----------------------------------------------------------------------------

void write_paired_csv(const std::string& path, const std::vector<PairedRecord>& records) {
  std::vector<std::string> header = cohort_columns();
  for (const char* extra : {"DX_36m", "Conversion_date", "max_gap_days", "split"}) header.push_back(extra);
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : records)
    rows.push_back({r.subject, r.dx, format_date(r.t1_date), format_date(r.pet_date), format_date(r.csf_date),
                    r.abeta.raw, r.tau.raw, r.ptau.raw, format_number(r.age), std::to_string(r.sex),
                    std::to_string(r.apoe4), format_number(r.pteducat), r.tracer, r.dx_36m,
                    r.conversion_date ? format_date(*r.conversion_date) : std::string(), std::to_string(r.max_gap_days),
                    r.split});
  write_csv(path, header, rows);
}

std::vector<PairedRecord> read_paired(const std::string& path) {
  const Cohort c = read_cohort(path, MissingPolicy::fail);
  std::vector<PairedRecord> out;
  for (const auto& r : c.rows) {
    if (r.split != "train" && r.split != "val" && r.split != "test")
      throw std::runtime_error(path + ":" + std::to_string(r.line) + ": split = '" + r.split +
                               "' (expected train, val or test; is this a table written by cpets-data pair?)");
    PairedRecord p;
    p.subject = r.subject, p.dx = r.dx, p.tracer = r.tracer;
    p.pet_date = r.pet_date, p.t1_date = r.t1_date, p.csf_date = r.csf_date;
    p.abeta = r.abeta, p.tau = r.tau, p.ptau = r.ptau;
    p.age = r.age, p.sex = r.sex, p.apoe4 = r.apoe4, p.pteducat = r.pteducat;
    p.max_gap_days = std::max({std::llabs(p.pet_date - p.t1_date), std::llabs(p.pet_date - p.csf_date),
                               std::llabs(p.t1_date - p.csf_date)});
    p.split = r.split;
    p.dx_36m = r.dx_36m, p.conversion_date = r.conversion_date;
    out.push_back(std::move(p));
  }
  return out;
}

ImagePaths image_paths(const PairedRecord& r) {
  if (!valid_subject_id(r.subject))  // read_cohort refuses these; a record built elsewhere must too
    throw std::runtime_error("Subject ID '" + printable(r.subject) +
                             "' cannot name an image folder (letters, digits, '_', '-' and '.' only, not starting with '.')");
  return {"t1/" + r.subject + "/" + format_date(r.t1_date) + "/t1.nii.gz",
          "pet/" + r.subject + "/" + format_date(r.pet_date) + "/" + lower(r.tracer) + ".nii.gz"};
}

std::vector<std::string> missing_images(const std::vector<PairedRecord>& records, const std::string& cohort_dir) {
  std::vector<std::string> missing;
  std::set<std::string> seen;
  for (const auto& r : records) {
    const ImagePaths p = image_paths(r);
    const std::pair<const std::string*, std::string> files[] = {{&p.t1, "T1 " + format_date(r.t1_date)},
                                                                 {&p.pet, "PET " + format_date(r.pet_date)}};
    for (const auto& [rel, what] : files) {
      std::error_code ec;
      if (seen.insert(*rel).second && !fs::exists(fs::path(cohort_dir) / *rel, ec))
        missing.push_back(*rel + " (" + r.subject + ", " + what + ")");
    }
  }
  return missing;
}

}  // namespace cpets::io
