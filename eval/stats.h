// Statistics for the evaluation tables (docs/model.md §6): mean ± std over the test set, Pearson
// correlation, and the paired t-test between methods or between factual and counterfactual SUVR,
// with its two-sided p-value from the Student-t distribution (Boost.Math).
// Values agree with numpy/scipy (tests/fixtures/metrics/metrics.json).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cpets::eval {

double mean(const std::vector<double>& v);  // throws on an empty vector
// ddof 0 = population std (numpy's default, what the reference's SUVR tables print), 1 = sample.
double stddev(const std::vector<double>& v, int ddof = 0);

struct MeanStd {
  double mean = 0, std = 0;  // population std
  int64_t n = 0;
  std::string str(int precision = 4) const;  // "0.0412 ± 0.0051"
};
MeanStd mean_std(const std::vector<double>& v);

struct Correlation {
  double r = 0;  // Pearson r
  double p = 0;  // two-sided p of H0: r = 0 (t = r·√(n−2)/√(1−r²), n − 2 dof)
  int64_t n = 0;
};
// Throws when the lengths differ or n < 3; r is NaN when either sample is constant.
Correlation pearson(const std::vector<double>& x, const std::vector<double>& y);

struct PairedTTest {
  double t = 0, p = 0;      // statistic and two-sided p-value
  double dof = 0;           // n − 1
  double mean_diff = 0;     // mean(a − b)
  int64_t n = 0;
};
// scipy.stats.ttest_rel(a, b): t = mean(a − b) / (sd(a − b, ddof 1)/√n). Identical samples give
// t = NaN and p = NaN as scipy does (0/0); a constant non-zero difference gives t = ±inf, p = 0.
// Throws when the lengths differ or n < 2.
PairedTTest paired_t_test(const std::vector<double>& a, const std::vector<double>& b);

// The paper's significance marks after a value: " *" p < 0.05, " **" p < 0.01, " ***" p < 0.001,
// "" otherwise (NaN included).
std::string significance_stars(double p);

// I_x(a, b), the regularised incomplete beta function (a, b > 0, 0 ≤ x ≤ 1): Boost.Math's ibeta.
double incomplete_beta(double a, double b, double x);
// P(T ≤ t) for Student's t with `dof` > 0 degrees of freedom (need not be an integer).
double student_t_cdf(double t, double dof);
// Two-sided p-value P(|T| ≥ |t|).
double student_t_two_sided_p(double t, double dof);

}  // namespace cpets::eval
