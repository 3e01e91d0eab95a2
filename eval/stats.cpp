#include "eval/stats.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

#include <boost/math/distributions/students_t.hpp>
#include <boost/math/special_functions/beta.hpp>

namespace cpets::eval {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_paired(const std::vector<double>& a, const std::vector<double>& b, size_t min_n, const char* what) {
  if (a.size() != b.size())
    throw std::invalid_argument(std::string(what) + ": the two samples have different lengths (" +
                                std::to_string(a.size()) + " and " + std::to_string(b.size()) +
                                "); pair them by subject first");
  if (a.size() < min_n)
    throw std::invalid_argument(std::string(what) + ": needs at least " + std::to_string(min_n) + " pairs, got " +
                                std::to_string(a.size()));
}

}  // namespace

double mean(const std::vector<double>& v) {
  if (v.empty()) throw std::invalid_argument("mean: empty sample");
  double s = 0;
  for (double x : v) s += x;
  return s / double(v.size());
}

double stddev(const std::vector<double>& v, int ddof) {
  if (ddof < 0) throw std::invalid_argument("stddev: ddof must be ≥ 0");
  if (v.size() <= size_t(ddof))
    throw std::invalid_argument("stddev: needs more than " + std::to_string(ddof) + " values, got " +
                                std::to_string(v.size()));
  const double m = mean(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / double(v.size() - size_t(ddof)));
}

std::string MeanStd::str(int precision) const {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.*f ± %.*f", precision, mean, precision, std);
  return buf;
}

MeanStd mean_std(const std::vector<double>& v) { return {mean(v), stddev(v, 0), int64_t(v.size())}; }

Correlation pearson(const std::vector<double>& x, const std::vector<double>& y) {
  check_paired(x, y, 3, "pearson");
  const double mx = mean(x), my = mean(y);
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  Correlation c;
  c.n = int64_t(x.size());
  // A constant sample has no correlation (tested on the values, not on sxx, which rounding can
  // leave a hair above 0).
  auto constant = [](const std::vector<double>& v) {
    for (double e : v)
      if (e != v[0]) return false;
    return true;
  };
  if (constant(x) || constant(y) || sxx == 0 || syy == 0) {
    c.r = c.p = kNaN;
    return c;
  }
  c.r = std::max(-1.0, std::min(1.0, sxy / std::sqrt(sxx * syy)));
  const double dof = double(c.n - 2);
  if (std::fabs(c.r) == 1.0) {
    c.p = 0;
  } else {
    const double t = c.r * std::sqrt(dof / (1 - c.r * c.r));
    c.p = student_t_two_sided_p(t, dof);
  }
  return c;
}

PairedTTest paired_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  check_paired(a, b, 2, "paired t-test");
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  PairedTTest r;
  r.n = int64_t(d.size());
  r.dof = double(r.n - 1);
  r.mean_diff = mean(d);
  const double se = stddev(d, 1) / std::sqrt(double(r.n));
  if (se == 0) {
    r.t = r.mean_diff == 0 ? kNaN : std::copysign(std::numeric_limits<double>::infinity(), r.mean_diff);
    r.p = r.mean_diff == 0 ? kNaN : 0.0;
    return r;
  }
  r.t = r.mean_diff / se;
  r.p = student_t_two_sided_p(r.t, r.dof);
  return r;
}

// Boost.Math's ibeta and Student-t (libboost-math-dev), with NaN results instead of exceptions
// where an argument is outside the domain after our own checks.
using Policy = boost::math::policies::policy<boost::math::policies::domain_error<boost::math::policies::ignore_error>,
                                             boost::math::policies::overflow_error<boost::math::policies::ignore_error>>;

double incomplete_beta(double a, double b, double x) {
  if (!(a > 0) || !(b > 0))
    throw std::invalid_argument("incomplete_beta: a and b must be > 0, got a = " + std::to_string(a) +
                                ", b = " + std::to_string(b));
  if (!(x >= 0 && x <= 1)) throw std::invalid_argument("incomplete_beta: x must be in [0, 1], got " + std::to_string(x));
  return boost::math::ibeta(a, b, x, Policy());
}

double student_t_cdf(double t, double dof) {
  if (!(dof > 0)) throw std::invalid_argument("student_t_cdf: degrees of freedom must be > 0, got " + std::to_string(dof));
  if (std::isnan(t)) return kNaN;
  if (std::isinf(t)) return t > 0 ? 1.0 : 0.0;
  return boost::math::cdf(boost::math::students_t_distribution<double, Policy>(dof), t);
}

double student_t_two_sided_p(double t, double dof) {
  if (!(dof > 0)) throw std::invalid_argument("student_t_two_sided_p: degrees of freedom must be > 0");
  if (std::isnan(t)) return kNaN;
  if (std::isinf(t)) return 0.0;
  // 2·P(T > |t|) through the complement, which keeps its precision far in the tail.
  return 2 * boost::math::cdf(boost::math::complement(boost::math::students_t_distribution<double, Policy>(dof), std::fabs(t)));
}

std::string significance_stars(double p) {
  if (!(p < 0.05)) return "";
  return p < 0.001 ? " ***" : p < 0.01 ? " **" : " *";
}

}  // namespace cpets::eval
