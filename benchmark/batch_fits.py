"""Throughput of ``nlsq.curve_fit_batch`` against a loop of ``scipy.optimize.curve_fit``.

Gaussian peaks ``a * exp(-((x - mu) / s)**2 / 2)`` of 64 points, with per-fit initial
guesses taken from the data (height and position of the maximum, width 1), fitted
unbounded and with bounds, in batches of 1,000 and 10,000, in float64 (and, with
``--dtypes float64,float32``, in float32). For each case, in one process:

* nlsq first call: the first ``curve_fit_batch`` call for that case after nlsq's and
  JAX's in-memory caches are cleared, with the persistent compilation cache off, so it
  traces and compiles the batch program;
* nlsq steady: the median over ``--repeats`` later calls on fresh data, reported as
  fits per second; covariances included (they always are);
* scipy loop: ``scipy.optimize.curve_fit`` on each fit in turn, with its defaults
  ('lm' unbounded, 'trf' bounded, finite differences) and with the analytic Jacobian,
  timed on up to ``--scipy-fits`` fits (its per-fit cost does not depend on the batch).

Times are wall-clock; figures in brackets are per CPU-second of this process, which
a busy machine inflates less (time spent waiting for a core does not count). Data
generation is never timed. Every nlsq fit is checked against scipy's
('trf' with the analytic Jacobian, the same algorithm, always in float64): the check
column reports the largest relative difference of ``popt`` among fits both consider
converged (float32 fits stop at float32's tolerances, so expect about 1e-4 there).

Run from the repository root::

    python -m benchmark.batch_fits --repeats 5 --json batch.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from importlib import metadata

# Before nlsq reads its configuration (lazily, on the first fit): no persistent cache,
# so that first calls compile. Set NLSQ_DISK_CACHE=1 yourself to measure cached starts.
os.environ.setdefault("NLSQ_DISK_CACHE", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize  # noqa: E402

import nlsq  # noqa: E402

POINTS = 64
X = np.linspace(-5.0, 5.0, POINTS)
NOISE = 0.05
BOUNDS = ([0.0, -5.0, 0.05], [10.0, 5.0, 5.0])


def gaussian(x, a, mu, s):
    return a * jnp.exp(-(((x - mu) / s) ** 2) / 2)


def np_gaussian(x, a, mu, s):
    return a * np.exp(-(((x - mu) / s) ** 2) / 2)


def np_gaussian_jac(x, a, mu, s):
    u = (x - mu) / s
    e = np.exp(-(u**2) / 2)
    return np.stack([e, a * e * u / s, a * e * u**2 / s], axis=1)


def make_batch(n_fits: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(ydata, p0)``: noisy peaks (B, 64) and initial guesses from the data (B, 3)."""
    a = rng.uniform(1.0, 3.0, n_fits)
    mu = rng.uniform(-1.5, 1.5, n_fits)
    s = rng.uniform(0.4, 1.5, n_fits)
    y = a[:, None] * np.exp(-(((X - mu[:, None]) / s[:, None]) ** 2) / 2)
    y += NOISE * rng.standard_normal(y.shape)
    peak = np.argmax(y, axis=1)
    p0 = np.column_stack([y[np.arange(n_fits), peak], X[peak], np.ones(n_fits)])
    return y, p0


def run_nlsq(
    y: np.ndarray, p0: np.ndarray, bounded: bool, dtype: str = "float64"
) -> tuple[float, float, nlsq.BatchResult]:
    """Wall and CPU seconds of one ``curve_fit_batch`` call, and its result."""
    bounds = BOUNDS if bounded else (-np.inf, np.inf)
    start, cpu = time.perf_counter(), time.process_time()
    result = nlsq.curve_fit_batch(gaussian, X, y, p0=p0, bounds=bounds, dtype=dtype)
    return time.perf_counter() - start, time.process_time() - cpu, result


def run_scipy(
    y: np.ndarray, p0: np.ndarray, bounded: bool, analytic: bool
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Wall and CPU seconds of the loop, ``popt`` (NaN where scipy raised), successes."""
    options = {"jac": np_gaussian_jac, "method": "trf"} if analytic else {}
    if bounded:
        options["bounds"] = BOUNDS
    popt = np.full(p0.shape, np.nan)
    ok = np.zeros(len(y), bool)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(len(y)):
        try:
            popt[i], _ = scipy.optimize.curve_fit(np_gaussian, X, y[i], p0=p0[i], **options)
            ok[i] = True
        except RuntimeError:
            pass
    return time.perf_counter() - start, time.process_time() - cpu, popt, ok


def worst_difference(result: nlsq.BatchResult, popt: np.ndarray, ok: np.ndarray) -> float:
    both = result.success[: len(popt)] & ok
    if not both.any():
        return float("nan")
    diff = np.abs(result.popt[: len(popt)][both] - popt[both]) / np.abs(popt[both])
    return float(diff.max())


def run_case(
    n_fits: int, bounded: bool, repeats: int, scipy_fits: int, seed: int, dtype: str = "float64"
) -> dict:
    rng = np.random.default_rng([seed, n_fits, bounded])
    nlsq.clear_cache()
    jax.clear_caches()
    first_s, first_cpu_s, result = run_nlsq(*make_batch(n_fits, rng), bounded, dtype)
    steady, steady_cpu = [], []
    for _ in range(repeats):
        y, p0 = make_batch(n_fits, rng)
        elapsed, cpu, result = run_nlsq(y, p0, bounded, dtype)
        steady.append(elapsed)
        steady_cpu.append(cpu)

    count = min(scipy_fits, n_fits)
    scipy_runs = {}
    for label, analytic in (("scipy_default", False), ("scipy_trf_jac", True)):
        seconds, cpu, popt, ok = run_scipy(y[:count], p0[:count], bounded, analytic)
        scipy_runs[label] = {
            "fits": count,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "fits_per_s": count / seconds,
            "fits_per_cpu_s": count / cpu,
            "converged": int(ok.sum()),
            "popt": popt,
            "ok": ok,
        }
    reference = scipy_runs["scipy_trf_jac"]
    median = statistics.median(steady)
    fits_per_s = n_fits / median
    return {
        "fits": n_fits,
        "bounded": bounded,
        "dtype": dtype,
        "points": POINTS,
        "repeats": repeats,
        "nlsq_first_call_s": first_s,
        "nlsq_first_call_cpu_s": first_cpu_s,
        "nlsq_steady_s": steady,
        "nlsq_steady_cpu_s": steady_cpu,
        "nlsq_median_s": median,
        "nlsq_fits_per_s": fits_per_s,
        "nlsq_fits_per_cpu_s": n_fits / statistics.median(steady_cpu),
        "nlsq_converged": result.n_converged,
        "nlsq_chunks": result.chunks,
        "scipy": {
            k: {key: v for key, v in run.items() if key not in ("popt", "ok")}
            for k, run in scipy_runs.items()
        },
        "speedup_vs_scipy_default": fits_per_s / scipy_runs["scipy_default"]["fits_per_s"],
        "speedup_vs_scipy_trf_jac": fits_per_s / reference["fits_per_s"],
        "max_rel_diff_vs_scipy_trf": worst_difference(result, reference["popt"], reference["ok"]),
    }


def markdown_table(results: list[dict]) -> str:
    """Wall-clock figures, with fits per CPU-second in brackets (steadier on a busy
    machine: time the process waits for a core does not count)."""
    lines = [
        "| fits | bounds | dtype | nlsq first call [s] | nlsq steady [fits/s] | scipy default "
        "[fits/s] | scipy trf+jac [fits/s] | speedup vs default | speedup vs trf+jac "
        "| converged | max rel diff popt |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        default, trf = r["scipy"]["scipy_default"], r["scipy"]["scipy_trf_jac"]
        lines.append(
            f"| {r['fits']:,} | {'yes' if r['bounded'] else 'no'} "
            f"| {r.get('dtype', 'float64')} "
            f"| {r['nlsq_first_call_s']:.2f} ({r['nlsq_first_call_cpu_s']:.2f}) "
            f"| {r['nlsq_fits_per_s']:,.0f} ({r['nlsq_fits_per_cpu_s']:,.0f}) "
            f"| {default['fits_per_s']:,.0f} ({default['fits_per_cpu_s']:,.0f}) "
            f"| {trf['fits_per_s']:,.0f} ({trf['fits_per_cpu_s']:,.0f}) "
            f"| {r['speedup_vs_scipy_default']:.1f}x | {r['speedup_vs_scipy_trf_jac']:.1f}x "
            f"| {r['nlsq_converged']:,}/{r['fits']:,} | {r['max_rel_diff_vs_scipy_trf']:.1e} |"
        )
    return "\n".join(lines)


def environment() -> dict:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "jax": jax.__version__,
        "jaxlib": metadata.version("jaxlib"),
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "device": str(jax.devices()[0]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", default="1000,10000", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=5, help="steady-state calls per case")
    parser.add_argument(
        "--scipy-fits", type=int, default=1000, help="fits timed in scipy's loop per case"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtypes", default="float64", help="comma-separated working dtypes of nlsq"
    )
    parser.add_argument("--json", type=str, default=None, help="write all figures here")
    args = parser.parse_args(argv)

    env = environment()
    results = []
    for dtype in args.dtypes.split(","):
        for n_fits in (int(float(v)) for v in args.fits.split(",")):
            for bounded in (False, True):
                result = run_case(n_fits, bounded, args.repeats, args.scipy_fits, args.seed, dtype)
                results.append(result)
                print(
                    f"{n_fits} fits, {'bounded' if bounded else 'unbounded'}, {dtype}: "
                    f"{result['nlsq_fits_per_s']:,.0f} fits/s "
                    f"(first call {result['nlsq_first_call_s']:.2f} s)",
                    file=sys.stderr,
                )
    env["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(markdown_table(results))
    print(
        f"\n{env['cpu_count']} CPUs, load average {env['load_average']} -> "
        f"{env['load_average_end']}; jax {env['jax']}, scipy {env['scipy']}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"environment": env, "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
