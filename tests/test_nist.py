"""NIST StRD nonlinear regression: ``nlsq.curve_fit`` must reproduce the certified values.

Every one of the 27 problems is fitted from both NIST starting points, once with default
settings (scipy's tolerances and evaluation budget) and once with tight settings that show
what the solver reaches when the stopping rules do not cut it short.
Accuracy is measured with the log relative error (LRE), the number of correct significant
digits: ``LRE = -log10(|estimate - certified| / |certified|)`` (McCullough, 1998).
"""

from __future__ import annotations

import numpy as np
import pytest
from nist import NAMES, load

import nlsq

#: Minimum LRE required for the parameter estimates and for their standard errors, unless
#: the data cap what float64 can reach (:func:`stderr_min_lre`).
PARAM_MIN_LRE = 4.0
STDERR_MIN_LRE = 3.0
EPS = np.finfo(np.float64).eps

#: LRE reported when the estimate equals the certified value exactly.
MAX_LRE = 15.0

#: Cases that fall short with scipy's default stopping rules, and why. scipy's own default
#: solver ('lm' with finite differences) misses 9 of the 54.
SHORT_WITH_DEFAULTS = {
    ("MGH17", "start1"): "needs more than the default 100 * n function evaluations",
    ("Bennett5", "start1"): "needs more than the default 100 * n function evaluations",
    ("ENSO", "start1"): "ftol=1e-8 stops while b8 is still moving (flat cost valley)",
    ("ENSO", "start2"): "ftol=1e-8 stops while b8 is still moving (flat cost valley)",
    ("MGH09", "start1"): "ftol=1e-8 stops at LRE ~3.9 for b2",
    ("MGH09", "start2"): "ftol=1e-8 stops at LRE ~3.9 for b2",
    ("Lanczos1", "start1"): "RSS 1.4e-25: ftol=1e-8 stops before the RSS, and so the "
    "standard errors, are accurate (parameters reach LRE > 10, standard errors 0.7)",
}

TIGHT_SETTINGS = {"ftol": 1e-15, "xtol": 1e-15, "gtol": 1e-15, "max_nfev": 10_000}


def _case(name: str, start: str, settings: str) -> pytest.param:
    marks = []
    if settings == "default" and (name, start) in SHORT_WITH_DEFAULTS:
        marks.append(pytest.mark.xfail(reason=SHORT_WITH_DEFAULTS[name, start], strict=True))
    return pytest.param(name, start, settings, id=f"{name}-{start}-{settings}", marks=marks)


CASES = [
    _case(name, start, settings)
    for settings in ("default", "tight")
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


def stderr_min_lre(y: np.ndarray, certified_rss: float) -> float:
    """The standard errors' required LRE: :data:`STDERR_MIN_LRE`, or less where float64
    cannot resolve the residuals.

    The standard errors scale with ``sqrt(RSS)``. Residuals computed in float64 carry a
    rounding of ``eps |y|`` each, ``eps ||y||`` in all, against ``sqrt(RSS)``: that
    relative error ``delta`` caps the LRE at ``-log10(delta)``, which the CPU's rounding
    may reach. Only Lanczos1 (RSS 1.4e-25, ``delta`` ~1e-2) is concerned: an LRE of 2,
    measured 2.95 to 3.0 on different CPUs.
    """
    delta = EPS * np.linalg.norm(y) / np.sqrt(certified_rss)
    return min(STDERR_MIN_LRE, np.floor(-np.log10(delta)))


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
@pytest.mark.parametrize(("name", "start", "settings"), CASES)
def test_certified_values(name: str, start: str, settings: str) -> None:
    problem = load(name)
    p0 = getattr(problem, start)
    kwargs = TIGHT_SETTINGS if settings == "tight" else {}
    popt, pcov = nlsq.curve_fit(problem.model, problem.x, problem.y, p0=p0, **kwargs)
    popt = np.asarray(popt, dtype=np.float64)
    stderr = np.sqrt(np.diag(np.asarray(pcov, dtype=np.float64)))

    param_lre = log_relative_error(popt, problem.certified_params)
    stderr_lre = log_relative_error(stderr, problem.certified_stderr)
    stderr_required = stderr_min_lre(problem.y, problem.certified_rss)
    report = "\n".join(
        [
            f"NIST {name} ({problem.difficulty} difficulty) from {start}, {settings} settings: "
            f"{problem.formula}",
            _lre_table("parameters", popt, problem.certified_params, param_lre, PARAM_MIN_LRE),
            _lre_table(
                "standard errors", stderr, problem.certified_stderr, stderr_lre, stderr_required
            ),
        ]
    )
    if np.any(param_lre < PARAM_MIN_LRE) or np.any(stderr_lre < stderr_required):
        pytest.fail(report, pytrace=False)


def test_log_relative_error() -> None:
    certified = np.array([1.0, 2.0, -3.0, 0.0, 5.0])
    estimate = np.array([1.0, 2.0002, -3.0, 1e-7, np.nan])
    np.testing.assert_allclose(
        log_relative_error(estimate, certified), [MAX_LRE, 4.0, MAX_LRE, 7.0, 0.0]
    )


def test_stderr_requirement_is_lowered_only_where_float64_caps_it() -> None:
    lowered = {
        name: stderr_min_lre(load(name).y, load(name).certified_rss)
        for name in NAMES
        if stderr_min_lre(load(name).y, load(name).certified_rss) < STDERR_MIN_LRE
    }
    assert lowered == {"Lanczos1": 2.0}
