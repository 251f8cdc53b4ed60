"""Forward vs reverse mode Jacobians over a grid of problem sizes.

Measures, for a dense model (every residual depends on every parameter through a
matrix product) and a structured one (a sum of exponentials evaluated pointwise), the
steady-state time of one full Jacobian by ``jax.jacfwd`` and by ``jax.jacrev`` at each
(number of parameters n, number of residuals m). The 'auto' rule in
``nlsq/jacobian.py`` is derived from this table; ``docs/jacobian_mode.rst`` holds it.

Usage::

    python -m benchmark.jacobian_modes [--repeats 30] [--markdown]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

GRID = [
    (3, 100_000),
    (3, 10_000),
    (10, 10_000),
    (10, 1_000),
    (30, 10_000),
    (30, 1_000),
    (100, 10_000),
    (100, 1_000),
    (100, 100),
    (300, 1_000),
    (300, 300),
    (300, 100),
    (1000, 1_000),
    (1000, 300),
    (1000, 100),
]


def dense_problem(n: int, m: int, rng: np.random.Generator):
    """``tanh(X p) - y``: every residual depends on every parameter."""
    X = jnp.asarray(rng.standard_normal((m, n)) / np.sqrt(n))
    y = jnp.asarray(rng.standard_normal(m))
    return lambda p: jnp.tanh(X @ p) - y


def structured_problem(n: int, m: int, rng: np.random.Generator):
    """``sum_k a_k exp(-b_k t) - y`` over n/2 exponentials, evaluated pointwise in t."""
    t = jnp.linspace(0.0, 5.0, m)
    y = jnp.asarray(rng.standard_normal(m))
    k = n // 2

    def residual(p):
        a, b = p[:k], p[k : 2 * k]
        extra = p[2 * k :].sum()  # odd n: one offset parameter
        return jnp.sum(a[:, None] * jnp.exp(-b[:, None] * t[None, :]), axis=0) + extra - y

    return residual


def _median_time(fn, x, repeats: int) -> float:
    """Median seconds per call; ``inf`` when the mode runs out of memory."""
    try:
        jax.block_until_ready(fn(x))
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        return float("inf")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(repeats: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for kind, make in (("dense", dense_problem), ("structured", structured_problem)):
            for n, m in GRID:
                fun = make(n, m, rng)
                x = jnp.asarray(rng.uniform(0.5, 1.5, n))
                fwd = _median_time(jax.jit(jax.jacfwd(fun)), x, repeats)
                rev = _median_time(jax.jit(jax.jacrev(fun)), x, repeats)
                rows.append({"model": kind, "n": n, "m": m, "fwd_s": fwd, "rev_s": rev})
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| model | n (params) | m (residuals) | fwd [ms] | rev [ms] | rev/fwd | faster |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = r["rev_s"] / r["fwd_s"]
        faster = "fwd" if ratio > 1 else "rev"
        rev = "out of memory" if np.isinf(r["rev_s"]) else f"{1e3 * r['rev_s']:.3f}"
        lines.append(
            f"| {r['model']} | {r['n']} | {r['m']} | {1e3 * r['fwd_s']:.3f} | "
            f"{rev} | {ratio:.2f} | {faster} |"
        )
    return "\n".join(lines)


def fit_parameter_heavy(repeats: int, n: int = 1000, m: int = 100) -> str:
    """Whole fits of the dense ``n``-parameter, ``m``-residual problem, each mode and scipy.

    scipy's trf gets the analytic Jacobian; nlsq differentiates the same model.
    """
    import scipy.optimize

    import nlsq

    rng = np.random.default_rng(1)
    X = rng.standard_normal((m, n)) / np.sqrt(n)
    y = np.tanh(X @ rng.uniform(-1, 1, n))
    x0 = np.zeros(n)

    def residual(p, X, y):
        return jnp.tanh(X @ p) - y

    def residual_np(p):
        return np.tanh(X @ p) - y

    def jacobian_np(p):
        return (1 - np.tanh(X @ p) ** 2)[:, None] * X

    def timed(call) -> tuple[float, object]:
        result = call()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = call()
            times.append(time.perf_counter() - start)
        return float(np.median(times)), result

    rows = ["| solver | hot [s] | nfev | cost |", "|---|---:|---:|---:|"]
    for mode in ("auto", "fwd", "rev"):
        seconds, res = timed(
            lambda mode=mode: nlsq.least_squares(residual, x0, args=(X, y), jacobian_mode=mode)
        )
        rows.append(
            f"| nlsq jacobian_mode={mode!r} | {seconds:.4f} | {res.nfev} | {res.cost:.3e} |"
        )
    seconds, res = timed(
        lambda: scipy.optimize.least_squares(residual_np, x0, jac=jacobian_np, method="trf")
    )
    rows.append(f"| scipy trf, analytic jac | {seconds:.4f} | {res.nfev} | {res.cost:.3e} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--fits-only", action="store_true", help="skip the Jacobian grid")
    args = parser.parse_args()
    if not args.fits_only:
        print(markdown_table(measure(args.repeats)))
        print()
    print(fit_parameter_heavy(max(3, args.repeats // 5)))


if __name__ == "__main__":
    main()
