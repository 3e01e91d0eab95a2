#include "eval/classification.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

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

}  // namespace cpets::eval
