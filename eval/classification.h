// Binary classification metrics for the downstream diagnosis tables (pMCI vs sMCI, AD vs CN;
// reference-implementation.md §1.9): accuracy; precision, recall and F1 averaged over the two
// classes weighted by their support (scikit-learn's average="weighted", a 0/0 ratio counted as
// 0 as zero_division=0); the ROC curve and its area from a score (the logit of class 1), ties
// handled as scikit-learn does (one ROC point per distinct score). Checked against scikit-learn
// on tests/fixtures/metrics/classification.json.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cpets::eval {

struct RocCurve {
  // Points from (0, 0) at threshold +inf to (1, 1), one per distinct score, thresholds
  // descending; a sample is called positive when its score ≥ the threshold.
  std::vector<double> fpr, tpr, thresholds;
};

struct BinaryClassification {
  double accuracy = 0, precision = 0, recall = 0, f1 = 0;  // weighted over the classes
  double auc = 0;          // NaN when the labels hold one class only (no ROC exists)
  RocCurve roc;            // empty when auc is NaN
  int64_t n = 0, positives = 0;
};

// labels and predictions are 0/1, scores any finite numbers (higher = class 1). Throws when the
// lengths differ, a label is not 0/1, a score is not finite, or there are no samples.
BinaryClassification classify_metrics(const std::vector<int>& labels, const std::vector<int>& predictions,
                                      const std::vector<double>& scores);

RocCurve roc_curve(const std::vector<int>& labels, const std::vector<double>& scores);
// Trapezoidal area under the curve.
double roc_auc(const RocCurve& roc);

// The mean of several ROC curves (one per seed) on an even false-positive grid of `points`
// points from 0 to 1: at each grid value the highest true-positive rate a curve reaches at or
// below that false-positive rate (the ROC staircase), averaged over the curves. Thresholds are
// left empty (they differ per curve). Throws when there is no curve or points < 2.
RocCurve mean_roc(const std::vector<RocCurve>& curves, int points = 51);

// Class-weighted, L2-penalised logistic regression, the objective scikit-learn's
// LogisticRegression(C, class_weight) minimises (the intercept not penalised):
//   ½‖w‖² + C · Σ_i cw[y_i] · log(1 + exp(−(2y_i − 1)(w·x_i + b)))
// fitted by Newton's method with a backtracking line search until the step is below 1e-12
// (the objective is strictly convex in w; the intercept needs both classes). Checked against
// scikit-learn on tests/fixtures/metrics/classification.json.
struct LogisticRegression {
  std::vector<double> coef;
  double intercept = 0;
  int iterations = 0;
  double decision(const std::vector<double>& x) const;  // w·x + b, the logit of class 1
};
// Throws when the rows differ in length, a value is not finite, a label is not 0/1, only one
// class is present, class_weights is not two positive numbers or C is not positive.
LogisticRegression fit_logistic_regression(const std::vector<std::vector<double>>& x, const std::vector<int>& y,
                                           const std::vector<double>& class_weights, double C = 1.0);

}  // namespace cpets::eval
