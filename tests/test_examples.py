"""Every script in examples/ runs to completion; the quickstart recovers its parameters."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

EXAMPLES_DIR = pathlib.Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
TIMEOUT_S = 300


def run_example(path: pathlib.Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=EXAMPLES_DIR,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"{path.name} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def parse_vector(stdout: str, label: str) -> np.ndarray:
    for line in stdout.splitlines():
        if line.startswith(f"{label}:"):
            return np.array([float(v) for v in line.split(":", 1)[1].split()])
    raise AssertionError(f"no line starting with {label!r} in output:\n{stdout}")


def test_examples_exist():
    assert EXAMPLES, f"no examples found in {EXAMPLES_DIR}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path):
    stdout = run_example(path)
    if path.name == "quickstart.py":
        true = parse_vector(stdout, "true")
        popt = parse_vector(stdout, "popt")
        perr = parse_vector(stdout, "perr")
        assert popt.shape == true.shape == perr.shape
        assert np.all(np.isfinite(perr)) and np.all(perr > 0)
        # Within 5 standard errors of the truth, and the errors themselves are small.
        assert np.all(np.abs(popt - true) < 5 * perr), (popt, true, perr)
        assert np.all(perr < 0.1 * np.abs(true)), perr
