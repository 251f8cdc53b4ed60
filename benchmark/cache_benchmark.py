"""What the compiled-program cache buys: hot calls, reuse, fresh processes, many lengths.

In one run:

1. hot plain ``nlsq.curve_fit`` and a reused ``nlsq.CurveFit`` against scipy's
   ``curve_fit`` (default 'lm' with finite differences, and 'trf' with an analytic
   Jacobian) for the four standard models at n = 1e3 and 1e5 (medians);
2. the first fit in a fresh process with an empty and with a warm persistent
   compilation cache (each in its own subprocess; import time excluded);
3. a loop over random lengths 1000..1999 against the fixed-length hot time.

Usage::

    python -m benchmark.cache_benchmark [--repeats 20] [--sizes 1e3,1e5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.optimize

from benchmark.compare_scipy import PROBLEMS, make_data, parse_sizes


def _median_ms(call, make_y, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        y = make_y()
        start = time.perf_counter()
        call(y)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _hot_case(problem, n: int, repeats: int) -> dict[str, float]:
    """Median milliseconds of each way to fit ``problem`` at size ``n``."""
    import nlsq

    rng = np.random.default_rng(n)
    x = np.linspace(*problem.x_range, n)
    fitter = nlsq.CurveFit(problem.f_jnp, p0=problem.p0)
    calls = {
        "plain": lambda y: nlsq.curve_fit(problem.f_jnp, x, y, p0=problem.p0),
        "fitter": lambda y: fitter.fit(x, y),
        "lm": lambda y: scipy.optimize.curve_fit(problem.f_np, x, y, p0=problem.p0),
        "trf": lambda y: scipy.optimize.curve_fit(
            problem.f_np, x, y, p0=problem.p0, method="trf", jac=problem.jac_np
        ),
    }
    for call in calls.values():  # warm-up: compiles nlsq's program once
        call(make_data(problem, x, rng))
    return {
        name: _median_ms(call, lambda: make_data(problem, x, rng), repeats)
        for name, call in calls.items()
    }


def hot_table(sizes: list[int], repeats: int) -> str:
    rows = [
        "| model | n | curve_fit [ms] | CurveFit [ms] | scipy lm [ms] | scipy trf [ms] "
        "| curve_fit / scipy lm | curve_fit / CurveFit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        for problem in PROBLEMS.values():
            ms = _hot_case(problem, n, repeats)
            rows.append(
                f"| {problem.name} | {n:.0e} | {ms['plain']:.3f} | {ms['fitter']:.3f} | "
                f"{ms['lm']:.3f} | {ms['trf']:.3f} | {ms['plain'] / ms['lm']:.2f} | "
                f"{ms['plain'] / ms['fitter']:.2f} |"
            )
    return "\n".join(rows)


_FIRST_FIT = """
import json, time
import numpy as np
import nlsq
from benchmark.compare_scipy import PROBLEMS, make_data
problem = PROBLEMS["exponential"]
x = np.linspace(*problem.x_range, 1000)
y = make_data(problem, x, np.random.default_rng(0))
start = time.perf_counter()
result = nlsq.CurveFit(problem.f_jnp, p0=problem.p0).fit(x, y)
print(json.dumps({"seconds": time.perf_counter() - start, **result.cache_stats}))
"""


def first_fit_in_fresh_process(cache_dir: str) -> dict:
    env = {**os.environ, "NLSQ_DISK_CACHE_DIR": cache_dir, "NLSQ_DISK_CACHE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_FIT], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def disk_cache_table() -> str:
    with tempfile.TemporaryDirectory() as cache_dir:
        empty = first_fit_in_fresh_process(cache_dir)
        warm = first_fit_in_fresh_process(cache_dir)
    return "\n".join(
        [
            "| fresh process, first fit | time [s] | compiles | loaded from disk |",
            "|---|---:|---:|---:|",
            f"| empty disk cache | {empty['seconds']:.3f} | {empty['compiles']} | "
            f"{empty['disk_hit']} |",
            f"| warm disk cache | {warm['seconds']:.3f} | {warm['compiles']} | "
            f"{warm['disk_hit']} |",
            f"| ratio warm / empty | {warm['seconds'] / empty['seconds']:.2f} | | |",
        ]
    )


def variable_length_table(repeats: int) -> str:
    import nlsq

    problem = PROBLEMS["exponential"]
    rng = np.random.default_rng(1)
    lengths = rng.integers(1000, 2000, 50)
    fitter = nlsq.CurveFit(problem.f_jnp, p0=problem.p0)
    for length in (1000, 1999):  # compile both buckets once
        x = np.linspace(*problem.x_range, length)
        fitter.fit(x, make_data(problem, x, rng))
    compiles_before = nlsq.cache_info()["total_compiles"]
    variable = []
    for length in lengths:
        x = np.linspace(*problem.x_range, int(length))
        y = make_data(problem, x, rng)
        start = time.perf_counter()
        fitter.fit(x, y)
        variable.append(time.perf_counter() - start)
    compiles = nlsq.cache_info()["total_compiles"] - compiles_before
    x = np.linspace(*problem.x_range, 1500)
    fixed = _median_ms(lambda y: fitter.fit(x, y), lambda: make_data(problem, x, rng), repeats)
    var_ms = 1e3 * float(np.median(variable))
    return "\n".join(
        [
            "| loop | per fit [ms] | compiles during the loop |",
            "|---|---:|---:|",
            f"| 50 random lengths 1000..1999 | {var_ms:.3f} | {compiles} |",
            f"| fixed length 1500 | {fixed:.3f} | 0 |",
            f"| ratio variable / fixed | {var_ms / fixed:.2f} | |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("1e3,1e5"))
    args = parser.parse_args()
    print(hot_table(args.sizes, args.repeats))
    print()
    print(disk_cache_table())
    print()
    print(variable_length_table(args.repeats))


if __name__ == "__main__":
    main()
