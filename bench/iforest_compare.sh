#!/usr/bin/env bash
# scikit-learn's IsolationForest against portent's, on the same seeded rows, in the same run:
# fit time, score time, ROC AUC and PR AUC. See bench/README.md.
# Run from anywhere: bash bench/iforest_compare.sh
#
# Environment:
#   PORTENT_BENCH_VENV   venv for scikit-learn, outside the repo (default ~/.cache/portent-bench-venv)
#   PORTENT_BENCH_REPS   timed repetitions of each side (default 5; plus one untimed warm-up)
#   PYTHON               interpreter that creates the venv (default python3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SKLEARN_VERSION=1.8.0
VENV=${PORTENT_BENCH_VENV:-$HOME/.cache/portent-bench-venv}
REPS=${PORTENT_BENCH_REPS:-5}
# One thread on both sides.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

log() { printf '== %s\n' "$*" >&2; }

if ! "$VENV/bin/python" -c "import sklearn; assert sklearn.__version__ == '$SKLEARN_VERSION'" \
    2>/dev/null; then
    log "installing scikit-learn==$SKLEARN_VERSION into $VENV"
    [[ -x "$VENV/bin/python" ]] || "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "scikit-learn==$SKLEARN_VERSION"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "portent: writing the rows, timing fit and scoring ($REPS repetitions)"
cargo run --release -q -p portent-models --example iforest_compare -- "$work" "$REPS" \
    >"$work/portent.json"
log "scikit-learn: timing fit and scoring ($REPS repetitions)"
"$VENV/bin/python" bench/iforest_compare.py "$work" --reps "$REPS" >"$work/sklearn.json"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

LOAD_BEFORE=$load_before LOAD_AFTER=$load_after RUSTC=$(rustc --version) \
    "$VENV/bin/python" - "$work/portent.json" "$work/sklearn.json" <<'PY'
import json, os, sys
p = json.load(open(sys.argv[1]))
s = json.load(open(sys.argv[2]))
print(f"rows: {p['train_rows']} to fit, {s['test_rows']} to score ({s['anomalies']} anomalies); "
      f"{p['n_trees']} trees of {p['subsample']} rows; medians of {p['reps']}")
print(f"versions: scikit-learn {s['sklearn']}, numpy {s['numpy']}, python {s['python']}; "
      f"{os.environ['RUSTC']}; load avg {os.environ['LOAD_BEFORE']} -> {os.environ['LOAD_AFTER']}")
print()
print(f"{'':14}{'fit ms':>10}{'score ms':>10}{'ROC AUC':>10}{'PR AUC':>10}")
print(f"{'portent':14}{p['fit_ms']:10.1f}{p['score_ms']:10.1f}"
      f"{s['portent_roc_auc']:10.3f}{s['portent_pr_auc']:10.3f}")
print(f"{'scikit-learn':14}{s['sklearn_fit_ms']:10.1f}{s['sklearn_score_ms']:10.1f}"
      f"{s['sklearn_roc_auc']:10.3f}{s['sklearn_pr_auc']:10.3f}")
fit_ratio = s["sklearn_fit_ms"] / p["fit_ms"]
score_ratio = s["sklearn_score_ms"] / p["score_ms"]
print(f"{'ratio':14}{fit_ratio:9.1f}x{score_ratio:9.1f}x  (scikit-learn time / portent time)")
print()
print(json.dumps({**{f"portent_{k}": v for k, v in p.items()}, **s,
                  "fit_ratio": round(fit_ratio, 2), "score_ratio": round(score_ratio, 2),
                  "loadavg_before": os.environ["LOAD_BEFORE"],
                  "loadavg_after": os.environ["LOAD_AFTER"]}))
PY
