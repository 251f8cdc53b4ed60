"""A fast part of scipy's own ``least_squares``/``curve_fit`` tests, run against nlsq.

``tests/scipy_suite/run.py`` runs all of them (about 170 tests that compile well over a
hundred programs: minutes of CPU, too slow for every CI run); here a subset runs through
the same script: the cheap tests of the 'lm' class of ``test_least_squares.py``
(argument checks, scipy's errors for sparse Jacobians, results on small problems) and
the ``curve_fit`` tests of leastsq's covariance, ``full_output`` and calls to the model
in ``test_minpack.py``, with scipy's default method for unbounded fits ('lm') so that
they test what they were written for. ``test_workers`` is left out: it forks a
``multiprocessing.Pool`` after JAX has started its threads, which JAX warns about (an
error under the suite's warning filter). The pass rate over tests of implemented
options must be at least 95%, as for the whole suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).parent / "scipy_suite" / "run.py"

#: Tests that exercise MINPACK's semantics in nlsq: leastsq's covariance and
#: infodict, its errors for sparse Jacobians, and how often the model is called.
SUBSET = (
    "(TestLM and not (rosenbrock or args_kwargs or jac_options or test_nfev or bvp "
    "or test_basic or x_scale_options or workers)) or test_full_output "
    "or test_indeterminate_covariance or test_gh4555b or test_gh13670"
)


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    report = tmp_path_factory.mktemp("scipy-suite") / "records.json"
    command = [
        sys.executable,
        str(RUNNER),
        "-k",
        SUBSET,
        "--scipy-default-method",
        "--required",
        "0",
        "--json",
        str(report),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return json.loads(report.read_text())


def test_subset_ran(records: list[dict]) -> None:
    methods = {record["method"] for record in records}
    assert methods >= {"lm", "curve_fit"}
    assert len(records) >= 20


def test_pass_rate_of_implemented_options(records: list[dict]) -> None:
    relevant = [r for r in records if r["outcome"] in ("passed", "failed")]
    failed = [f"{r['id']}: {r['detail']}" for r in relevant if r["outcome"] == "failed"]
    rate = 1 - len(failed) / len(relevant)
    assert rate >= 0.95, failed
