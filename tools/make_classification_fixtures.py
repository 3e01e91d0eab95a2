#!/usr/bin/python3
"""Golden values for eval/classification (tests/test_metrics.cpp) from scikit-learn.

Writes tests/fixtures/metrics/classification.json: for each case the labels, the predictions,
the class-1 scores, and sklearn's accuracy_score, precision/recall/f1_score(average="weighted",
zero_division=0), roc_auc_score (null where sklearn refuses: one class in y_true) and roc_curve
(drop_intermediate=False); and for the logistic-regression cases the features, the labels, the
class weights and C, and LogisticRegression's coefficients, intercept and decision_function
(the tabular-only classifier of cpets-classify). The cases are written out here, so the fixture
holds only numbers.

Usage: python3 tools/make_classification_fixtures.py [--out tests/fixtures/metrics/classification.json]
(needs numpy and scikit-learn, e.g. the venv of `cpets.sh bench` with `pip install scikit-learn`)
"""
import argparse
import json
import os

import numpy as np
import sklearn
from sklearn import metrics


def case(name, y_true, y_pred, score):
    y_true, y_pred, score = np.asarray(y_true), np.asarray(y_pred), np.asarray(score, dtype=float)
    out = {"name": name, "y_true": y_true.tolist(), "y_pred": y_pred.tolist(), "score": score.tolist(),
           "accuracy": metrics.accuracy_score(y_true, y_pred)}
    for m in ("precision", "recall", "f1"):
        out[m] = getattr(metrics, f"{m}_score")(y_true, y_pred, average="weighted", zero_division=0)
    if len(set(y_true.tolist())) < 2:
        out["auc"] = None  # sklearn: "Only one class present in y_true" (ValueError, or NaN with a warning)
        return out
    out["auc"] = metrics.roc_auc_score(y_true, score)
    fpr, tpr, thr = metrics.roc_curve(y_true, score, drop_intermediate=False)
    out["roc_fpr"], out["roc_tpr"] = fpr.tolist(), tpr.tolist()
    out["roc_thresholds"] = [float(t) if np.isfinite(t) else None for t in thr]  # the first is +inf
    return out


def logistic_case(name, x, y, class_weight, C):
    from sklearn.linear_model import LogisticRegression
    x, y = np.asarray(x, dtype=float), np.asarray(y)
    m = LogisticRegression(C=C, class_weight={0: class_weight[0], 1: class_weight[1]}, tol=1e-12, max_iter=100000)
    m.fit(x, y)
    return {"name": name, "x": x.tolist(), "y": y.tolist(), "class_weights": list(class_weight), "C": C,
            "coef": m.coef_[0].tolist(), "intercept": float(m.intercept_[0]), "decision": m.decision_function(x).tolist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "metrics",
                                                  "classification.json"))
    a = ap.parse_args()
    rng = np.random.default_rng(2026)
    cases = []
    # Imbalanced like pMCI vs sMCI (1 : 5), noisy scores, predictions from a threshold.
    y = (rng.random(60) < 0.18).astype(int)
    s = rng.normal(size=60) + 1.2 * y
    cases.append(case("imbalanced", y, (s > 0.6).astype(int), s))
    # Ties in the scores (rounded), across both classes.
    s2 = np.round(rng.normal(size=40), 1)
    y2 = (rng.random(40) < 0.5).astype(int)
    cases.append(case("ties", y2, (s2 > 0).astype(int), s2))
    # Every prediction class 0: precision of class 1 is 0/0 (zero_division = 0).
    y3 = [0, 0, 1, 0, 1, 0, 0, 1]
    cases.append(case("all_predicted_0", y3, [0] * 8, [0.1, 0.2, 0.9, 0.3, 0.8, 0.4, 0.2, 0.7]))
    # Perfect separation, and a perfectly wrong classifier.
    cases.append(case("perfect", [0, 0, 1, 1, 0, 1], [0, 0, 1, 1, 0, 1], [-2, -1, 3, 2, -3, 1]))
    cases.append(case("inverted", [0, 0, 1, 1], [1, 1, 0, 0], [2, 1, -1, -2]))
    # One class only in y_true: sklearn refuses the AUC.
    cases.append(case("one_class", [1, 1, 1], [1, 0, 1], [0.5, -0.5, 2.0]))
    # Logistic regression: a tabular token of 5 values in [0, 1], imbalanced like pMCI (weights
    # 1:4), balanced like AD vs CN (1:1, a stronger penalty), and separable data (the penalty keeps
    # the coefficients finite).
    x = rng.random((80, 5))
    y = (rng.random(80) < 1 / (1 + np.exp(-(3 * x[:, 0] - 2 * x[:, 3] - 0.8)))).astype(int)
    logistic = [logistic_case("weighted_1_4", x, y, (1.0, 4.0), 1.0),
                logistic_case("unweighted_C_0.1", x, y, (1.0, 1.0), 0.1)]
    xs = rng.random((20, 2))
    logistic.append(logistic_case("separable", xs, (xs[:, 0] > 0.5).astype(int), (1.0, 1.0), 1.0))
    doc = {"sklearn": sklearn.__version__, "cases": cases, "logistic": logistic}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {a.out} ({len(cases)} cases, scikit-learn {sklearn.__version__})")


if __name__ == "__main__":
    main()
