"""scikit-learn's IsolationForest on the rows portent's example wrote; both sides' ROC AUC and
PR AUC computed here, with the same code. Called by bench/iforest_compare.sh."""

import argparse
import json
import statistics
import sys
import time

import numpy as np
import sklearn
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score


def load(path):
    a = np.loadtxt(path, delimiter=",", skiprows=1)
    return a[:, :4], a[:, 4].astype(bool)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--trees", type=int, default=100)
    p.add_argument("--subsample", type=int, default=256)
    a = p.parse_args()
    x_train, _ = load(f"{a.dir}/train.csv")
    x_test, y_test = load(f"{a.dir}/test.csv")
    portent = np.loadtxt(f"{a.dir}/portent_scores.csv", skiprows=1)

    def model():
        # One thread, as portent's fit; the same trees and rows per tree.
        return IsolationForest(
            n_estimators=a.trees, max_samples=a.subsample, random_state=0, n_jobs=1
        )

    m = model().fit(x_train)  # untimed warm-up
    fits, scorings = [], []
    for _ in range(a.reps):
        t = time.perf_counter()
        m = model().fit(x_train)
        fits.append((time.perf_counter() - t) * 1e3)
    for _ in range(a.reps):
        t = time.perf_counter()
        s = -m.score_samples(x_test)  # higher is more anomalous, as portent's raw score
        scorings.append((time.perf_counter() - t) * 1e3)
    out = {
        "sklearn_fit_ms": statistics.median(fits),
        "sklearn_score_ms": statistics.median(scorings),
        "sklearn_roc_auc": roc_auc_score(y_test, s),
        "sklearn_pr_auc": average_precision_score(y_test, s),
        "portent_roc_auc": roc_auc_score(y_test, portent),
        "portent_pr_auc": average_precision_score(y_test, portent),
        "anomalies": int(y_test.sum()),
        "test_rows": int(len(y_test)),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
