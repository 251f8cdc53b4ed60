"""Time ``nlsq.curve_fit`` against ``scipy.optimize.curve_fit`` on four standard models.

For each model and data size this measures, in one process:

* nlsq first call: the first ``nlsq.curve_fit`` call in the process for that model and data
  shape, which traces and compiles the solver;
* nlsq hot: the median over ``--repeats`` later calls, each on fresh noisy data of the same shape;
* scipy lm hot: the median of ``scipy.optimize.curve_fit`` with its defaults ('lm' with finite
  differences for these unbounded problems);
* scipy trf hot: the median of ``scipy.optimize.curve_fit(method='trf')`` with an analytic NumPy
  Jacobian.

Generating the noisy data is never timed. Every fit's parameters are checked against the truth
(within the catalogue model's tolerance) and the ``check`` column flags fits that missed it (the
exit status is then 1).

Run from the repository root::

    python -m benchmark.compare_scipy --repeats 20 --sizes 1e3,1e5,1e6 --json results.json

The models are the suite's (:mod:`benchmark.problems`). For cold starts in fresh processes,
memory, the regression gate and reports, use the suite itself: ``python -m benchmark``.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import scipy
import scipy.optimize

import nlsq
from benchmark import problems as catalogue
from benchmark import worker
from benchmark.machine import cpu_model


def exponential_jac(x, a, b, c):
    e = np.exp(-b * x)
    return np.column_stack([e, -a * x * e, np.ones_like(x)])


def gaussian_jac(x, a, mu, sigma):
    z = (x - mu) / sigma
    g = np.exp(-(z**2) / 2)
    return np.column_stack([g, a * g * z / sigma, a * g * z**2 / sigma])


def poly4_jac(x, *coefficients):
    return np.vander(x, len(coefficients), increasing=True)


def sinusoid_jac(x, a, w, phi, c):
    u = w * x + phi
    s, co = np.sin(u), np.cos(u)
    return np.column_stack([s, a * x * co, a * co, np.ones_like(x)])


@dataclass(frozen=True)
class Problem:
    name: str
    f_jnp: Callable
    f_np: Callable
    jac_np: Callable
    true: tuple[float, ...]
    p0: tuple[float, ...]
    x_range: tuple[float, float]
    noise: float = 0.05


def _from_catalogue(model: catalogue.Model, jac_np: Callable) -> Problem:
    """The suite's model (one definition for every benchmark) with an analytic NumPy Jacobian."""
    return Problem(
        model.name,
        model.function(jnp),
        model.function(np),
        jac_np,
        model.true,
        model.p0,
        model.x_range,
        model.noise,
    )


PROBLEMS = {
    p.name: p
    for p in [
        _from_catalogue(catalogue.EXPONENTIAL, exponential_jac),
        _from_catalogue(catalogue.GAUSSIAN, gaussian_jac),
        _from_catalogue(catalogue.POLY4, poly4_jac),
        _from_catalogue(catalogue.SINUSOID, sinusoid_jac),
    ]
}

METHODS = ("nlsq", "scipy_lm", "scipy_trf")


def make_data(problem: Problem, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    clean = problem.f_np(x, *problem.true)
    return clean + problem.noise * rng.standard_normal(x.size)


def fit(method: str, problem: Problem, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if method == "nlsq":
        popt, _ = nlsq.curve_fit(problem.f_jnp, x, y, p0=problem.p0)
    elif method == "scipy_lm":
        popt, _ = scipy.optimize.curve_fit(problem.f_np, x, y, p0=problem.p0)
    elif method == "scipy_trf":
        popt, _ = scipy.optimize.curve_fit(
            problem.f_np, x, y, p0=problem.p0, method="trf", jac=problem.jac_np
        )
    else:
        raise ValueError(f"unknown method {method!r}")
    return np.asarray(popt)


def timed_fit(method: str, problem: Problem, x: np.ndarray, y: np.ndarray) -> tuple[float, bool]:
    """Seconds for one fit, and whether its parameters are near the truth."""
    start = time.perf_counter()
    try:
        popt = fit(method, problem, x, y)
    except Exception as exc:  # a failed fit is reported in the table, not fatal
        elapsed = time.perf_counter() - start
        print(f"  {problem.name} n={x.size} {method}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return elapsed, False
    elapsed = time.perf_counter() - start
    return elapsed, catalogue.is_accurate(popt, catalogue.MODELS[problem.name])


def run_case(problem: Problem, n: int, repeats: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, n, list(PROBLEMS).index(problem.name)])
    x = np.linspace(*problem.x_range, n)

    # The first nlsq call for this model and shape: trace + compile + one fit.
    first_s, first_ok = timed_fit("nlsq", problem, x, make_data(problem, x, rng))
    # scipy compiles nothing, but give it an untimed call too so both sides start warm.
    y_warm = make_data(problem, x, rng)
    for method in ("scipy_lm", "scipy_trf"):
        timed_fit(method, problem, x, y_warm)

    times_ms = {m: [] for m in METHODS}
    failures = {m: 0 for m in METHODS}
    failures["nlsq_first_call"] = 0 if first_ok else 1
    for _ in range(repeats):
        y = make_data(problem, x, rng)
        for method in METHODS:
            elapsed, ok = timed_fit(method, problem, x, y)
            times_ms[method].append(1e3 * elapsed)
            failures[method] += not ok

    medians = {m: statistics.median(t) for m, t in times_ms.items()}
    return {
        "model": problem.name,
        "n": n,
        "true": list(problem.true),
        "p0": list(problem.p0),
        "repeats": repeats,
        "nlsq_first_call_s": first_s,
        "median_ms": medians,
        "times_ms": times_ms,
        "failures": failures,
        "ratio_nlsq_over_best_scipy": medians["nlsq"]
        / min(medians["scipy_lm"], medians["scipy_trf"]),
    }


def check_label(result: dict) -> str:
    bad = {k: v for k, v in result["failures"].items() if v}
    if not bad:
        return "ok"
    return "NOT NEAR TRUTH: " + ", ".join(f"{k} {v}" for k, v in bad.items())


def markdown_table(results: list[dict]) -> str:
    header = (
        "| model | n | nlsq first call [s] | nlsq hot [ms] | scipy lm hot [ms] "
        "| scipy trf hot [ms] | nlsq/min(scipy) | check |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        med = r["median_ms"]
        lines.append(
            f"| {r['model']} | {catalogue.size_label(r['n'])} | {r['nlsq_first_call_s']:.2f} "
            f"| {med['nlsq']:.2f} | {med['scipy_lm']:.2f} | {med['scipy_trf']:.2f} "
            f"| {r['ratio_nlsq_over_best_scipy']:.2f} | {check_label(r)} |"
        )
    return "\n".join(lines)


def environment() -> dict:
    """Versions, device and machine: the suite's description (one definition)."""
    return {
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        **worker.environment(),
    }


def parse_sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def parse_models(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(names) - set(PROBLEMS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {unknown}; choose from {list(PROBLEMS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="hot fits per case (default 20)")
    parser.add_argument(
        "--sizes", type=parse_sizes, default="1e3,1e5,1e6", help="data sizes (default 1e3,1e5,1e6)"
    )
    parser.add_argument(
        "--models",
        type=parse_models,
        default=",".join(PROBLEMS),
        help=f"comma-separated subset of {','.join(PROBLEMS)}",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    parser.add_argument("--json", type=pathlib.Path, help="save raw results and environment here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    # An empty persistent-cache directory (removed when main returns): "first call" means
    # trace + compile here.
    cache_dir = tempfile.TemporaryDirectory(prefix="nlsq-compare-scipy-")
    os.environ.setdefault("NLSQ_DISK_CACHE_DIR", cache_dir.name)
    env = environment()
    print(
        f"# nlsq {env['nlsq_version']} vs scipy {env['scipy']}; jax {env['jax']} on "
        f"{env['jax_device']}; CPU {env['cpu_model']} x{env['cpu_count']}; {args.repeats} repeats",
        file=sys.stderr,
    )
    # Initialise the JAX backend so that its one-time start-up is not charged to the first fit.
    jnp.zeros(1).block_until_ready()

    results = []
    for name in args.models:
        for n in args.sizes:
            result = run_case(PROBLEMS[name], n, args.repeats, args.seed)
            med = result["median_ms"]
            print(
                f"  {name} n={n}: first {result['nlsq_first_call_s']:.2f} s, hot nlsq "
                f"{med['nlsq']:.2f} ms, scipy lm {med['scipy_lm']:.2f} ms, "
                f"scipy trf {med['scipy_trf']:.2f} ms  [{check_label(result)}]",
                file=sys.stderr,
            )
            results.append(result)

    print(markdown_table(results))

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "environment": env,
            "settings": {
                "repeats": args.repeats,
                "sizes": args.sizes,
                "models": args.models,
                "seed": args.seed,
            },
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"raw results written to {args.json}", file=sys.stderr)

    any_failed = any(any(r["failures"].values()) for r in results)
    return 1 if any_failed else 0


if __name__ == "__main__":
    sys.exit(main())
