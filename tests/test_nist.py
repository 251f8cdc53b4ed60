"""NIST StRD nonlinear regression: ``nlsq.curve_fit`` must reproduce the certified values.

Every one of the 27 problems is fitted from both NIST starting points with default settings.
Accuracy is measured with the log relative error (LRE), the number of correct significant
digits: ``LRE = -log10(|estimate - certified| / |certified|)`` (McCullough, 1998).
"""

from __future__ import annotations

import numpy as np
import pytest
from nist import NAMES, load

import nlsq

#: Minimum LRE required for the parameter estimates and for their standard errors.
#: Lanczos1 is the tight spot for the standard errors: its certified RSS (1.4e-25) is at the
#: limit of float64, so its standard errors reach an LRE of only about 3 even with an exact
#: Jacobian and tight tolerances.
PARAM_MIN_LRE = 4.0
STDERR_MIN_LRE = 3.0

#: LRE reported when the estimate equals the certified value exactly.
MAX_LRE = 15.0

CASES = [
    pytest.param(name, start, id=f"{name}-{start}")
    for name in NAMES
    for start in ("start1", "start2")
]


def log_relative_error(estimate: np.ndarray, certified: np.ndarray) -> np.ndarray:
    """Log relative error of ``estimate`` against ``certified``, elementwise.

    Parameters
    ----------
    estimate, certified : array_like
        Computed and certified values, of the same shape.

    Returns
    -------
    numpy.ndarray
        ``-log10(|estimate - certified| / |certified|)`` (the absolute error is used where
        ``certified`` is 0), clipped to ``[0, MAX_LRE]``: an exact match gives ``MAX_LRE``
        and a non-finite estimate gives 0.
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    certified = np.asarray(certified, dtype=np.float64)
    error = np.abs(estimate - certified)
    scale = np.where(certified == 0, 1.0, np.abs(certified))
    with np.errstate(divide="ignore", invalid="ignore"):
        lre = -np.log10(error / scale)
    lre = np.where(np.isfinite(estimate), lre, 0.0)
    return np.clip(np.nan_to_num(lre, nan=0.0, posinf=MAX_LRE), 0.0, MAX_LRE)


def _lre_table(
    label: str, estimate: np.ndarray, certified: np.ndarray, lre: np.ndarray, min_lre: float
) -> str:
    rows = [f"{label} (required LRE >= {min_lre}):"]
    for i, (est, cert, digits) in enumerate(zip(estimate, certified, lre, strict=True)):
        flag = "" if digits >= min_lre else "   <-- FAIL"
        rows.append(
            f"  b{i + 1}: estimate {est: .10e}  certified {cert: .10e}  LRE {digits:5.2f}{flag}"
        )
    return "\n".join(rows)


@pytest.mark.nist
@pytest.mark.parametrize(("name", "start"), CASES)
def test_certified_values(name: str, start: str) -> None:
    problem = load(name)
    p0 = getattr(problem, start)
    popt, pcov = nlsq.curve_fit(problem.model, problem.x, problem.y, p0=p0)
    popt = np.asarray(popt, dtype=np.float64)
    stderr = np.sqrt(np.diag(np.asarray(pcov, dtype=np.float64)))

    param_lre = log_relative_error(popt, problem.certified_params)
    stderr_lre = log_relative_error(stderr, problem.certified_stderr)
    report = "\n".join(
        [
            f"NIST {name} ({problem.difficulty} difficulty) from {start}: {problem.formula}",
            _lre_table("parameters", popt, problem.certified_params, param_lre, PARAM_MIN_LRE),
            _lre_table(
                "standard errors", stderr, problem.certified_stderr, stderr_lre, STDERR_MIN_LRE
            ),
        ]
    )
    if np.any(param_lre < PARAM_MIN_LRE) or np.any(stderr_lre < STDERR_MIN_LRE):
        pytest.fail(report, pytrace=False)


def test_log_relative_error() -> None:
    certified = np.array([1.0, 2.0, -3.0, 0.0, 5.0])
    estimate = np.array([1.0, 2.0002, -3.0, 1e-7, np.nan])
    np.testing.assert_allclose(
        log_relative_error(estimate, certified), [MAX_LRE, 4.0, MAX_LRE, 7.0, 0.0]
    )
