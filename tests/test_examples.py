"""Every script in examples/ runs, and what it prints is checked against the truth or scipy.

Each example runs in a fresh interpreter (its own JAX import and compiles) with its
default, small sizes; the checks parse the lines it prints.
"""

import importlib.util
import pathlib
import re
import subprocess
import sys

import numpy as np
import scipy.stats

EXAMPLES_DIR = pathlib.Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
TIMEOUT_S = 300


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / name), *args],
        cwd=EXAMPLES_DIR,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def parse_vector(stdout: str, label: str) -> np.ndarray:
    """The numbers after ``label:`` on the line that starts with it."""
    for line in stdout.splitlines():
        if line.startswith(f"{label}:"):
            return np.array([float(v) for v in line.split(":", 1)[1].split()])
    raise AssertionError(f"no line starting with {label!r} in output:\n{stdout}")


def parse_number(stdout: str, pattern: str) -> float:
    match = re.search(pattern + r"\s*([-+0-9.eE]+)", stdout)
    assert match, f"{pattern!r} not found in output:\n{stdout}"
    return float(match.group(1))


def test_every_example_is_checked():
    checked = {name.removeprefix("test_") + ".py" for name in globals() if name.startswith("test_")}
    assert EXAMPLES, f"no examples found in {EXAMPLES_DIR}"
    assert {path.name for path in EXAMPLES} <= checked, "add a test for each new example"


def test_quickstart(tmp_path):
    # With matplotlib, the same run also draws the fit (the plot costs no new compile).
    plot = tmp_path / "fit.png" if importlib.util.find_spec("matplotlib") else None
    stdout = run_example("quickstart.py", *(["--plot", str(plot)] if plot else []))
    if plot:
        assert f"plot written to {plot}" in stdout
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    true, popt, perr = (parse_vector(stdout, label) for label in ("true", "popt", "perr"))
    assert np.all(np.isfinite(perr)) and np.all(perr > 0)
    # Within 5 standard errors of the truth, and the errors themselves are small.
    assert np.all(np.abs(popt - true) < 5 * perr), (popt, true, perr)
    assert np.all(perr < 0.1 * np.abs(true)), perr
    assert parse_number(stdout, r"max \|nlsq - scipy\| over parameters:") < 1e-6
    # The report and the intervals: popt -/+ t(0.975, m - n) * perr, m = 200, n = 3.
    assert "[[Parameters]]" in stdout and "R-squared" in stdout
    q = scipy.stats.t.ppf(0.975, 200 - 3)
    np.testing.assert_allclose(parse_vector(stdout, "ci95 low"), popt - q * perr, atol=2e-6)
    np.testing.assert_allclose(parse_vector(stdout, "ci95 high"), popt + q * perr, atol=2e-6)


def test_scipy_migration():
    stdout = run_example("scipy_migration.py")
    np.testing.assert_allclose(
        parse_vector(stdout, "nlsq  popt"), parse_vector(stdout, "scipy popt"), rtol=1e-8
    )
    # scipy's covariance comes from a finite-difference Jacobian, nlsq's from the exact one.
    np.testing.assert_allclose(
        parse_vector(stdout, "nlsq  perr"), parse_vector(stdout, "scipy perr"), rtol=1e-5
    )


def test_robust_fitting():
    stdout = run_example("robust_fitting.py")
    true, linear, robust, scipy_robust = (
        parse_vector(stdout, label) for label in ("true", "linear", "robust", "scipy")
    )
    np.testing.assert_allclose(robust, scipy_robust, rtol=1e-5)
    assert np.max(np.abs(robust - true)) < 0.05
    # The outliers drag the least-squares fit several times further from the truth.
    assert np.max(np.abs(linear - true)) > 5 * np.max(np.abs(robust - true))


def test_bounded_fit():
    stdout = run_example("bounded_fit.py")
    free, bounded, scipy_bounded, active, lower = (
        parse_vector(stdout, label) for label in ("free", "bounded", "scipy", "active", "lower")
    )
    np.testing.assert_allclose(bounded, scipy_bounded, rtol=1e-6, atol=1e-8)
    assert free[3] < lower[3], "the example needs data whose free fit leaves the bounds"
    assert bounded[3] == lower[3] and list(active) == [0, 0, 0, -1]
    assert np.all(bounded >= lower)


def test_differentiable_fit():
    stdout = run_example("differentiable_fit.py")
    # Newton's method through the fit's derivative finds scipy's root, near the truth.
    offset, scipy_offset, true_offset = (
        parse_number(stdout, f"(?m)^{label}:")
        for label in ("offset", "scipy offset", "true offset")
    )
    assert abs(offset - scipy_offset) < 1e-8
    assert abs(offset - true_offset) < 0.02
    assert parse_number(stdout, "level error before the last step:") < 1e-8
    # The delta method through the derivative, the covariance and Monte Carlo agree
    # (400 re-fits: the sample sd is within about 10% of the truth).
    delta, covariance, monte_carlo = (
        parse_number(stdout, f"{label} sd:")
        for label in ("delta-method", "covariance", "monte-carlo")
    )
    assert abs(delta - covariance) < 0.02 * delta
    assert abs(monte_carlo - delta) < 0.15 * delta


def test_batch_peaks():
    stdout = run_example("batch_peaks.py")
    assert "converged: 500 of 500" in stdout
    # Every fit within 6 of its own standard errors of its true parameters.
    assert parse_number(stdout, r"largest \|popt - true\| / perr:") < 6


def test_large_memmap():
    stdout = run_example("large_memmap.py")
    popt, perr = parse_vector(stdout, "memmap popt"), parse_vector(stdout, "memmap perr")
    assert np.all(np.abs(popt - [2.5, 1.3, 0.5]) < 5 * perr), (popt, perr)
    np.testing.assert_allclose(parse_vector(stdout, "chunks popt"), popt, rtol=1e-8)


def test_multi_device():
    stdout = run_example("multi_device.py")
    assert "devices: 4" in stdout
    sharded, single = parse_vector(stdout, "sharded popt"), parse_vector(stdout, "single  popt")
    np.testing.assert_allclose(sharded, single, rtol=1e-9)
    np.testing.assert_allclose(sharded, [2.5, 1.3, 0.5], atol=0.01)
