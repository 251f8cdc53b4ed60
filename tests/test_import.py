"""Importing and using nlsq leaves the interpreter's global state as it was.

Each check runs in a fresh interpreter (a subprocess), since this test session has long
since imported nlsq and JAX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

#: Runs in the child: snapshots global state, imports nlsq, fits, snapshots again.
CHILD = textwrap.dedent(
    """
    import json, logging, os, sys, warnings

    import numpy as np
    import scipy.optimize  # noqa: F401 - scipy adds warning filters of its own on import

    def snapshot():
        # In "fresh" mode the first snapshot runs before anything imported jax.
        jax = sys.modules.get("jax")
        root = logging.getLogger()
        return {
            "x64": None if jax is None else bool(jax.config.jax_enable_x64),
            "root_handlers": [repr(h) for h in root.handlers],
            "root_level": root.level,
            "nlsq_handlers": [repr(h) for h in logging.getLogger("nlsq").handlers],
            "environ": dict(os.environ),
            "warning_filters": [repr(f) for f in warnings.filters],
            "numpy_errstate": np.geterr(),
        }

    if sys.argv[1] == "x64":
        import jax

        jax.config.update("jax_enable_x64", True)
    elif sys.argv[1] == "jax-first":
        import jax  # noqa: F401

    before = snapshot()
    import nlsq

    after_import = snapshot()

    import jax.numpy as jnp

    x = np.linspace(0.0, 4.0, 20)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.01 * np.sin(5 * x)
    popt, pcov = nlsq.curve_fit(lambda x, a, b, c: a * jnp.exp(-b * x) + c, x, y, p0=[1, 1, 0])
    result = nlsq.least_squares(lambda p: p - jnp.arange(3.0), np.zeros(3))
    after_fit = snapshot()

    print(json.dumps({
        "before": before,
        "after_import": after_import,
        "after_fit": after_fit,
        "popt": [type(popt).__name__, str(popt.dtype), popt.tolist()],
        "pcov": [type(pcov).__name__, str(pcov.dtype)],
        "x": [type(result.x).__name__, str(result.x.dtype), result.x.tolist()],
    }))
    """
)


def _run_child(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=["fresh", "jax-first", "x64"])
def child(request) -> tuple[str, dict]:
    return request.param, _run_child(request.param)


def test_import_leaves_x64_flag_as_it_was(child) -> None:
    mode, report = child
    expected = mode == "x64"
    assert report["before"]["x64"] is (None if mode == "fresh" else expected)
    assert report["after_import"]["x64"] is expected
    assert report["after_fit"]["x64"] is expected


@pytest.mark.parametrize("stage", ["after_import", "after_fit"])
def test_no_logging_handlers_added(child, stage: str) -> None:
    _, report = child
    for key in ("root_handlers", "root_level", "nlsq_handlers"):
        assert report[stage][key] == report["before"][key]
    assert report[stage]["nlsq_handlers"] == []


def _set_by_importing_jax() -> set[str]:
    """Environment variables that ``import jax`` itself sets (not nlsq's doing)."""
    code = (
        "import json, os; before = dict(os.environ); import jax; "
        "print(json.dumps([k for k, v in os.environ.items() if before.get(k) != v]))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return set(json.loads(completed.stdout))


@pytest.mark.parametrize("stage", ["after_import", "after_fit"])
def test_no_environment_variables_set(child, stage: str) -> None:
    mode, report = child
    before, after = report["before"]["environ"], report[stage]["environ"]
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    # In a fresh interpreter, ``import nlsq`` is also the first ``import jax``.
    allowed = _set_by_importing_jax() if mode == "fresh" else set()
    assert changed <= allowed


@pytest.mark.parametrize("stage", ["after_import", "after_fit"])
def test_no_warning_filters_or_numpy_error_state_changed(child, stage: str) -> None:
    _, report = child
    assert report[stage]["warning_filters"] == report["before"]["warning_filters"]
    assert report[stage]["numpy_errstate"] == report["before"]["numpy_errstate"]


def test_results_are_float64_numpy_arrays(child) -> None:
    _, report = child
    assert report["popt"][:2] == ["ndarray", "float64"]
    assert report["pcov"] == ["ndarray", "float64"]
    assert report["x"][:2] == ["ndarray", "float64"]
    assert report["x"][2] == [0.0, 1.0, 2.0]
    popt = report["popt"][2]
    assert abs(popt[0] - 2.5) < 0.05 and abs(popt[1] - 1.3) < 0.05 and abs(popt[2] - 0.5) < 0.05


#: Modules whose import costs a large share of ``import nlsq`` (scipy.optimize alone
#: takes about a quarter of a second), which no plain ``curve_fit`` needs.
DEFERRED = ("scipy.optimize", "scipy.linalg", "scipy.sparse", "platformdirs", "jax.extend")


def test_import_and_a_plain_curve_fit_defer_the_heavy_modules() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import jax.numpy as jnp
        import nlsq
        imported = [m for m in sys.argv[1:] if m in sys.modules]
        x = np.linspace(0.0, 4.0, 20)
        nlsq.curve_fit(lambda x, a, b: a * jnp.exp(-b * x), x, 2 * np.exp(-x), p0=[1, 1])
        fitted = [m for m in ("scipy.optimize", "scipy.sparse") if m in sys.modules]
        print(json.dumps([imported, fitted]))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, *DEFERRED],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    after_import, after_fit = json.loads(completed.stdout.strip().splitlines()[-1])
    assert after_import == []
    # The first compile loads more (jaxlib's LAPACK kernels import scipy.linalg, the
    # pointwise check jax.extend, the disk cache platformdirs); the result needs none of
    # scipy.optimize or scipy.sparse.
    assert after_fit == []


def test_scipy_classes_are_scipys_once_loaded() -> None:
    import scipy.optimize
    import scipy.sparse
    import scipy.sparse.linalg

    from nlsq.scipy_types import (
        is_bounds,
        is_linear_operator,
        is_sparse_matrix,
        optimize_result,
        optimize_warning,
    )

    assert optimize_warning() is scipy.optimize.OptimizeWarning
    assert isinstance(optimize_result(x=1), scipy.optimize.OptimizeResult)
    assert is_bounds(scipy.optimize.Bounds(0, 1)) and not is_bounds((0, 1))
    assert is_sparse_matrix(scipy.sparse.eye(2)) and is_sparse_matrix(scipy.sparse.eye_array(2))
    assert not is_sparse_matrix(np.eye(2))
    operator = scipy.sparse.linalg.aslinearoperator(np.eye(2))
    assert is_linear_operator(operator) and not is_linear_operator(np.eye(2))
