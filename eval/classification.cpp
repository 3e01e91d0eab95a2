#include "eval/classification.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

#include <Eigen/Dense>

namespace cpets::eval {

namespace {

void check_inputs(const std::vector<int>& labels, const std::vector<int>* predictions, const std::vector<double>& scores) {
  if (labels.empty()) throw std::invalid_argument("classification metrics: no samples");
  if (scores.size() != labels.size() || (predictions && predictions->size() != labels.size()))
    throw std::invalid_argument("classification metrics: " + std::to_string(labels.size()) + " labels but " +
                                std::to_string(scores.size()) + " scores" +
                                (predictions ? " and " + std::to_string(predictions->size()) + " predictions" : ""));
  for (size_t i = 0; i < labels.size(); ++i) {
    if ((labels[i] != 0 && labels[i] != 1) || (predictions && (*predictions)[i] != 0 && (*predictions)[i] != 1))
      throw std::invalid_argument("classification metrics: sample " + std::to_string(i) +
                                  " has a label or prediction other than 0/1");
    if (!std::isfinite(scores[i]))
      throw std::invalid_argument("classification metrics: sample " + std::to_string(i) + " has a non-finite score");
  }
}

double ratio(int64_t a, int64_t b) { return b == 0 ? 0.0 : double(a) / double(b); }

}  // namespace

RocCurve roc_curve(const std::vector<int>& labels, const std::vector<double>& scores) {
  check_inputs(labels, nullptr, scores);
  std::vector<size_t> order(labels.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  const int64_t positives = std::count(labels.begin(), labels.end(), 1);
  const int64_t negatives = int64_t(labels.size()) - positives;
  RocCurve r;
  r.fpr.push_back(0), r.tpr.push_back(0), r.thresholds.push_back(std::numeric_limits<double>::infinity());
  int64_t tp = 0, fp = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    (labels[order[k]] == 1 ? tp : fp) += 1;
    // One point per distinct score: after the last sample of a run of ties.
    if (k + 1 < order.size() && scores[order[k + 1]] == scores[order[k]]) continue;
    r.fpr.push_back(negatives ? double(fp) / double(negatives) : std::nan(""));
    r.tpr.push_back(positives ? double(tp) / double(positives) : std::nan(""));
    r.thresholds.push_back(scores[order[k]]);
  }
  return r;
}

double roc_auc(const RocCurve& roc) {
  double area = 0;
  for (size_t i = 1; i < roc.fpr.size(); ++i) area += (roc.fpr[i] - roc.fpr[i - 1]) * (roc.tpr[i] + roc.tpr[i - 1]) / 2;
  return area;
}

BinaryClassification classify_metrics(const std::vector<int>& labels, const std::vector<int>& predictions,
                                      const std::vector<double>& scores) {
  check_inputs(labels, &predictions, scores);
  BinaryClassification m;
  m.n = int64_t(labels.size());
  int64_t confusion[2][2] = {{0, 0}, {0, 0}};  // [truth][prediction]
  for (size_t i = 0; i < labels.size(); ++i) ++confusion[labels[i]][predictions[i]];
  m.positives = confusion[1][0] + confusion[1][1];
  m.accuracy = double(confusion[0][0] + confusion[1][1]) / double(m.n);
  for (int c = 0; c < 2; ++c) {
    const int64_t tp = confusion[c][c], support = confusion[c][0] + confusion[c][1];
    const int64_t predicted = confusion[0][c] + confusion[1][c];
    const double p = ratio(tp, predicted), r = ratio(tp, support), f = p + r > 0 ? 2 * p * r / (p + r) : 0.0;
    const double w = double(support) / double(m.n);
    m.precision += w * p, m.recall += w * r, m.f1 += w * f;
  }
  if (m.positives == 0 || m.positives == m.n) {
    m.auc = std::nan("");  // one class only: scikit-learn refuses too
  } else {
    m.roc = roc_curve(labels, scores);
    m.auc = roc_auc(m.roc);
  }
  return m;
}

RocCurve mean_roc(const std::vector<RocCurve>& curves, int points) {
  if (curves.empty()) throw std::invalid_argument("mean_roc: no curve to average");
  if (points < 2) throw std::invalid_argument("mean_roc: points = " + std::to_string(points) + "; use at least 2");
  RocCurve mean;
  for (int k = 0; k < points; ++k) {
    const double f = double(k) / double(points - 1);
    double sum = 0;
    for (const RocCurve& c : curves) {
      double best = 0;  // curves start at (0, 0)
      for (size_t i = 0; i < c.fpr.size(); ++i)
        if (c.fpr[i] <= f + 1e-12) best = std::max(best, c.tpr[i]);
      sum += best;
    }
    mean.fpr.push_back(f);
    mean.tpr.push_back(sum / double(curves.size()));
  }
  return mean;
}

double LogisticRegression::decision(const std::vector<double>& x) const {
  if (x.size() != coef.size())
    throw std::invalid_argument("logistic regression: " + std::to_string(x.size()) + " features given, the model has " +
                                std::to_string(coef.size()));
  double z = intercept;
  for (size_t j = 0; j < x.size(); ++j) z += coef[j] * x[j];
  return z;
}

namespace {
// log(1 + exp(t)) without overflow.
double softplus(double t) { return t > 0 ? t + std::log1p(std::exp(-t)) : std::log1p(std::exp(t)); }
}  // namespace

LogisticRegression fit_logistic_regression(const std::vector<std::vector<double>>& x, const std::vector<int>& y,
                                           const std::vector<double>& class_weights, double C) {
  const size_t n = y.size();
  if (n == 0 || x.size() != n) throw std::invalid_argument("logistic regression: the features and labels differ in count");
  const size_t d = x.front().size();
  bool seen[2] = {false, false};
  for (size_t i = 0; i < n; ++i) {
    if (x[i].size() != d) throw std::invalid_argument("logistic regression: rows of different lengths");
    for (double v : x[i])
      if (!std::isfinite(v)) throw std::invalid_argument("logistic regression: a feature is not finite");
    if (y[i] != 0 && y[i] != 1) throw std::invalid_argument("logistic regression: a label is not 0 or 1");
    seen[y[i]] = true;
  }
  if (!seen[0] || !seen[1]) throw std::invalid_argument("logistic regression: the labels hold one class only");
  if (class_weights.size() != 2 || !(class_weights[0] > 0) || !(class_weights[1] > 0))
    throw std::invalid_argument("logistic regression: give two positive class weights");
  if (!(C > 0) || !std::isfinite(C)) throw std::invalid_argument("logistic regression: C must be positive");

  // θ = (w, b); rows of A are (x_i, 1).
  const Eigen::Index p = Eigen::Index(d) + 1;
  Eigen::MatrixXd A = Eigen::MatrixXd::Zero(Eigen::Index(n), p);
  Eigen::VectorXd label_sign = Eigen::VectorXd::Zero(Eigen::Index(n)), cw = Eigen::VectorXd::Zero(Eigen::Index(n));
  for (size_t i = 0; i < n; ++i) {
    const Eigen::Index row = Eigen::Index(i);
    for (size_t j = 0; j < d; ++j) A(row, Eigen::Index(j)) = x[i][j];
    A(row, Eigen::Index(d)) = 1;
    label_sign[row] = y[i] ? 1.0 : -1.0;
    cw[row] = C * class_weights[size_t(y[i])];
  }
  Eigen::VectorXd penalty = Eigen::VectorXd::Ones(p);
  penalty(Eigen::Index(d)) = 0;  // the intercept is not penalised
  auto objective = [&](const Eigen::VectorXd& theta) {
    const Eigen::VectorXd z = A * theta;
    double f = 0.5 * theta.cwiseProduct(penalty).dot(theta);
    for (Eigen::Index i = 0; i < z.size(); ++i) f += cw[i] * softplus(-label_sign[i] * z[i]);
    return f;
  };
  Eigen::VectorXd theta = Eigen::VectorXd::Zero(p);
  LogisticRegression model;
  for (int it = 0; it < 200; ++it) {
    const Eigen::VectorXd z = A * theta;
    Eigen::VectorXd r(z.size()), h(z.size());  // dℓ/dz and d²ℓ/dz² per sample, weighted
    for (Eigen::Index i = 0; i < z.size(); ++i) {
      const double prob = 1 / (1 + std::exp(-z[i]));  // P(y = 1)
      r[i] = cw[i] * (prob - (label_sign[i] > 0 ? 1.0 : 0.0));
      h[i] = cw[i] * prob * (1 - prob);
    }
    const Eigen::VectorXd grad = penalty.cwiseProduct(theta) + A.transpose() * r;
    Eigen::MatrixXd hess = A.transpose() * h.asDiagonal() * A;
    hess.diagonal() += penalty;
    const Eigen::VectorXd step = hess.ldlt().solve(grad);
    double t = 1;  // backtracking: Newton steps far from the optimum can overshoot
    const double f0 = objective(theta);
    while (t > 1e-10 && objective(theta - t * step) > f0 - 1e-4 * t * grad.dot(step)) t *= 0.5;
    theta -= t * step;
    model.iterations = it + 1;
    if ((t * step).cwiseAbs().maxCoeff() < 1e-12) break;
  }
  model.coef.assign(theta.data(), theta.data() + d);
  model.intercept = theta(Eigen::Index(d));
  return model;
}

}  // namespace cpets::eval
