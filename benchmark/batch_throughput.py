"""Batch throughput of ``nlsq.curve_fit_batch`` against hand-written vmapped solvers.

The problem is :mod:`benchmark.batch_fits`'s: gaussian peaks of 64 points with per-fit
initial guesses from the data. In ONE process, with the contestants interleaved
(each repeat runs every contestant once, in turn, on the same fresh data), it times:

* ``nlsq``: ``curve_fit_batch`` unbounded, covariance included (it always is);
* ``nlsq bounded``: the same with bounds;
* ``nlsq small_linalg`` (and bounded): the same with :mod:`nlsq.small_linalg`'s
  factorisations forced (nlsq picks them by itself from 2,048 fits with its persistent
  cache, as here, and from 50,000 without: ``NLSQ_DISK_CACHE=0``);
* ``jaxopt``: ``jax.jit(jax.vmap(jaxopt.LevenbergMarquardt(...).run))`` of the same
  model, unbounded, no covariance, with jaxopt's defaults (``maxiter=30``,
  ``tol=1e-3`` on the gradient norm, a matrix-free linear solver) as the issue's
  reference figures were taken; ``--jaxopt-tol`` tightens it;
* ``optimistix`` (with ``--optimistix``): ``jax.jit(jax.vmap(optimistix.least_squares))``
  with ``optimistix.LevenbergMarquardt`` (``rtol = atol = 1e-8``, 1e-5 in float32).

Per contestant and dtype it reports the median fits/s, the ratio to jaxopt's fits/s,
the CPU utilisation (user + system CPU seconds of this process over wall seconds: 1.0
is one core busy, 2.0 two), the fits that converged, and the largest relative
difference of ``popt`` from the unbounded nlsq fits. Separately, it times the first
call (trace and compile) of a batch of ``--fits`` fits against the first call of a
single ``curve_fit`` of one of them, with nlsq's and JAX's in-memory caches cleared
and the persistent cache empty (a fresh temporary directory, used as by default, so
that nlsq chooses its programs as it does for a user).

Run from the repository root::

    python -m benchmark.batch_throughput --fits 10000 --dtypes float64,float32

Numbers taken on a shared machine are only indicative; compare ratios within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

# Before nlsq reads its configuration: nlsq runs as by default, with its persistent
# cache, but in an empty temporary directory, so that first calls compile.
_CACHE_DIR = tempfile.TemporaryDirectory(prefix="nlsq-batch-benchmark-")
os.environ.setdefault("NLSQ_DISK_CACHE", "1")
os.environ.setdefault("NLSQ_DISK_CACHE_DIR", _CACHE_DIR.name)

import jax  # noqa: E402
import numpy as np  # noqa: E402

import nlsq  # noqa: E402
import nlsq.prepare.batch as batch_module  # noqa: E402
from benchmark.batch_fits import BOUNDS, X, environment, gaussian, make_batch  # noqa: E402


def cpu_seconds() -> float:
    """User plus system CPU seconds of this process (all its threads)."""
    t = os.times()
    return t.user + t.system


def timed(run, *args):
    """``(wall seconds, CPU seconds, result)`` of ``run(*args)``, outputs on the host."""
    start, cpu = time.perf_counter(), cpu_seconds()
    result = jax.block_until_ready(run(*args))
    return time.perf_counter() - start, cpu_seconds() - cpu, result


def nlsq_runner(dtype: str, bounded: bool, small_linalg: bool = False):
    """``curve_fit_batch``; ``small_linalg`` forces :mod:`nlsq.small_linalg`'s
    factorisations, which nlsq uses by itself from 2,048 fits with its persistent cache
    (50,000 without)."""
    bounds = BOUNDS if bounded else (-np.inf, np.inf)

    def run(y: np.ndarray, p0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rule = batch_module.small_linalg_min_fits
        if small_linalg:
            batch_module.small_linalg_min_fits = lambda: 1
        try:
            result = nlsq.curve_fit_batch(gaussian, X, y, p0=p0, bounds=bounds, dtype=dtype)
        finally:
            batch_module.small_linalg_min_fits = rule
        return result.popt, result.success

    return run


def jaxopt_runner(dtype: str, tol: float | None):
    import jaxopt

    def residual(p, x, y):
        return gaussian(x, *p) - y

    settings = {} if tol is None else {"tol": tol, "maxiter": 100}
    solver = jaxopt.LevenbergMarquardt(residual, **settings)

    @jax.jit
    def fit(p0, x, y):
        return jax.vmap(lambda p, yy: solver.run(p, x, yy).params)(p0, y)

    def run(y: np.ndarray, p0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        popt = np.asarray(fit(p0.astype(dtype), X.astype(dtype), y.astype(dtype)))
        return popt, np.isfinite(popt).all(axis=1)

    return run


def optimistix_runner(dtype: str):
    import optimistix as optx

    def residual(p, args):
        x, y = args
        return gaussian(x, *p) - y

    tol = 1e-8 if dtype == "float64" else 1e-5
    solver = optx.LevenbergMarquardt(rtol=tol, atol=tol)

    @jax.jit
    def fit(p0, x, y):
        def one(p, yy):
            sol = optx.least_squares(residual, solver, p, args=(x, yy), throw=False, max_steps=256)
            return sol.value, sol.result == optx.RESULTS.successful

        return jax.vmap(one)(p0, y)

    def run(y: np.ndarray, p0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        popt, ok = fit(p0.astype(dtype), X.astype(dtype), y.astype(dtype))
        return np.asarray(popt), np.asarray(ok)

    return run


def first_calls(n_fits: int, dtype: str, seed: int) -> dict:
    """Seconds of the first batch call and of the first single fit, caches cleared."""
    rng = np.random.default_rng([seed, 1])
    y, p0 = make_batch(n_fits, rng)
    figures = {}
    for label in ("single", "batch"):
        nlsq.clear_cache()
        jax.clear_caches()
        start = time.perf_counter()
        if label == "single":
            nlsq.curve_fit(gaussian, X, y[0], p0=p0[0], dtype=dtype)
        else:
            nlsq.curve_fit_batch(gaussian, X, y, p0=p0, dtype=dtype)
        figures[label] = time.perf_counter() - start
    # A warm batch call, so that the compile part of the first one can be told apart.
    start = time.perf_counter()
    nlsq.curve_fit_batch(gaussian, X, y, p0=p0, dtype=dtype)
    figures["batch_warm"] = time.perf_counter() - start
    return figures


def run_dtype(args: argparse.Namespace, dtype: str) -> dict:
    contestants = {"nlsq": nlsq_runner(dtype, False)}
    if args.bounded:
        contestants["nlsq bounded"] = nlsq_runner(dtype, True)
    if args.small_linalg:
        contestants["nlsq small_linalg"] = nlsq_runner(dtype, False, True)
        if args.bounded:
            contestants["nlsq small_linalg bounded"] = nlsq_runner(dtype, True, True)
    if args.jaxopt:
        contestants["jaxopt"] = jaxopt_runner(dtype, args.jaxopt_tol)
    if args.optimistix:
        contestants["optimistix"] = optimistix_runner(dtype)
    rng = np.random.default_rng([args.seed, 0])
    y, p0 = make_batch(args.fits, rng)
    for run in contestants.values():  # compile every contestant before timing
        run(y, p0)
    walls = {name: [] for name in contestants}
    cpus = {name: [] for name in contestants}
    results = {}
    for _ in range(args.repeats):
        y, p0 = make_batch(args.fits, rng)
        for name, run in contestants.items():
            wall, cpu, results[name] = timed(run, y, p0)
            walls[name].append(wall)
            cpus[name].append(cpu)
    reference = results["nlsq"][0]
    rows = {}
    for name in contestants:
        popt, ok = results[name]
        both = ok & np.isfinite(reference).all(axis=1)
        diff = np.abs(popt[both] - reference[both]) / np.maximum(np.abs(reference[both]), 1e-12)
        wall = statistics.median(walls[name])
        rows[name] = {
            "fits_per_s": args.fits / wall,
            "median_s": wall,
            "cpu_utilisation": sum(cpus[name]) / sum(walls[name]),
            "converged": int(ok.sum()),
            "max_rel_diff_vs_nlsq": float(diff.max()) if diff.size else float("nan"),
        }
    if "jaxopt" in rows:
        for row in rows.values():
            row["vs_jaxopt"] = row["fits_per_s"] / rows["jaxopt"]["fits_per_s"]
    return {"dtype": dtype, "fits": args.fits, "rows": rows}


def markdown(results: list[dict], compiles: dict) -> str:
    lines = [
        "| dtype | contestant | fits/s | vs jaxopt | CPU utilisation | converged "
        "| max rel diff popt vs nlsq |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for name, row in result["rows"].items():
            ratio = f"{row['vs_jaxopt']:.2f}x" if "vs_jaxopt" in row else "-"
            lines.append(
                f"| {result['dtype']} | {name} | {row['fits_per_s']:,.0f} | {ratio} "
                f"| {row['cpu_utilisation']:.2f} | {row['converged']:,}/{result['fits']:,} "
                f"| {row['max_rel_diff_vs_nlsq']:.1e} |"
            )
    if len(results) == 2 and "float32" in {r["dtype"] for r in results}:
        by = {r["dtype"]: r["rows"]["nlsq"]["fits_per_s"] for r in results}
        lines.append(f"\nfloat32 / float64 (nlsq unbounded): {by['float32'] / by['float64']:.2f}x")
    lines.append(
        "\n| dtype | first single curve_fit [s] | first batch [s] | warm batch [s] "
        "| first batch / first single |"
    )
    lines.append("|---|---:|---:|---:|---:|")
    for dtype, c in compiles.items():
        lines.append(
            f"| {dtype} | {c['single']:.2f} | {c['batch']:.2f} | {c['batch_warm']:.2f} "
            f"| {c['batch'] / c['single']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=lambda v: int(float(v)), default=10_000)
    parser.add_argument("--dtypes", default="float64,float32", help="comma-separated dtypes")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    parser.add_argument(
        "--bounded", action=argparse.BooleanOptionalAction, default=True, help="nlsq bounded too"
    )
    parser.add_argument(
        "--small-linalg",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="nlsq with small_linalg forced too (its default from 2,048 fits)",
    )
    parser.add_argument("--jaxopt", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--jaxopt-tol", type=float, default=None, help="jaxopt's tol (maxiter 100 then)"
    )
    parser.add_argument("--optimistix", action="store_true", help="optimistix vmapped too")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True, help="first calls"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write all figures here")
    args = parser.parse_args(argv)

    env = environment()
    dtypes = args.dtypes.split(",")
    compiles, results = {}, []
    for dtype in dtypes:
        # The hand-written contestants run in x64 only for float64 (nlsq sets it per call).
        with jax.enable_x64(dtype == "float64"):
            if args.compile:
                compiles[dtype] = first_calls(args.fits, dtype, args.seed)
            results.append(run_dtype(args, dtype))
        print(f"{dtype} done", file=sys.stderr)
    env["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(markdown(results, compiles))
    print(
        f"\n{env['cpu_count']} CPUs, load average {env['load_average']} -> "
        f"{env['load_average_end']}; jax {env['jax']}, {env['device']}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"environment": env, "results": results, "first_calls": compiles}, handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
