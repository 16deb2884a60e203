#!/usr/bin/env bash
# Python Prophet (fit + in-sample predict, as prometheus-anomaly-detector uses it) against
# portent's seasonal-baseline fit, on the same seeded one-week series, in the same run.
# See bench/README.md. Run from anywhere: bash bench/prophet_compare.sh
#
# Environment:
#   PORTENT_BENCH_VENV   venv for prophet, outside the repo (default ~/.cache/portent-bench-venv)
#   PORTENT_BENCH_REPS   timed Prophet repetitions (default 5; plus one untimed warm-up)
#   PORTENT_BENCH_CPU    if set, pin both sides to this CPU with taskset (default: unpinned)
#   PYTHON               interpreter that creates the venv (default python3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROPHET_VERSION=1.5.0
N=10080 # the criterion group seasonal_fit_10080 fits workload(10_080)
VENV=${PORTENT_BENCH_VENV:-$HOME/.cache/portent-bench-venv}
REPS=${PORTENT_BENCH_REPS:-5}
PIN=()
if [[ -n ${PORTENT_BENCH_CPU:-} ]]; then
    PIN=(taskset -c "$PORTENT_BENCH_CPU")
fi
NPROC=$(nproc) # before OMP_NUM_THREADS is set: nproc honours it
# One thread for Prophet's CmdStan and numpy (prophet_fit.py sets these too).
export STAN_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

log() { printf '== %s\n' "$*" >&2; }

# --- 1. Prophet in a venv outside the repo ------------------------------------------------
if ! "$VENV/bin/python" -c "import pandas, prophet; assert prophet.__version__ == '$PROPHET_VERSION'" \
    2>/dev/null; then
    log "installing prophet==$PROPHET_VERSION into $VENV (first time: a few minutes)"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "prophet==$PROPHET_VERSION" pandas
fi

# --- 2. The workload, exactly as the criterion bench generates it ----------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "writing the workload ($N samples)"
cargo run --release -q -p portent-models --example bench_workload -- "$N" >"$work/workload.csv"

target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
# Build the bench now so that compiling is neither timed nor pinned.
cargo bench -q -p portent-models --bench models --no-run

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 3. Prophet -------------------------------------------------------------------------------
log "timing Prophet: 1 warm-up + $REPS repetitions of fit + in-sample predict"
"${PIN[@]}" "$VENV/bin/python" bench/prophet_fit.py "$work/workload.csv" --reps "$REPS" \
    >"$work/prophet.json"

# --- 4. portent (criterion) -------------------------------------------------------------------
log "timing portent: cargo bench -p portent-models --bench models -- seasonal_fit_10080"
touch "$work/stamp"
"${PIN[@]}" cargo bench -q -p portent-models --bench models -- seasonal_fit_10080 --noplot \
    >"$work/criterion.txt" 2>&1 || { cat "$work/criterion.txt" >&2; exit 1; }
grep -E '^seasonal_fit_10080|time:' "$work/criterion.txt" >&2 || true
crit="$target_dir/criterion/seasonal_fit_10080"
for b in portent_robust_fourier select_model; do
    if [[ ! "$crit/$b/new/estimates.json" -nt "$work/stamp" ]]; then
        echo "criterion did not write $crit/$b/new/estimates.json" >&2
        exit 1
    fi
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 5. Report ------------------------------------------------------------------------------
cpu=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*:[[:space:]]*//' || true)
NPROC=$NPROC CPU=${cpu:-unknown} RUSTC=$(rustc --version) PINNED=${PORTENT_BENCH_CPU:-none} \
LOAD_BEFORE=$load_before LOAD_AFTER=$load_after CRIT=$crit \
    "$VENV/bin/python" - "$work/prophet.json" <<'EOF'
import json, os, sys

p = json.load(open(sys.argv[1]))

def median_ms(bench):
    with open(f"{os.environ['CRIT']}/{bench}/new/estimates.json") as f:
        return json.load(f)["median"]["point_estimate"] / 1e6  # criterion reports ns

portent_fit = median_ms("portent_robust_fourier")
portent_refit = median_ms("select_model")
print(f"machine: {os.environ['NPROC']} cpus, {os.environ['CPU']}; "
      f"load avg {os.environ['LOAD_BEFORE']} -> {os.environ['LOAD_AFTER']}; "
      f"pinned to cpu: {os.environ['PINNED']}")
print(f"versions: prophet {p['prophet']}, python {p['python']}, numpy {p['numpy']}, "
      f"pandas {p['pandas']}; {os.environ['RUSTC']}")
print(f"series: {p['n']} one-minute samples; Prophet: {p['reps']} reps (median), "
      f"STAN_NUM_THREADS={p['stan_num_threads']}; portent: criterion median")
print()
rows = [
    ("portent seasonal-baseline fit", portent_fit, None),
    ("portent select_model (whole refit)", portent_refit, None),
    ("Prophet fit", p["fit_ms"], p["fit_ms"] / portent_fit),
    ("Prophet fit + in-sample predict", p["total_ms"], p["total_ms"] / portent_fit),
]
print(f"{'':38}{'median ms':>12}{'Prophet / portent fit':>24}")
for name, ms, ratio in rows:
    r = f"{ratio:.0f}x" if ratio is not None else ""
    print(f"{name:38}{ms:12.2f}{r:>24}")
print(f"{'(Prophet predict alone)':38}{p['predict_ms']:12.2f}")
print()
print(json.dumps({
    "n": p["n"],
    "portent_fit_ms": round(portent_fit, 4),
    "portent_select_model_ms": round(portent_refit, 4),
    "prophet_fit_ms": round(p["fit_ms"], 1),
    "prophet_predict_ms": round(p["predict_ms"], 1),
    "prophet_fit_predict_ms": round(p["total_ms"], 1),
    "ratio_prophet_fit": round(p["fit_ms"] / portent_fit, 1),
    "ratio_prophet_fit_predict": round(p["total_ms"] / portent_fit, 1),
    "prophet_reps": p["reps"],
    "prophet": p["prophet"],
    "python": p["python"],
    "nproc": int(os.environ["NPROC"]),
    "cpu": os.environ["CPU"],
    "loadavg_before": os.environ["LOAD_BEFORE"],
    "loadavg_after": os.environ["LOAD_AFTER"],
    "pinned_cpu": os.environ["PINNED"],
}))
EOF
