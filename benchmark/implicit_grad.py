"""The cost of differentiating a fit: ``nlsq.fit`` under ``jax.value_and_grad``.

For each problem (an exponential decay and a Gaussian peak, 3 parameters, at a few data
sizes), in one process and float64, every variant is jitted, compiled once (the
compile time is reported) and then timed on fresh data, the variants interleaved
round by round so that a change of machine load hits all alike:

* nlsq fit: ``nlsq.fit(...).popt`` alone;
* nlsq value+grad: ``jax.value_and_grad`` of ``sum((popt - target)**2)`` with respect to
  ``ydata``, through the implicit rule (target: at most 1.5 times the fit alone);
* jaxopt LM unrolled / implicit: ``jaxopt.LevenbergMarquardt`` differentiated through its
  iterations (``implicit_diff=False, unroll=True``) or implicitly;
* optimistix LM unrolled / implicit: ``optimistix.least_squares`` with
  ``LevenbergMarquardt``, differentiated through its iterations
  (``RecursiveCheckpointAdjoint``) or implicitly (``ImplicitAdjoint``).

Times are medians of wall-clock times per call (``block_until_ready``); the last column
is the largest relative difference of each variant's gradient from nlsq's, a check
that all of them solve and differentiate the same problem. Run from the repository
root::

    python -m benchmark.implicit_grad [--repeats 30] [--sizes 100,1000,10000]

and it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import nlsq

TARGET_RATIO = 1.5


def exponential(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def gaussian(x, a, mu, s):
    return a * jnp.exp(-((x - mu) ** 2) / (2 * s**2))


PROBLEMS = {
    "exponential": (exponential, (0.0, 4.0), np.array([2.0, 0.8, 0.3]), np.array([1.0, 1.0, 0.0])),
    "gaussian": (gaussian, (-3.0, 3.0), np.array([1.5, 0.2, 0.9]), np.array([1.0, 0.0, 1.0])),
}


def variants(model: Callable, x: np.ndarray, p0: np.ndarray, target: np.ndarray) -> dict:
    """The jitted functions of ``y`` to time, by name (None where a library is missing)."""
    x, p0, target = jnp.asarray(x), jnp.asarray(p0), jnp.asarray(target)

    def loss_of(solve: Callable) -> Callable:
        return jax.jit(jax.value_and_grad(lambda y: jnp.sum((solve(y) - target) ** 2)))

    def nlsq_popt(y):
        return nlsq.fit(model, x, y, p0).popt

    def residual(p, y):
        return model(x, *p) - y

    out = {
        "nlsq fit": jax.jit(nlsq_popt),
        "nlsq value+grad": loss_of(nlsq_popt),
    }
    try:
        import jaxopt
    except ImportError:
        jaxopt = None
    if jaxopt is not None:
        for name, implicit in (("unrolled", False), ("implicit", True)):
            solver = jaxopt.LevenbergMarquardt(
                residual,
                maxiter=100,
                tol=1e-10,
                xtol=1e-10,
                gtol=1e-10,
                implicit_diff=implicit,
                unroll=not implicit,
                jit=True,
            )
            out[f"jaxopt LM {name}"] = loss_of(lambda y, solver=solver: solver.run(p0, y).params)
    try:
        import optimistix as optx
    except ImportError:
        optx = None
    if optx is not None:
        for name, adjoint in (
            ("unrolled", optx.RecursiveCheckpointAdjoint()),
            ("implicit", optx.ImplicitAdjoint()),
        ):

            def solve(y, adjoint=adjoint):
                solver = optx.LevenbergMarquardt(rtol=1e-10, atol=1e-10)
                solution = optx.least_squares(
                    residual, solver, p0, args=y, max_steps=256, adjoint=adjoint, throw=False
                )
                return solution.value

            out[f"optimistix LM {name}"] = loss_of(solve)
    return out


def gradient_of(value) -> np.ndarray | None:
    return None if not isinstance(value, tuple) else np.asarray(value[1])


def measure(problem: str, size: int, repeats: int, seed: int) -> list[dict]:
    model, span, true, p0 = PROBLEMS[problem]
    x = np.linspace(*span, size)
    rng = np.random.default_rng(seed)
    clean = np.asarray(model(x, *true))

    def data() -> jnp.ndarray:
        return jnp.asarray(clean + 0.05 * rng.standard_normal(size))

    functions = variants(model, x, p0, true)
    rows = {name: {"name": name, "times": []} for name in functions}
    check = data()
    for name, fn in functions.items():
        start = time.perf_counter()
        value = jax.block_until_ready(fn(check))
        rows[name]["compile_s"] = time.perf_counter() - start
        rows[name]["gradient"] = gradient_of(value)
    for _ in range(repeats):
        y = data()
        for name, fn in functions.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(y))
            rows[name]["times"].append(time.perf_counter() - start)
    reference = rows["nlsq value+grad"]["gradient"]
    for row in rows.values():
        row["median_ms"] = 1e3 * statistics.median(row["times"])
        gradient = row.pop("gradient")
        row["grad_diff"] = (
            None
            if gradient is None
            else float(np.max(np.abs(gradient - reference)) / np.max(np.abs(reference)))
        )
    return list(rows.values())


def table(results: dict[tuple[str, int], list[dict]]) -> str:
    lines = [
        "| problem | points | variant | compile (s) | median (ms) | / nlsq fit | grad rel. diff |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    verdicts = []
    for (problem, size), rows in results.items():
        fit_ms = next(r["median_ms"] for r in rows if r["name"] == "nlsq fit")
        for r in rows:
            diff = "" if r["grad_diff"] is None else f"{r['grad_diff']:.1e}"
            lines.append(
                f"| {problem} | {size} | {r['name']} | {r['compile_s']:.2f} | "
                f"{r['median_ms']:.3f} | {r['median_ms'] / fit_ms:.2f} | {diff} |"
            )
        grad_ms = next(r["median_ms"] for r in rows if r["name"] == "nlsq value+grad")
        ratio = grad_ms / fit_ms
        verdicts.append(
            f"- {problem}, {size} points: value+grad / fit = {ratio:.2f} "
            f"({'within' if ratio <= TARGET_RATIO else 'above'} the target {TARGET_RATIO})"
        )
    return "\n".join(lines + [""] + verdicts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = {}
    with jax.enable_x64(True):
        for problem in args.problems.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                results[(problem, size)] = measure(problem, size, args.repeats, args.seed)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, float64\n")
    print(table(results))


if __name__ == "__main__":
    main()
