"""Large sparse least squares: nlsq (``jac_sparsity`` + lsmr) against scipy, one run.

Problems:

* scipy's documented tridiagonal example (Broyden's function), ``n`` = 1e3, 1e4, 1e5:
  scipy with ``jac_sparsity`` (grouped '2-point' differences, lsmr); nlsq with the same
  ``jac_sparsity`` and ``jac=None`` (coloured forward-mode autodiff, lsmr).
* a banded curve fit: the log-intensity of ``m = 20 n`` points is a cubic B-spline with
  ``n`` coefficients (each point depends on 4 of them), ``n`` = 1e3 and 1e4.

Each (library, problem) runs in its own child process, so that its peak RSS
(``ru_maxrss``) is its own: the child imports the library, builds the problem, runs the
fit once (``first``: nlsq's includes tracing and compiling, with an empty persistent
compilation cache) and then ``--repeats`` more
times (``warm``: the best of them), and reports its peak RSS and its RSS after the
imports. scipy and nlsq children alternate.

Usage (from the repository root)::

    python -m benchmark.sparse_lsq                  # the table, printed as Markdown
    python -m benchmark.sparse_lsq --json out.json  # also the raw records
    python -m benchmark.sparse_lsq --plot docs/_static/sparse_time.png

Targets (issue 19): at n = 1e5, nlsq's time at most half of scipy's and its peak RSS
at most twice scipy's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BROYDEN_SIZES = (1_000, 10_000, 100_000)
SPLINE_SIZES = (1_000, 10_000)
POINTS_PER_COEFFICIENT = 20


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def broyden_problem(n: int, xp):
    """scipy's example: ``f_i = (3 - x_i) x_i + 1 - x_{i-1} - 2 x_{i+1}``."""
    import numpy as np
    from scipy.sparse import diags

    if xp is np:

        def fun(x):
            f = (3 - x) * x + 1
            f[1:] -= x[:-1]
            f[:-1] -= 2 * x[1:]
            return f

    else:

        def fun(x):
            f = (3 - x) * x + 1
            f = f.at[1:].add(-x[:-1])
            return f.at[:-1].add(-2 * x[1:])

    sparsity = diags([1, 1, 1], [-1, 0, 1], shape=(n, n), dtype=int).tocsr()
    return fun, -np.ones(n), sparsity


def spline_problem(n: int, xp):
    """``y = exp(B c)`` with ``B`` the cubic B-spline design matrix (banded)."""
    import numpy as np
    from scipy.interpolate import BSpline

    m = POINTS_PER_COEFFICIENT * n
    degree = 3
    knots = np.concatenate([np.zeros(degree), np.linspace(0, 1, n - degree + 1), np.ones(degree)])
    t = np.linspace(0, 1, m)
    B = BSpline.design_matrix(t, knots, degree).tocsr()
    truth = np.sin(np.linspace(0, 12, n))
    rng = np.random.default_rng(0)
    y = np.exp(B @ truth) + 0.01 * rng.standard_normal(m)
    sparsity = (B != 0).astype(int)
    if xp is np:

        def fun(c):
            return np.exp(B @ c) - y

    else:
        import jax.numpy as jnp
        from jax.experimental import sparse

        B_jax = sparse.BCOO.from_scipy_sparse(B)
        y_jax = jnp.asarray(y)

        def fun(c):
            return jnp.exp(B_jax @ c) - y_jax

    return fun, np.zeros(n), sparsity


PROBLEMS = {"broyden": broyden_problem, "spline": spline_problem}


def worker(library: str, problem: str, n: int, repeats: int) -> dict:
    """One child process: import, build, fit, report (JSON on stdout)."""
    import numpy as np

    # Both return NumPy results: nothing asynchronous is left to wait for.
    if library == "scipy":
        from scipy.optimize import least_squares

        xp = np
    else:
        import jax.numpy as jnp

        from nlsq import least_squares

        xp = jnp
    rss_import = _rss_mib()
    fun, x0, sparsity = PROBLEMS[problem](n, xp)
    start = time.perf_counter()
    result = least_squares(fun, x0, jac_sparsity=sparsity)
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        least_squares(fun, x0, jac_sparsity=sparsity)
        warm.append(time.perf_counter() - start)
    return {
        "library": library,
        "problem": problem,
        "n": n,
        "first_s": first,
        "warm_s": min(warm) if warm else None,
        "rss_import_mib": rss_import,
        "rss_peak_mib": _rss_mib(),
        "cost": float(result.cost),
        "status": int(result.status),
        "nfev": int(result.nfev),
        "njev": int(result.njev),
    }


def run_child(library: str, problem: str, n: int, repeats: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmark.sparse_lsq",
        "--worker",
        library,
        problem,
        str(n),
        "--repeats",
        str(repeats),
    ]
    # An empty persistent compilation cache per child: "first" is a cold compile.
    with tempfile.TemporaryDirectory(prefix="nlsq-sparse-bench-") as cache:
        env = dict(os.environ, NLSQ_DISK_CACHE_DIR=cache)
        completed = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def cases(quick: bool) -> list[tuple[str, int]]:
    broyden = BROYDEN_SIZES[:2] if quick else BROYDEN_SIZES
    spline = SPLINE_SIZES[:1] if quick else SPLINE_SIZES
    return [("broyden", n) for n in broyden] + [("spline", n) for n in spline]


def table(records: list[dict]) -> str:
    """Markdown: per problem, both libraries' times and memory and the ratios."""
    by_key = {(r["problem"], r["n"], r["library"]): r for r in records}
    lines = [
        "| problem | n | scipy s | nlsq first s | nlsq warm s | warm ratio | "
        "scipy RSS MiB | nlsq RSS MiB | RSS ratio | nfev scipy/nlsq |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for problem, n in sorted({(r["problem"], r["n"]) for r in records}):
        s = by_key.get((problem, n, "scipy"))
        j = by_key.get((problem, n, "nlsq"))
        if s is None or j is None:
            continue
        scipy_time = s["warm_s"] or s["first_s"]
        lines.append(
            f"| {problem} | {n} | {scipy_time:.3f} | {j['first_s']:.3f} | "
            f"{j['warm_s']:.3f} | {j['warm_s'] / scipy_time:.2f} | "
            f"{s['rss_peak_mib']:.0f} | {j['rss_peak_mib']:.0f} | "
            f"{j['rss_peak_mib'] / s['rss_peak_mib']:.2f} | {s['nfev']}/{j['nfev']} |"
        )
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    """Time against n for the Broyden problem, log-log, both libraries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 3.2), dpi=100)
    for library, field, style, label in (
        ("scipy", "warm_s", "o-", "scipy (2-point, lsmr)"),
        ("nlsq", "warm_s", "s-", "nlsq (autodiff, lsmr)"),
        ("nlsq", "first_s", "s--", "nlsq first call (compile)"),
    ):
        rows = sorted(
            (r["n"], r[field])
            for r in records
            if r["library"] == library and r["problem"] == "broyden"
        )
        if rows:
            axes.loglog(*zip(*rows, strict=True), style, label=label, markersize=4)
    axes.set_xlabel("n (variables = residuals)")
    axes.set_ylabel("time per fit [s]")
    axes.set_title("Broyden tridiagonal, jac_sparsity")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, metavar=("LIBRARY", "PROBLEM", "N"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the largest sizes")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    if args.worker:
        library, problem, n = args.worker
        print(json.dumps(worker(library, problem, int(n), args.repeats)))
        return 0
    records = []
    for problem, n in cases(args.quick):
        for library in ("scipy", "nlsq"):
            record = run_child(library, problem, n, args.repeats)
            records.append(record)
            print(
                f"{library:5s} {problem:8s} n={n:<7d} first {record['first_s']:.3f}s "
                f"warm {record['warm_s']:.3f}s peak RSS {record['rss_peak_mib']:.0f} MiB",
                file=sys.stderr,
            )
    print(table(records))
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    if args.plot:
        plot(records, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
