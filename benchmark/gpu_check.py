"""One-command check of nlsq on an accelerator: batches of 1e4-1e6 fits and one large fit.

For float32 and float64 it runs ``curve_fit_batch`` on gaussian peaks of 64 points
(:mod:`benchmark.batch_fits`'s problem) in batches of 10,000, 100,000 and 1,000,000,
and ``curve_fit`` on one gaussian of 10,000,000 points. Each case reports the first
call (trace, compile and run), the median of the later calls, the fits (or points) per
second, the fits that converged, their mean function evaluations and the largest error
of ``popt`` against the true parameters, in units of the height and the width (the
noise makes errors of a few percent normal). A first call compiles only for a shape
not met before (batches run in chunks of one compiled size). The table goes to stdout
and, as markdown, to ``--out``.

On a machine with a GPU (JAX with CUDA installed)::

    python -m benchmark.gpu_check --out gpu_check.md

``--quick`` runs small sizes (1,000 and 10,000 fits, a fit of 100,000 points) so that
the script can be checked on a CPU in a minute; ``--platform`` picks JAX's platform.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("NLSQ_DISK_CACHE", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import nlsq  # noqa: E402
from benchmark.batch_fits import X, environment, gaussian, make_batch  # noqa: E402

TRUTH = (2.0, 0.3, 0.8)


def batch_case(n_fits: int, dtype: str, repeats: int, seed: int) -> dict:
    """First and steady calls of ``curve_fit_batch`` on ``n_fits`` peaks."""
    rng = np.random.default_rng([seed, n_fits])
    truth_rng = np.random.default_rng([seed, n_fits])
    y, p0 = make_batch(n_fits, rng)
    # make_batch draws a, mu, s first: the same draws give the true parameters.
    truth = np.column_stack(
        [
            truth_rng.uniform(1.0, 3.0, n_fits),
            truth_rng.uniform(-1.5, 1.5, n_fits),
            truth_rng.uniform(0.4, 1.5, n_fits),
        ]
    )
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        result = nlsq.curve_fit_batch(gaussian, X, y, p0=p0, dtype=dtype)
        times.append(time.perf_counter() - start)
    ok = result.success
    # Errors in units of (height, width, width): the centre may be near zero.
    scale = truth[ok][:, [0, 2, 2]]
    error = np.abs(result.popt[ok] - truth[ok]) / scale
    steady = statistics.median(times[1:])
    return {
        "case": f"batch {n_fits:,} x 64",
        "dtype": dtype,
        "first_s": times[0],
        "steady_s": steady,
        "rate": f"{n_fits / steady:,.0f} fits/s",
        "converged": f"{int(ok.sum()):,}/{n_fits:,}",
        # Noise of 0.05 on peaks of height 1-3: errors of a few percent are expected.
        "max_error": float(error.max()) if error.size else float("nan"),
        "nfev_mean": float(result.nfev.mean()),
    }


def large_case(points: int, dtype: str, repeats: int, seed: int) -> dict:
    """First and steady calls of ``curve_fit`` on one peak of ``points`` points."""
    rng = np.random.default_rng([seed, points])
    x = np.linspace(-5.0, 5.0, points)
    y = TRUTH[0] * np.exp(-(((x - TRUTH[1]) / TRUTH[2]) ** 2) / 2)
    y += 0.05 * rng.standard_normal(points)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        popt, _ = nlsq.curve_fit(gaussian, x, y, p0=(1.5, 0.0, 1.0), dtype=dtype)
        times.append(time.perf_counter() - start)
    steady = statistics.median(times[1:])
    error = np.abs(np.asarray(popt) - TRUTH) / np.asarray(TRUTH)[[0, 2, 2]]
    return {
        "case": f"single fit, {points:,} points",
        "dtype": dtype,
        "first_s": times[0],
        "steady_s": steady,
        "rate": f"{points / steady:,.0f} points/s",
        "converged": "yes" if np.all(np.isfinite(popt)) else "no",
        "max_error": float(error.max()),
        "nfev_mean": float("nan"),
    }


def markdown(rows: list[dict], env: dict) -> str:
    lines = [
        f"nlsq on {env['device']} (jax {env['jax']}, {env['platform']})",
        "",
        "| case | dtype | first call [s] | steady [s] | rate | converged | mean nfev "
        "| max error popt |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['dtype']} | {r['first_s']:.2f} | {r['steady_s']:.3f} "
            f"| {r['rate']} | {r['converged']} | {r['nfev_mean']:.2f} | {r['max_error']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a CPU check)")
    parser.add_argument("--fits", default=None, help="comma-separated batch sizes")
    parser.add_argument("--points", type=lambda v: int(float(v)), default=None)
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=3, help="steady calls per case")
    parser.add_argument("--platform", default=None, help="JAX platform (cpu, gpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="gpu_check.md", help="markdown table written here")
    args = parser.parse_args(argv)
    if args.platform:
        jax.config.update("jax_platforms", args.platform)
    fits = args.fits or ("1e3,1e4" if args.quick else "1e4,1e5,1e6")
    points = args.points or (100_000 if args.quick else 10_000_000)
    repeats = 1 if args.quick else args.repeats

    env = environment()
    rows = []
    for dtype in args.dtypes.split(","):
        for n_fits in (int(float(v)) for v in fits.split(",")):
            rows.append(batch_case(n_fits, dtype, repeats, args.seed))
            print(rows[-1], file=sys.stderr, flush=True)
        rows.append(large_case(points, dtype, repeats, args.seed))
        print(rows[-1], file=sys.stderr, flush=True)
    table = markdown(rows, env)
    print(table)
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
