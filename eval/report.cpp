#include "eval/report.h"

#include "io/files.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace cpets::eval {

namespace fs = std::filesystem;

namespace {

const char* const kPalette[] = {"#d62728", "#1f77b4", "#7f7f7f", "#2ca02c", "#9467bd", "#ff7f0e"};
const char* colour(size_t i) { return kPalette[i % (sizeof kPalette / sizeof *kPalette)]; }

std::string upper(std::string s) {
  for (auto& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string fmt(double x, int precision) {
  if (std::isnan(x)) return "–";
  if (std::isinf(x)) return x > 0 ? "∞" : "−∞";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", precision, x);
  return buf;
}

std::string signed_fmt(double x, int precision) {
  if (!std::isfinite(x)) return fmt(x, precision);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%+.*f", precision, x);
  return buf;
}

std::string fmt_p(double p) {
  if (std::isnan(p)) return "–";
  char buf[32];
  if (p < 1e-4)
    std::snprintf(buf, sizeof buf, "%.1e", p);
  else
    std::snprintf(buf, sizeof buf, "%.4f", p);
  return buf;
}

size_t display_width(const std::string& s) {
  size_t w = 0;
  for (unsigned char c : s) w += (c & 0xC0) != 0x80;
  return w;
}

std::string pad_right(const std::string& s, size_t width) {
  const size_t w = display_width(s);
  return w >= width ? s : s + std::string(width - w, ' ');
}

// Columns padded to their widest cell (display width, so "±" and "σ" count once), two-space indent.
std::string format_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], display_width(row[i]));
    }
  std::string out;
  for (const auto& row : rows) {
    std::string line = "  ";
    for (size_t i = 0; i < row.size(); ++i) line += pad_right(row[i], width[i] + 3);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

nlohmann::ordered_json num(double x) { return std::isfinite(x) ? nlohmann::ordered_json(x) : nlohmann::ordered_json(nullptr); }

// ---- SVG plots ---------------------------------------------------------------------------------

struct Series {
  std::string name;
  std::vector<double> x, y;
  const char* colour;
};

struct Axis {
  double lo, hi;
};

Axis nice_axis(double lo, double hi) {
  if (!(hi > lo)) {
    const double c = std::isfinite(lo) ? lo : 0;
    return {c - 0.5 * std::max(std::fabs(c), 1e-3), c + 0.5 * std::max(std::fabs(c), 1e-3)};
  }
  const double pad = 0.06 * (hi - lo);
  return {lo - pad, hi + pad};
}

// A scatter/line plot: one colour per series, points (and lines when `lines`), axis ticks,
// an optional identity line, a legend.
std::string svg_plot(const std::vector<Series>& series, const std::string& xlabel, const std::string& ylabel,
                     bool lines, bool identity, bool integer_x = false) {
  const double W = 640, H = 300, ml = 64, mr = 150, mt = 14, mb = 44;
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
        xlo = std::min(xlo, s.x[i]), xhi = std::max(xhi, s.x[i]);
        ylo = std::min(ylo, s.y[i]), yhi = std::max(yhi, s.y[i]);
      }
  if (!std::isfinite(xlo)) return "<p><em>no finite values to plot</em></p>";
  if (identity) xlo = ylo = std::min(xlo, ylo), xhi = yhi = std::max(xhi, yhi);
  const Axis ax = nice_axis(xlo, xhi), ay = nice_axis(ylo, yhi);
  auto px = [&](double x) { return ml + (x - ax.lo) / (ax.hi - ax.lo) * (W - ml - mr); };
  auto py = [&](double y) { return H - mb - (y - ay.lo) / (ay.hi - ay.lo) * (H - mt - mb); };
  std::ostringstream o;
  o.precision(5);
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
    << ' ' << H << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  o << "<rect x=\"" << ml << "\" y=\"" << mt << "\" width=\"" << W - ml - mr << "\" height=\"" << H - mt - mb
    << "\" fill=\"#fafafa\" stroke=\"#999\"/>\n";
  if (integer_x) {  // session numbers: a tick at each integer, thinned to at most ~12 labels
    const int64_t first = int64_t(std::ceil(ax.lo)), last = int64_t(std::floor(ax.hi));
    const int64_t step = std::max<int64_t>(1, (last - first + 1 + 11) / 12);
    for (int64_t v = first; v <= last; v += step)
      o << "<text x=\"" << px(double(v)) << "\" y=\"" << H - mb + 14 << "\" text-anchor=\"middle\">" << v << "</text>\n";
  }
  for (int i = 0; i <= 4; ++i) {
    const double xv = ax.lo + (ax.hi - ax.lo) * i / 4, yv = ay.lo + (ay.hi - ay.lo) * i / 4;
    if (!integer_x)
      o << "<text x=\"" << px(xv) << "\" y=\"" << H - mb + 14 << "\" text-anchor=\"middle\">" << fmt(xv, 3) << "</text>\n";
    o << "<text x=\"" << ml - 4 << "\" y=\"" << py(yv) + 4 << "\" text-anchor=\"end\">" << fmt(yv, 3) << "</text>\n";
    o << "<line x1=\"" << ml << "\" x2=\"" << W - mr << "\" y1=\"" << py(yv) << "\" y2=\"" << py(yv)
      << "\" stroke=\"#e4e4e4\"/>\n";
  }
  o << "<text x=\"" << (ml + W - mr) / 2 << "\" y=\"" << H - 8 << "\" text-anchor=\"middle\">" << html_escape(xlabel)
    << "</text>\n";
  o << "<text transform=\"translate(14," << (mt + H - mb) / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << html_escape(ylabel) << "</text>\n";
  if (identity)
    o << "<line x1=\"" << px(ax.lo) << "\" y1=\"" << py(ax.lo) << "\" x2=\"" << px(ax.hi) << "\" y2=\"" << py(ax.hi)
      << "\" stroke=\"#555\" stroke-dasharray=\"4 3\"/>\n";
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    if (lines) {
      o << "<polyline fill=\"none\" stroke=\"" << s.colour << "\" stroke-width=\"1.5\" points=\"";
      for (size_t i = 0; i < s.x.size(); ++i)
        if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) o << px(s.x[i]) << ',' << py(s.y[i]) << ' ';
      o << "\"/>\n";
    }
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i]))
        o << "<circle cx=\"" << px(s.x[i]) << "\" cy=\"" << py(s.y[i]) << "\" r=\"3\" fill=\"" << s.colour << "\"/>\n";
    o << "<rect x=\"" << W - mr + 12 << "\" y=\"" << mt + 6 + 18 * k << "\" width=\"10\" height=\"10\" fill=\"" << s.colour
      << "\"/><text x=\"" << W - mr + 27 << "\" y=\"" << mt + 15 + 18 * k << "\">" << html_escape(s.name) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

std::string per_session_plot(const Report& r, const std::string& key) {
  std::vector<Series> series;
  for (size_t m = 0; m < r.methods.size(); ++m) {
    Series s{r.methods[m].name, {}, metric_column(r.methods[m], key), colour(m)};
    for (size_t i = 0; i < s.y.size(); ++i) s.x.push_back(double(i + 1));
    series.push_back(std::move(s));
  }
  return svg_plot(series, "test session", metric_def(key).label, true, false, true);
}

std::string suvr_plot(const Report& r) {
  std::vector<Series> series;
  for (size_t m = 0; m < r.methods.size(); ++m) {
    Series s{r.methods[m].name, {}, {}, colour(m)};
    for (const auto& x : r.methods[m].sessions)
      if (x.has_suvr()) s.x.push_back(x.suvr_real), s.y.push_back(x.suvr_syn);
    series.push_back(std::move(s));
  }
  return svg_plot(series, "real cortical SUVR", "synthetic cortical SUVR", false, true);
}

std::string curve_plot(const ReportCurve& c) {
  static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"};
  std::vector<Series> series;
  for (size_t k = 0; k < c.series.size(); ++k)
    series.push_back({c.series[k].name, c.series[k].step, c.series[k].value, colours[k % 7]});
  return "<h3>" + html_escape(c.title) + "</h3>\n" + svg_plot(series, c.xlabel, c.ylabel, true, false);
}

std::string curves_html(const std::vector<ReportCurve>& curves) {
  std::string o;
  for (const auto& c : curves) o += curve_plot(c);
  return o;
}

std::string effects_html(const std::vector<EffectSummary>& effects) {
  std::ostringstream o;
  o << "<table><tr><th>intervention</th><th>region</th><th>sessions</th><th>model ΔSUVR</th><th>p (paired t)</th>"
       "<th>true ΔSUVR</th>"
       "<th>model / true</th><th>r (per session)</th><th>slope</th><th>signs agree</th></tr>\n";
  for (const auto& e : effects)
    for (size_t k = 0; k < 7; ++k) {
      if (!e.regions[k]) continue;
      const RegionEffect& x = *e.regions[k];
      const bool truth = std::isfinite(x.mean_true);
      o << "<tr><td>do(" << html_escape(e.intervention) << ")" << (e.skipped ? " <span class=\"muted\">(" +
           std::to_string(e.skipped) + " skipped)</span>" : "") << "</td><td>" << html_escape(region_name(k)) << "</td><td>"
        << x.n << "</td><td>" << signed_fmt(x.mean_model, 4) << "</td><td>" << fmt_p(x.p) << "</td><td>"
        << (truth ? signed_fmt(x.mean_true, 4) : "–")
        << "</td><td>" << (truth && x.mean_true != 0 ? fmt(x.mean_model / x.mean_true, 2) : "–") << "</td><td>"
        << (truth ? fmt(x.r, 2) : "–") << "</td><td>" << (truth ? fmt(x.slope, 2) : "–") << "</td><td>"
        << (truth ? (x.signs_agree ? "yes" : "<b>no</b>") : "–") << "</td></tr>\n";
    }
  o << "</table>\n";
  return o.str();
}

bool any_suvr(const Report& r) {
  for (const auto& m : r.methods)
    for (const auto& s : m.sessions)
      if (s.has_suvr()) return true;
  return false;
}

// Index of the best method per metric (by mean), or −1.
int best_method(const std::vector<MethodSummary>& sums, const MetricDef& d) {
  int best = -1;
  for (size_t m = 0; m < sums.size(); ++m) {
    const auto it = sums[m].metrics.find(d.key);
    if (it == sums[m].metrics.end() || std::isnan(it->second.mean)) continue;
    if (best < 0) {
      best = int(m);
      continue;
    }
    const double b = sums[size_t(best)].metrics.at(d.key).mean;
    if (d.higher_is_better ? it->second.mean > b : it->second.mean < b) best = int(m);
  }
  return best;
}

}  // namespace

// ---- montage ---------------------------------------------------------------------------------------

io::Image render_comparison_montage(const io::Volume& real, const std::vector<MontageMethod>& methods,
                                    const io::MontageOptions& opt) {
  if (real.numel() == 0) throw std::invalid_argument("montage: the real volume is empty");
  float hi = 0;
  for (float v : real.data) hi = std::max(hi, v);
  std::vector<io::Volume> errors;
  errors.reserve(methods.size());
  float err_max = 0;
  for (const auto& m : methods) {
    if (!m.volume) throw std::invalid_argument("montage: no volume for " + m.label);
    if (m.volume->shape != real.shape)
      throw std::invalid_argument("montage: " + m.label + " is " + io::shape_string(m.volume->shape) +
                                  " but the real PET is " + io::shape_string(real.shape));
    io::Volume e = *m.volume;
    for (size_t i = 0; i < e.data.size(); ++i) {
      e.data[i] -= real.data[i];
      err_max = std::max(err_max, std::fabs(e.data[i]));
    }
    errors.push_back(std::move(e));
  }
  const std::pair<float, float> range{0.f, std::max(hi, 1e-6f)}, err_range{-std::max(err_max, 1e-6f), std::max(err_max, 1e-6f)};
  std::vector<io::MontageRow> rows{{&real, "REAL", io::ColorMap::hot, range}};
  for (size_t k = 0; k < methods.size(); ++k) {
    rows.push_back({methods[k].volume, upper(methods[k].label), io::ColorMap::hot, range});
    rows.push_back({&errors[k], upper(methods[k].label) + " ERR", io::ColorMap::diverging, err_range});
  }
  return io::render_montage(rows, opt);
}

void write_comparison_montage(const std::string& path, const io::Volume& real, const std::vector<MontageMethod>& methods,
                              const io::MontageOptions& opt) {
  const fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  io::write_png(path, render_comparison_montage(real, methods, opt));
}

// ---- text --------------------------------------------------------------------------------------------

std::string text_summary(const Report& r) {
  std::vector<MethodSummary> sums;
  for (const auto& m : r.methods) sums.push_back(summarise(m));
  const size_t n = r.methods.empty() ? 0 : r.methods.front().sessions.size();
  std::ostringstream o;
  for (const auto& t : r.tables) {
    std::vector<std::vector<std::string>> rows{t.header};
    rows.insert(rows.end(), t.rows.begin(), t.rows.end());
    o << t.title << "\n" << format_table(rows);
    for (const auto& note : t.notes) o << "  " << note << "\n";
    o << "\n";
  }
  o << "mean ± std over " << n << " test session" << (n == 1 ? "" : "s") << "\n";
  std::vector<std::vector<std::string>> rows;
  rows.push_back({""});
  for (const auto& m : r.methods) rows.back().push_back(m.name);
  for (const auto& d : session_metrics()) {
    std::vector<std::string> row{d.label};
    bool any = false;
    for (const auto& s : sums) {
      const auto it = s.metrics.find(d.key);
      any = any || it != s.metrics.end();
      row.push_back(it == s.metrics.end() ? "–" : fmt(it->second.mean, d.precision) + " ± " + fmt(it->second.std, d.precision));
    }
    if (any) rows.push_back(row);
  }
  std::vector<std::string> corr{"SUVR r"};
  bool any_corr = false;
  for (const auto& s : sums) {
    any_corr = any_corr || s.suvr_correlation.has_value();
    corr.push_back(!s.suvr_correlation ? "–"
                   : std::isnan(s.suvr_correlation->r) ? "– (constant)"
                                                       : fmt(s.suvr_correlation->r, 3) + " (p " + fmt_p(s.suvr_correlation->p) + ")");
  }
  if (any_corr) rows.push_back(corr);
  o << format_table(rows);
  std::string last;
  std::vector<std::vector<std::string>> trows;
  auto flush = [&] {
    if (!trows.empty()) o << format_table(trows);
    trows.clear();
  };
  for (const auto& c : r.comparisons) {
    const std::string pair = c.method_a + " vs " + c.method_b;
    if (pair != last) {
      flush();
      o << pair << ", paired t-test on " << c.method_a << " − " << c.method_b << " (n = " << c.n << "):\n";
      trows.push_back({"", "mean diff", "t", "p", c.method_a + " better"});
      last = pair;
    }
    const MetricDef& d = metric_def(c.metric);
    trows.push_back({d.label, signed_fmt(c.test.mean_diff, d.precision + 1), fmt(c.test.t, 2),
                     fmt_p(c.test.p), std::to_string(c.a_better) + "/" + std::to_string(c.n)});
  }
  flush();
  if (r.tabular_reference)
    o << "tabular reference (regression on the training split): SUVR error " << fmt(r.tabular_reference->error, 4)
      << ", r " << fmt(r.tabular_reference->r.r, 3) << "\n";
  for (const auto& e : r.effects) {
    o << "do(" << e.intervention << "): " << e.sessions << " sessions"
      << (e.skipped ? " (" + std::to_string(e.skipped) + " skipped: no such world for them)" : "") << "\n";
    std::vector<std::vector<std::string>> rows{{"  region", "model ΔSUVR", "p", "true ΔSUVR", "model/true", "r", "slope", "signs"}};
    for (size_t k = 0; k < 7; ++k) {
      if (!e.regions[k]) continue;
      const RegionEffect& x = *e.regions[k];
      const bool truth = std::isfinite(x.mean_true);
      rows.push_back({"  " + region_name(k), signed_fmt(x.mean_model, 4), fmt_p(x.p), truth ? signed_fmt(x.mean_true, 4) : "-",
                      truth && x.mean_true != 0 ? fmt(x.mean_model / x.mean_true, 2) : "-", truth ? fmt(x.r, 2) : "-",
                      truth ? fmt(x.slope, 2) : "-", truth ? (x.signs_agree ? "agree" : "DIFFER") : "-"});
    }
    o << format_table(rows);
  }
  for (const auto& note : r.notes) o << "note: " << note << "\n";
  return o.str();
}

// ---- JSON ---------------------------------------------------------------------------------------------

nlohmann::ordered_json report_json(const Report& r) {
  nlohmann::ordered_json j;
  j["title"] = r.title;
  j["facts"] = nlohmann::ordered_json::object();
  for (const auto& [k, v] : r.facts) j["facts"][k] = v;
  j["notes"] = r.notes;
  j["methods"] = nlohmann::ordered_json::array();
  for (const auto& m : r.methods) {
    nlohmann::ordered_json jm;
    jm["name"] = m.name;
    jm["description"] = m.description;
    const MethodSummary s = summarise(m);
    jm["summary"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : s.metrics) jm["summary"][k] = {{"mean", num(v.mean)}, {"std", num(v.std)}, {"n", v.n}};
    nlohmann::ordered_json roi_json = nlohmann::ordered_json::object();
    const auto rois = roi_comparisons(m);
    for (size_t k = 0; k < rois.size(); ++k)
      if (rois[k])
        roi_json[six_rois()[k]] = {{"mean_real", num(rois[k]->mean_real)}, {"mean_syn", num(rois[k]->mean_syn)},
                                   {"t", num(rois[k]->test.t)}, {"p", num(rois[k]->test.p)}};
    if (!roi_json.empty()) jm["roi_suvr"] = roi_json;
    if (s.suvr_correlation)
      jm["suvr_correlation"] = {{"r", num(s.suvr_correlation->r)}, {"p", num(s.suvr_correlation->p)}, {"n", s.suvr_correlation->n}};
    jm["sessions"] = nlohmann::ordered_json::array();
    for (const auto& x : m.sessions) {
      nlohmann::ordered_json js;
      js["subject"] = x.subject;
      js["session"] = x.session;
      for (const auto& [k, v] : x.metrics) js["metrics"][k] = num(v);
      js["suvr_real"] = num(x.suvr_real);
      js["suvr_syn"] = num(x.suvr_syn);
      for (size_t k = 0; k < six_rois().size(); ++k) {
        js["roi_real"][six_rois()[k]] = num(x.roi_real[k]);
        js["roi_syn"][six_rois()[k]] = num(x.roi_syn[k]);
      }
      jm["sessions"].push_back(js);
    }
    j["methods"].push_back(jm);
  }
  j["tables"] = nlohmann::ordered_json::array();
  for (const auto& t : r.tables)
    j["tables"].push_back({{"title", t.title}, {"header", t.header}, {"rows", t.rows}, {"notes", t.notes}});
  j["comparisons"] = nlohmann::ordered_json::array();
  for (const auto& c : r.comparisons)
    j["comparisons"].push_back({{"a", c.method_a}, {"b", c.method_b}, {"metric", c.metric},
                                {"mean_diff", num(c.test.mean_diff)}, {"t", num(c.test.t)}, {"dof", c.test.dof},
                                {"p", num(c.test.p)}, {"a_better", c.a_better}, {"n", c.n}});
  j["montages"] = nlohmann::ordered_json::array();
  for (const auto& m : r.montages) j["montages"].push_back({{"caption", m.caption}, {"path", m.path}});
  if (r.tabular_reference)
    j["tabular_reference"] = {{"suvr_error", num(r.tabular_reference->error)}, {"suvr_r", num(r.tabular_reference->r.r)},
                              {"sessions", r.tabular_reference->sessions}};
  j["effects"] = nlohmann::ordered_json::array();
  for (const auto& e : r.effects) j["effects"].push_back(nlohmann::ordered_json::parse(e.to_json().dump()));
  return j;
}

void write_report_json(const std::string& path, const Report& r) {
  io::write_text_atomic(path, report_json(r).dump(1) + "\n");
}

// ---- HTML -------------------------------------------------------------------------------------------

std::string html_report(const Report& r) {
  std::vector<MethodSummary> sums;
  for (const auto& m : r.methods) sums.push_back(summarise(m));
  const size_t n = r.methods.empty() ? 0 : r.methods.front().sessions.size();
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << html_escape(r.title)
    << "</title>\n<style>\n"
       "body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}\n"
       "table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:3px 9px;text-align:right}\n"
       "th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}.best{font-weight:bold;background:#eaf6ea}\n"
       "figure{display:inline-block;margin:8px}figcaption{font-size:12px;color:#555}img{max-width:100%}\n"
       ".muted{color:#777;font-size:12px}\n</style></head><body>\n";
  o << "<h1>" << html_escape(r.title) << "</h1>\n";
  if (!r.facts.empty()) {
    o << "<table>\n";
    for (const auto& [k, v] : r.facts) o << "<tr><th>" << html_escape(k) << "</th><td>" << html_escape(v) << "</td></tr>\n";
    o << "</table>\n";
  }
  for (const auto& t : r.tables) {
    o << "<h2>" << html_escape(t.title) << "</h2>\n<table><tr>";
    for (const auto& h : t.header) o << "<th>" << html_escape(h) << "</th>";
    o << "</tr>\n";
    for (const auto& row : t.rows) {
      o << "<tr>";
      for (const auto& cell : row) o << "<td>" << html_escape(cell) << "</td>";
      o << "</tr>\n";
    }
    o << "</table>\n";
    for (const auto& note : t.notes) o << "<p class=\"muted\">" << html_escape(note) << "</p>\n";
  }

  if (!r.methods.empty()) {
    o << "<h2>Metrics, mean ± std over " << n << " test session" << (n == 1 ? "" : "s") << "</h2>\n<table><tr><th>metric</th>";
    for (const auto& m : r.methods) o << "<th>" << html_escape(m.name) << "</th>";
    o << "</tr>\n";
    for (const auto& d : session_metrics()) {
      bool any = false;
      for (const auto& s : sums) any = any || s.metrics.count(d.key);
      if (!any) continue;
      const int best = best_method(sums, d);
      o << "<tr><td>" << html_escape(d.label) << (d.higher_is_better ? " ↑" : " ↓") << "</td>";
      for (size_t m = 0; m < sums.size(); ++m) {
        const auto it = sums[m].metrics.find(d.key);
        o << "<td" << (int(m) == best ? " class=\"best\"" : "") << ">"
          << (it == sums[m].metrics.end() ? "–" : fmt(it->second.mean, d.precision) + " ± " + fmt(it->second.std, d.precision))
          << "</td>";
      }
      o << "</tr>\n";
    }
    bool any_corr = false;
    for (const auto& s : sums) any_corr = any_corr || s.suvr_correlation.has_value();
    if (any_corr) {
      o << "<tr><td>SUVR r (synthetic vs real)</td>";
      for (const auto& s : sums)
        o << "<td>"
          << (!s.suvr_correlation ? "–"
              : std::isnan(s.suvr_correlation->r) ? "– (constant)"
                                                  : fmt(s.suvr_correlation->r, 3) + " (p " + fmt_p(s.suvr_correlation->p) + ")")
          << "</td>";
      o << "</tr>\n";
    }
    o << "</table>\n";
    for (const auto& m : r.methods)
      if (!m.description.empty())
        o << "<p class=\"muted\"><b>" << html_escape(m.name) << "</b>: " << html_escape(m.description) << "</p>\n";
  }

  if (!r.comparisons.empty()) {
    o << "<h2>Paired t-tests</h2>\n<table><tr><th>methods (a − b)</th><th>metric</th><th>mean diff</th><th>t</th>"
         "<th>dof</th><th>p</th><th>a better</th></tr>\n";
    for (const auto& c : r.comparisons) {
      const MetricDef& d = metric_def(c.metric);
      o << "<tr><td>" << html_escape(c.method_a + " − " + c.method_b) << "</td><td>" << html_escape(d.label) << "</td><td>"
        << signed_fmt(c.test.mean_diff, d.precision + 1) << "</td><td>" << fmt(c.test.t, 2) << "</td><td>" << fmt(c.test.dof, 0)
        << "</td><td>" << fmt_p(c.test.p) << "</td><td>" << c.a_better << "/" << c.n << "</td></tr>\n";
    }
    o << "</table>\n";
  }

  if (n > 0) {
    o << "<h2>Per session</h2>\n" << per_session_plot(r, "mae") << per_session_plot(r, "ssim");
    if (any_suvr(r)) {
      o << "<h2>Cortical SUVR, synthetic against real</h2>\n" << suvr_plot(r);
      o << "<h3>Six-ROI SUVR, mean over sessions (p: paired t-test, synthetic against real)</h3>\n"
           "<table><tr><th>ROI</th><th>real</th>";
      for (const auto& m : r.methods) o << "<th>" << html_escape(m.name) << "</th>";
      o << "</tr>\n";
      std::vector<std::array<std::optional<RoiComparison>, 6>> rois;
      for (const auto& m : r.methods) rois.push_back(roi_comparisons(m));
      for (size_t k = 0; k < six_rois().size(); ++k) {
        std::vector<double> real;
        for (const auto& s : r.methods.front().sessions) real.push_back(s.roi_real[k]);
        o << "<tr><td>" << six_rois()[k] << "</td><td>" << fmt(mean(real), 3) << "</td>";
        for (const auto& rc : rois)
          o << "<td>" << (rc[k] ? fmt(rc[k]->mean_syn, 3) + " (p " + fmt_p(rc[k]->test.p) + ")" : "–") << "</td>";
        o << "</tr>\n";
      }
      o << "</table>\n";
    }
  }

  if (r.tabular_reference)
    o << "<p>Tabular reference (least-squares regression of real cortical SUVR on the model's tabular inputs, "
         "fitted on the training split): SUVR error " << fmt(r.tabular_reference->error, 4) << ", r "
      << fmt(r.tabular_reference->r.r, 3) << " over " << r.tabular_reference->sessions << " sessions — what the inputs "
      "allow without any image.</p>\n";
  if (!r.effects.empty())
    o << "<h2>Counterfactuals: ΔSUVR = counterfactual − factual</h2>\n<p class=\"muted\">Same abducted S, ε = 0; "
         "true ΔSUVR from the phantom's counterfactual world where it exists; r and slope compare the model's "
         "per-session Δ with the true one.</p>\n" << effects_html(r.effects);
  if (!r.curves.empty()) o << "<h2>" << html_escape(r.curves_title) << "</h2>\n" << curves_html(r.curves);

  if (!r.montages.empty()) {
    o << "<h2>Montages</h2>\n";
    for (const auto& m : r.montages)
      o << "<figure><img src=\"" << html_escape(m.path) << "\" alt=\"" << html_escape(m.caption) << "\"><figcaption>"
        << html_escape(m.caption) << "</figcaption></figure>\n";
  }

  for (const auto& m : r.methods) {
    std::vector<MetricDef> shown;  // the metrics this method has for some session
    for (const auto& d : session_metrics()) {
      bool any = false;
      for (const auto& s : m.sessions) any = any || s.metrics.count(d.key);
      if (any) shown.push_back(d);
    }
    o << "<details><summary>Per-session values: " << html_escape(m.name) << "</summary>\n<table><tr><th>subject</th><th>session</th>";
    for (const auto& d : shown) o << "<th>" << html_escape(d.label) << "</th>";
    o << "<th>SUVR real</th><th>SUVR syn</th></tr>\n";
    for (const auto& s : m.sessions) {
      o << "<tr><td>" << html_escape(s.subject) << "</td><td>" << html_escape(s.session) << "</td>";
      for (const auto& d : shown) {
        const auto it = s.metrics.find(d.key);
        o << "<td>" << (it == s.metrics.end() ? "–" : fmt(it->second, d.precision)) << "</td>";
      }
      o << "<td>" << fmt(s.suvr_real, 4) << "</td><td>" << fmt(s.suvr_syn, 4) << "</td></tr>\n";
    }
    o << "</table></details>\n";
  }

  if (!r.notes.empty()) {
    o << "<h2>Notes</h2>\n<ul>\n";
    for (const auto& note : r.notes) o << "<li>" << html_escape(note) << "</li>\n";
    o << "</ul>\n";
  }
  o << "</body></html>\n";
  return o.str();
}

void write_html_report(const std::string& path, const Report& r) { io::write_text_atomic(path, html_report(r)); }


namespace {
double json_or_nan(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}
}  // namespace

std::vector<ReportCurve> training_curves(const std::string& train_jsonl) {
  std::ifstream in(train_jsonl);
  if (!in) return {};
  ReportCurve l1{"Validation L1 and SSIM", "value", {{"L1", {}, {}}, {"SSIM", {}, {}}}};
  ReportCurve suvr{"Cortical SUVR error", "mean |synthetic − real|", {{"model", {}, {}}, {"mean training PET", {}, {}},
                                                                       {"tabular reference", {}, {}}}};
  ReportCurve corr{"r(synthetic SUVR, real SUVR)", "Pearson r", {{"model", {}, {}}, {"tabular reference", {}, {}}}};
  ReportCurve eff_r{"Counterfactuals: r(model ΔSUVR, true ΔSUVR), cortex", "Pearson r", {}};
  ReportCurve eff_mean{"Counterfactuals: mean cortical ΔSUVR, model and truth", "ΔSUVR", {}};
  std::map<std::string, size_t> world;  // intervention → series index in eff_r
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || j.value("type", "") != "validation") continue;
    const double step = json_or_nan(j, "step");
    auto push = [step](ReportCurve::Series& s, double v) { s.step.push_back(step), s.value.push_back(v); };
    push(l1.series[0], json_or_nan(j, "l1"));
    push(l1.series[1], json_or_nan(j, "ssim"));
    if (!j.contains("causal") || !j["causal"].is_object()) continue;
    const nlohmann::json& c = j["causal"];
    push(suvr.series[0], json_or_nan(c, "suvr_error"));
    push(suvr.series[1], json_or_nan(c, "mean_pet_error"));
    push(suvr.series[2], json_or_nan(c, "tabular_error"));
    push(corr.series[0], json_or_nan(c, "suvr_r"));
    push(corr.series[1], json_or_nan(c, "tabular_r"));
    for (const auto& e : c.value("effects", nlohmann::json::array())) {
      const std::string name = e.value("do", "?");
      if (!world.count(name)) {
        world[name] = eff_r.series.size();
        eff_r.series.push_back({"do(" + name + ")", {}, {}});
        eff_mean.series.push_back({"do(" + name + ") model", {}, {}});
        eff_mean.series.push_back({"do(" + name + ") true", {}, {}});
      }
      const size_t k = world[name];
      const nlohmann::json cortex = e.contains("regions") ? e["regions"].value("cortex", nlohmann::json::object())
                                                          : nlohmann::json::object();
      push(eff_r.series[k], json_or_nan(cortex, "r"));
      push(eff_mean.series[2 * k], json_or_nan(cortex, "model"));
      push(eff_mean.series[2 * k + 1], json_or_nan(cortex, "true"));
    }
  }
  std::vector<ReportCurve> out;
  if (!l1.series[0].step.empty()) out.push_back(std::move(l1));
  if (!suvr.series[0].step.empty()) out.push_back(std::move(suvr)), out.push_back(std::move(corr));
  if (!eff_r.series.empty()) out.push_back(std::move(eff_r)), out.push_back(std::move(eff_mean));
  return out;
}

void write_curves_html(const std::string& path, const std::string& title, const std::vector<ReportCurve>& curves) {
  std::string o = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html_escape(title) +
                  "</title><style>body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}</style></head><body>\n"
                  "<h1>" + html_escape(title) + "</h1>\n";
  o += curves.empty() ? "<p>No validation yet.</p>\n" : curves_html(curves);
  io::write_text_atomic(path, o + "</body></html>\n");
}

}  // namespace cpets::eval
