"""The latency of one fit: import, first call, hot call, and a loop over a reused fitter.

Everything is measured in one run, with scipy and (when installed: ``pip install
jaxopt``, part of the ``bench`` extra) jaxopt's jitted Levenberg-Marquardt beside nlsq:

* hot: for each model and size, nlsq, scipy (its default, 'lm') and jaxopt alternate on
  fresh data of the same shape; medians, and each ratio to scipy;
* program: the compiled nlsq program alone, called after each nlsq call on that call's
  host inputs (transfers included) in the same interleaved rounds, so that
  ``hot - program`` is the Python overhead of a call;
* loop: a Python loop over a reused ``CurveFit`` on 64-point fits, against scipy's loop
  and jaxopt's, in fits per second;
* first: the first fit in a fresh process (import included, and separately the import
  alone), nlsq with an empty and with a warm persistent cache, unbounded and bounded,
  against scipy and jaxopt in fresh processes too.

Run from the repository root on a quiet machine::

    python -m benchmark.latency                 # markdown tables on stdout
    python -m benchmark.latency --sizes 1e2,1e3 --fresh 3 --json latency.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

import nlsq
from benchmark.compare_scipy import PROBLEMS, Problem, make_data, parse_models, parse_sizes
from benchmark.machine import cpu_model

try:
    import jaxopt
except ImportError:  # the bench extra is optional
    jaxopt = None


def jaxopt_solver(problem: Problem) -> Callable | None:
    """jaxopt's Levenberg-Marquardt of ``problem``, jitted: ``run(p0, x, y) -> params``."""
    if jaxopt is None:
        return None
    f = problem.f_jnp

    def residual(params, x, y):
        return f(x, *params) - y

    solver = jaxopt.LevenbergMarquardt(residual, maxiter=100, xtol=1e-8, gtol=1e-8)
    return jax.jit(lambda p0, x, y: solver.run(p0, x, y).params)


def _time(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - start


def hot_case(problem: Problem, n: int, budget: float, seed: int = 0) -> dict:
    """Interleaved hot medians (seconds) of nlsq, scipy and jaxopt for one problem, and
    of nlsq's compiled program alone on the inputs of each nlsq call (``program``)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(*problem.x_range, n)
    p0 = np.asarray(problem.p0, float)
    run_jaxopt = jaxopt_solver(problem)
    calls = {
        "nlsq": lambda y: nlsq.curve_fit(problem.f_jnp, x, y, p0=p0),
        "scipy": lambda y: scipy.optimize.curve_fit(problem.f_np, x, y, p0=p0),
    }
    if run_jaxopt is not None:
        calls["jaxopt"] = lambda y: _with_x64(run_jaxopt, p0, x, y)
    with program_calls() as last_program:
        for call in calls.values():  # compile and warm up
            for _ in range(3):
                jax.block_until_ready(call(make_data(problem, x, rng)))
        times: dict[str, list[float]] = {name: [] for name in (*calls, "program")}
        start = time.perf_counter()
        while time.perf_counter() - start < budget or len(times["nlsq"]) < 7:
            y = make_data(problem, x, rng)
            for name, call in calls.items():
                times[name].append(_time(lambda call=call, y=y: call(y)))
            times["program"].append(_time(last_program[0]))
    return {name: statistics.median(values) for name, values in times.items()}


def _with_x64(function: Callable, *args: object) -> object:
    """``function`` of ``args`` as 64-bit JAX arrays (jaxopt keeps its inputs' dtype)."""
    with jax.enable_x64(True):
        return function(*(jnp.asarray(a) for a in args))


@contextlib.contextmanager
def program_calls() -> Iterator[list[Callable[[], object]]]:
    """While open, ``holder[0]`` calls the compiled program of the last in-memory fit
    again on the same host inputs (transfers included, as in the fit)."""
    from nlsq.execute import dense

    holder: list[Callable[[], object]] = [lambda: None]
    original = dense.run_program

    def spy(program, inputs, data, n_residuals=None):
        controls, padded = inputs.packed(n_residuals), n_residuals is not None

        def again() -> object:
            with jax.enable_x64(True):
                return program(controls, data, padded=padded)

        holder[0] = again
        return original(program, inputs, data, n_residuals)

    dense.run_program = spy
    try:
        yield holder
    finally:
        dense.run_program = original


def loop_rates(fits: int, seed: int = 0) -> dict[str, float]:
    """Fits per second of a Python loop over 64-point Gaussian fits, fitter reused."""
    problem = PROBLEMS["gaussian"]
    rng = np.random.default_rng(seed)
    x = np.linspace(*problem.x_range, 64)
    data = [make_data(problem, x, rng) for _ in range(fits)]
    fitter = nlsq.CurveFit(problem.f_jnp, p0=problem.p0)
    loops = {
        "nlsq CurveFit": lambda y: fitter.fit(x, y).popt,
        "scipy": lambda y: scipy.optimize.curve_fit(problem.f_np, x, y, p0=problem.p0)[0],
    }
    run_jaxopt = jaxopt_solver(problem)
    if run_jaxopt is not None:
        p0 = np.asarray(problem.p0, float)
        loops["jaxopt"] = lambda y: np.asarray(_with_x64(run_jaxopt, p0, x, y))
    rates = {}
    for name, fit in loops.items():
        fit(data[0])
        start = time.perf_counter()
        for y in data:
            fit(y)
        rates[name] = fits / (time.perf_counter() - start)
    return rates


#: A fresh process: imports, then one fit; prints the two times as JSON.
FRESH = textwrap.dedent(
    """
    import json, sys, time
    start = time.perf_counter()
    import numpy as np
    library = sys.argv[1]
    bounded = sys.argv[2] == "bounded"
    if library == "scipy":
        import scipy.optimize
    else:
        import jax
        import jax.numpy as jnp
        if library == "nlsq":
            import nlsq
        else:
            import jaxopt
    imported = time.perf_counter()
    xp = np if library == "scipy" else jnp
    def model(x, a, b, c):
        return a * xp.exp(-b * x) + c
    x = np.linspace(0.0, 4.0, 1000)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.05 * np.random.default_rng(0).standard_normal(x.size)
    p0 = [1.0, 1.0, 0.0]
    bounds = ([0.0, 0.0, -1.0], [10.0, 10.0, 10.0]) if bounded else (-np.inf, np.inf)
    if library == "scipy":
        scipy.optimize.curve_fit(model, x, y, p0=p0, bounds=bounds)
    elif library == "nlsq":
        nlsq.curve_fit(model, x, y, p0=p0, bounds=bounds)
    else:
        # jaxopt's LM has no bounds: only the unbounded case is measured.
        jax.config.update("jax_enable_x64", True)
        solver = jaxopt.LevenbergMarquardt(lambda p, x, y: model(x, *p) - y)
        params = jax.jit(lambda p, x, y: solver.run(p, x, y).params)(jnp.asarray(p0), x, y)
        params.block_until_ready()
    done = time.perf_counter()
    compile_s = nlsq.cache_info()["total_compile_time_ms"] / 1e3 if library == "nlsq" else None
    print(json.dumps({"import": imported - start, "first": done - imported, "compile": compile_s}))
    """
)


def fresh_process(library: str, bounded: bool, cache_dir: str | None) -> dict[str, float]:
    """Import and first-fit seconds of ``library`` in a new interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NLSQ_")}
    env["NLSQ_CONFIG"] = os.path.join(tempfile.gettempdir(), "nlsq-latency-no-config.json")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if cache_dir is not None:
        env["NLSQ_DISK_CACHE_DIR"] = cache_dir
    completed = subprocess.run(
        [sys.executable, "-c", FRESH, library, "bounded" if bounded else "unbounded"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def first_fit_table(samples: int) -> tuple[str, dict]:
    """Fresh-process import and first-fit medians (seconds), interleaved."""
    cases = [("scipy", False, None), ("scipy", True, None)]
    if jaxopt is not None:
        cases.append(("jaxopt", False, None))
    cases += [("nlsq", False, "empty"), ("nlsq", True, "empty")]
    cases += [("nlsq", False, "warm"), ("nlsq", True, "warm")]
    warm_dir = tempfile.mkdtemp(prefix="nlsq-latency-warm-")
    fresh_process("nlsq", False, warm_dir)
    fresh_process("nlsq", True, warm_dir)
    times: dict[tuple, list[dict]] = {case: [] for case in cases}
    for _ in range(samples):
        for library, bounded, cache in cases:
            directory = None
            if cache == "empty":
                directory = tempfile.mkdtemp(prefix="nlsq-latency-empty-")
            elif cache == "warm":
                directory = warm_dir
            times[(library, bounded, cache)].append(fresh_process(library, bounded, directory))
    rows = [
        "| library | bounds | disk cache | import [s] | first fit [s] | of which XLA compile [s] |",
        "|---|---|---|---|---|---|",
    ]
    figures = {}
    for (library, bounded, cache), values in times.items():
        imported = statistics.median(v["import"] for v in values)
        first = statistics.median(v["first"] for v in values)
        compiled = (
            None
            if values[0]["compile"] is None
            else statistics.median(v["compile"] for v in values)
        )
        label = f"{library} {'bounded' if bounded else 'unbounded'} {cache or '-'}"
        figures[label] = {"import": imported, "first": first, "compile": compiled}
        rows.append(
            f"| {library} | {'yes' if bounded else 'no'} | {cache or '-'} | "
            f"{imported:.3f} | {first:.3f} | {'-' if compiled is None else f'{compiled:.3f}'} |"
        )
    return "\n".join(rows), figures


def import_overhead(samples: int) -> float:
    """Median seconds that ``import nlsq`` adds to ``import jax``, fresh processes."""
    code = (
        "import time; import jax; t = time.perf_counter(); import nlsq; "
        "print(time.perf_counter() - t)"
    )
    values = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(samples)
    ]
    return statistics.median(values)


def hot_table(models: list[str], sizes: list[int], budget: float) -> tuple[str, list[dict]]:
    head = "| model | n | nlsq [ms] | program [ms] | overhead [µs] | scipy [ms] | jaxopt [ms] "
    head += "| nlsq/scipy | nlsq/jaxopt |"
    rows = [head, "|---|---|---|---|---|---|---|---|---|"]
    results = []
    for n in sizes:
        for name in models:
            r = hot_case(PROBLEMS[name], n, budget)
            results.append({"model": name, "n": n, **r})
            jx = r.get("jaxopt")
            jaxopt_ms = "-" if jx is None else f"{1e3 * jx:.3f}"
            to_jaxopt = "-" if jx is None else f"{r['nlsq'] / jx:.2f}"
            rows.append(
                f"| {name} | {n:.0e} | {1e3 * r['nlsq']:.3f} | {1e3 * r['program']:.3f} | "
                f"{1e6 * (r['nlsq'] - r['program']):.0f} | {1e3 * r['scipy']:.3f} | "
                f"{jaxopt_ms} | {r['nlsq'] / r['scipy']:.2f} | {to_jaxopt} |"
            )
    return "\n".join(rows), results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="exponential,gaussian,poly4,sinusoid")
    parser.add_argument("--sizes", default="1e2,1e3,1e4,1e5")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per hot case")
    parser.add_argument("--loop-fits", type=int, default=2000)
    parser.add_argument(
        "--fresh", type=int, default=3, help="fresh-process samples (0: no first-fit table)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"CPU: {cpu_model()}, load average at start {load[0]:.2f}")
    version = "not installed" if jaxopt is None else importlib.metadata.version("jaxopt")
    print(f"jaxopt: {version}\n")
    hot, hot_results = hot_table(parse_models(args.models), parse_sizes(args.sizes), args.budget)
    print("## Hot curve_fit (medians, interleaved)\n\n" + hot + "\n")
    rates = loop_rates(args.loop_fits)
    print("## Loop of 64-point Gaussian fits\n\n| loop | fits/s | vs scipy |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / rates['scipy']:.2f} |")
    first_results, overhead = None, None
    if args.fresh > 0:
        first, first_results = first_fit_table(args.fresh)
        print("\n## First fit in a fresh process (n = 1000, medians)\n\n" + first)
        overhead = import_overhead(args.fresh)
        print(f"\n`import nlsq` after `import jax`: {overhead:.3f} s")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "hot": hot_results,
                    "loop": rates,
                    "first": first_results,
                    "import_overhead": overhead,
                    "load": [load, os.getloadavg()],
                },
                handle,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
