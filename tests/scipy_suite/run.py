"""Run scipy's own tests of ``least_squares`` and ``curve_fit`` against nlsq.

The test modules shipped inside the installed scipy package
(``scipy/optimize/tests/test_least_squares.py`` and ``test_minpack.py``) are copied
to a temporary directory, with nlsq's functions bound to the names the tests call
(``least_squares``, ``curve_fit``, ``optimize.curve_fit``). Then pytest runs them and
the outcomes are counted per method.

A test that fails with ``NotImplementedError`` exercises an option nlsq does not
provide; it is reported apart (none is left: sparse Jacobians and ``tr_solver='lsmr'``
are provided). Of the
others, at least ``--required`` (default 95%) must pass. Tests of functions nlsq
does not replace (``leastsq``, ``fsolve``, ``fixed_point``, ``root``) are not run.

nlsq's ``curve_fit`` defaults to 'trf' where scipy's defaults to 'lm' (unbounded
problems), a documented difference; ``--scipy-default-method`` gives unbounded
``curve_fit`` calls without a method 'lm', to tell which failures come from it alone.

Usage::

    python tests/scipy_suite/run.py [--required 0.95] [-k EXPR] [--json FILE]
        [--scipy-default-method]

Exit status 0 when the pass rate is met.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import scipy

SUBSTITUTION = """
# --- nlsq substitution (added by tests/scipy_suite/run.py) ---
import nlsq as _nlsq
import scipy.optimize as _scipy_optimize

least_squares = _nlsq.least_squares
curve_fit = _nlsq.curve_fit
_scipy_optimize.least_squares = _nlsq.least_squares
_scipy_optimize.curve_fit = _nlsq.curve_fit
# --- end of substitution ---
"""

#: With ``--scipy-default-method``: scipy's choice of method for ``curve_fit``.
SCIPY_DEFAULT_METHOD = """
# --- scipy's default method for curve_fit (added by tests/scipy_suite/run.py) ---
def _with_scipy_default_method(fit):
    import functools as _functools

    import numpy as _np
    from scipy.optimize import Bounds as _Bounds

    @_functools.wraps(fit)
    def wrapper(f, xdata, ydata, p0=None, sigma=None, absolute_sigma=False,
                check_finite=None, bounds=(-_np.inf, _np.inf), method=None, jac=None,
                **kwargs):
        if method is None:
            lb, ub = (bounds.lb, bounds.ub) if isinstance(bounds, _Bounds) else bounds
            bounded = (_np.asarray(lb) > -_np.inf).any() or (_np.asarray(ub) < _np.inf).any()
            method = "trf" if bounded else "lm"
        return fit(f, xdata, ydata, p0, sigma, absolute_sigma, check_finite, bounds,
                   method, jac, **kwargs)

    return wrapper


curve_fit = _with_scipy_default_method(_nlsq.curve_fit)
_scipy_optimize.curve_fit = curve_fit
# --- end ---
"""

PYTEST_INI = """[pytest]
filterwarnings =
    error
    ignore::nlsq.host.NumPyModelWarning
    ignore::DeprecationWarning
addopts = -p no:cacheprovider
markers =
    fail_slow: scipy's marker for slow tests
    parallel_threads_limit: scipy's marker for thread-parallel runs
    thread_unsafe: scipy's marker for thread-parallel runs
"""

#: Test classes of scipy's that test functions nlsq does not replace.
NOT_REPLACED = (
    "TestLeastSq",
    "TestFSolve",
    "TestFixedPoint",
    "TestRootHybr",
    "TestRootLM",
    "TestNfev",
)

SCIPY_TESTS = Path(scipy.__file__).parent / "optimize" / "tests"
MODULES = ("test_least_squares.py", "test_minpack.py")


def prepare(directory: Path, scipy_default_method: bool = False) -> list[Path]:
    """Copy scipy's test modules with nlsq's functions substituted."""
    paths = []
    for name in MODULES:
        source = (SCIPY_TESTS / name).read_text()
        lines = source.splitlines(keepends=True)
        # After the last top-level import (and its parenthesised continuation), so
        # that nlsq's names win.
        end = max(i for i, line in enumerate(lines) if re.match(r"(from \S+ )?import ", line))
        if "(" in lines[end]:
            while ")" not in lines[end]:
                end += 1
        substitution = SUBSTITUTION + (SCIPY_DEFAULT_METHOD if scipy_default_method else "")
        lines.insert(end + 1, substitution)
        path = directory / f"test_scipy_{name.removeprefix('test_')}"
        path.write_text("".join(lines))
        paths.append(path)
    (directory / "pytest.ini").write_text(PYTEST_INI)
    return paths


def method_of(test_id: str) -> str:
    """The solver a scipy test exercises, from its class or parameters."""
    for name, method in (("TestTRF", "trf"), ("TestDogbox", "dogbox"), ("TestLM", "lm")):
        if name in test_id:
            return method
    if "minpack" in test_id:
        if "lm" in test_id.split("[")[-1]:
            return "curve_fit lm"
        return "curve_fit"
    return "least_squares (other)"


def outcomes(report: Path) -> list[dict]:
    """One record per test case of a JUnit XML report."""
    records = []
    for case in ElementTree.parse(report).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if failure is not None or error is not None:
            node = failure if failure is not None else error
            text = (node.get("message") or "") + (node.text or "")
            outcome = "not implemented" if "NotImplementedError" in text else "failed"
            detail = (
                (node.get("message") or "").splitlines()[0][:200] if node.get("message") else ""
            )
        elif skipped is not None:
            outcome, detail = "skipped", skipped.get("message") or ""
        else:
            outcome, detail = "passed", ""
        records.append(
            {
                "id": test_id,
                "method": method_of(test_id),
                "outcome": outcome,
                "detail": detail,
                "seconds": float(case.get("time") or 0.0),
            }
        )
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--required", type=float, default=0.95)
    parser.add_argument("-k", default=None, help="pytest -k expression")
    parser.add_argument("--json", type=Path, default=None, help="write the records here")
    parser.add_argument(
        "--scipy-default-method",
        action="store_true",
        help="unbounded curve_fit calls without a method use 'lm', as in scipy",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nlsq-scipy-suite-") as tmp:
        directory = Path(tmp)
        paths = prepare(directory, args.scipy_default_method)
        report = directory / "report.xml"
        deselect = "not (" + " or ".join(NOT_REPLACED) + ")"
        expression = deselect if args.k is None else f"({args.k}) and {deselect}"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rN",
            f"--junitxml={report}",
            "-k",
            expression,
            *map(str, paths),
        ]
        # The tests run in a temporary directory: put this checkout's nlsq first.
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=path)
        subprocess.run(command, cwd=directory, env=env, check=False, stdout=subprocess.DEVNULL)
        records = outcomes(report)

    table = collections.defaultdict(collections.Counter)
    for record in records:
        table[record["method"]][record["outcome"]] += 1
    columns = ("passed", "failed", "not implemented", "skipped")
    print(f"| method | {' | '.join(columns)} | pass rate |")
    print("|---|" + "---:|" * (len(columns) + 1))
    total = collections.Counter()
    for method in sorted(table):
        counts = table[method]
        total.update(counts)
        relevant = counts["passed"] + counts["failed"]
        rate = counts["passed"] / relevant if relevant else 1.0
        print(f"| {method} | {' | '.join(str(counts[c]) for c in columns)} | {rate:.1%} |")
    relevant = total["passed"] + total["failed"]
    rate = total["passed"] / relevant if relevant else 1.0
    print(f"| all | {' | '.join(str(total[c]) for c in columns)} | {rate:.1%} |")
    for record in records:
        if record["outcome"] in ("failed", "not implemented"):
            print(f"{record['outcome']:>16}: {record['id']}  {record['detail']}")
    if args.json is not None:
        args.json.write_text(json.dumps(records, indent=1))
    return 0 if rate >= args.required else 1


if __name__ == "__main__":
    sys.exit(main())
