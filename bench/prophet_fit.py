#!/usr/bin/env python3
"""Time Python Prophet on the portent benchmark workload.

Reads a CSV `ds,y` (as printed by `cargo run -p portent-models --example bench_workload`)
and times what prometheus-anomaly-detector does on every refit: build a `Prophet`, `fit` it
on the window, `predict`. Here the predict is in-sample (every training timestamp, default
uncertainty sampling: 1000 simulated draws for yhat_lower/yhat_upper); daily and weekly
seasonality are on, yearly is off (one week of data).

Prints a short human summary to stderr and one JSON object to stdout.
Runs offline: the prophet wheel ships its compiled Stan model and CmdStan.

Usage: prophet_fit.py CSV [--reps 5] [--seed 42]
"""

import os

# One thread everywhere, set before numpy/cmdstanpy are imported, so that the comparison is
# one core against one core (portent's fit is single-threaded). Prophet's MAP fit runs
# CmdStan's L-BFGS in a subprocess, which inherits STAN_NUM_THREADS from this environment
# (cmdstanpy's optimize() does not override it); the model has no reduce_sum, so it would be
# single-threaded anyway. The BLAS limits cover numpy in predict's uncertainty sampling.
for var in ("STAN_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse
import json
import logging
import platform
import statistics
import sys
import time

# Quiet: cmdstanpy logs every CmdStan start/stop at INFO; prophet.plot logs an ERROR when
# plotly is missing (we do not plot). Configure the loggers before the imports log anything.
logging.getLogger("cmdstanpy").disabled = True
logging.getLogger("prophet").setLevel(logging.WARNING)
logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import prophet  # noqa: E402
from prophet import Prophet  # noqa: E402


def one_run(df: pd.DataFrame, seed: int) -> dict:
    """One refit as prometheus-anomaly-detector does it; times in seconds."""
    np.random.seed(seed)  # predict's uncertainty sampling draws from numpy's global RNG
    t0 = time.perf_counter()
    # A fresh model per refit, as PAD does (Prophet models cannot be refitted).
    m = Prophet(daily_seasonality=True, weekly_seasonality=True, yearly_seasonality=False)
    # `seed` goes to CmdStan's optimize(); L-BFGS starts from Prophet's deterministic init.
    m.fit(df, seed=seed)
    t1 = time.perf_counter()
    forecast = m.predict()  # no argument: in-sample, one row per training timestamp
    t2 = time.perf_counter()
    assert len(forecast) == len(df)
    return {
        "fit": t1 - t0,
        "predict": t2 - t1,
        "total": t2 - t0,
        "mae": float((forecast["yhat"] - df["y"]).abs().mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions (default 5)")
    ap.add_argument("--seed", type=int, default=42, help="base seed (default 42)")
    args = ap.parse_args()

    df = pd.read_csv(args.csv, parse_dates=["ds"])

    # One untimed warm-up: loads the Stan binary and numpy code paths, as in a long-running
    # detector (criterion warms up too).
    one_run(df, args.seed - 1)
    runs = [one_run(df, args.seed + r) for r in range(args.reps)]

    def med_ms(key: str) -> float:
        return statistics.median(r[key] for r in runs) * 1e3

    out = {
        "n": len(df),
        "reps": args.reps,
        "fit_ms": med_ms("fit"),
        "predict_ms": med_ms("predict"),
        "total_ms": med_ms("total"),
        "fit_ms_all": [round(r["fit"] * 1e3, 1) for r in runs],
        "total_ms_all": [round(r["total"] * 1e3, 1) for r in runs],
        "in_sample_mae": runs[0]["mae"],
        "prophet": prophet.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "stan_num_threads": os.environ["STAN_NUM_THREADS"],
    }
    print(
        f"prophet {out['prophet']} on {out['n']} samples, {args.reps} reps: "
        f"median fit {out['fit_ms']:.0f} ms, predict {out['predict_ms']:.0f} ms, "
        f"fit+predict {out['total_ms']:.0f} ms (fits: {out['fit_ms_all']})",
        file=sys.stderr,
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
