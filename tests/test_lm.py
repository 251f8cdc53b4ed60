"""The Levenberg-Marquardt solver against scipy's MINPACK wrapper.

``nlsq.solvers.lm.lm`` is called directly under ``jax.jit`` and compared with
``scipy.optimize.least_squares(method='lm')`` and ``scipy.optimize.leastsq``, on the same
residual function and the same exact Jacobian (forward-mode autodiff, jitted for scipy).

Tolerance rule
--------------
Both sides run MINPACK's iteration, but with different arithmetic (scipy's C MINPACK,
nlsq's jax.numpy on LAPACK kernels chosen for the CPU), so they agree to rounding and
the rounding differs from machine to machine. What is asserted is what holds on any
machine where both run:

- values agree relatively, with an absolute floor from the problem's scale for values
  near zero: ``x`` to ``X_RTOL`` of its largest entry, residuals to ``1e-12`` of the
  larger of the initial and final residuals (:func:`residual_floor`), the cost to the
  cost of residuals of that size;
- statuses and evaluation counts are identical, except in the cases of ``TIES``, where
  a stopping test sits at a rounding tie (the tested quantity equals the tolerance to
  rounding, so one more iteration, or one test more or less met, is as right as the
  other). There both stops must be legitimate (:func:`assert_legitimate_stops`): each
  side's status is a convergence status, and each test it reports met is met at its own
  iterate: the gradient test by MINPACK's cosines at ``x``, ``ftol`` and ``xtol`` by the
  last step, found by running the same fit with one evaluation less. The values then
  agree to what those tolerances leave unresolved.

Cases whose stopping decision is made at the level of rounding noise in every run
(exactly duplicated Jacobian columns and the like) are left out.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares, leastsq
from stopping import gradient_test_value

from nlsq.covariance import leastsq_covariance
from nlsq.solvers.lm import (
    FTOL_TOO_SMALL,
    GTOL_TOO_SMALL,
    IMPROPER_INPUT,
    XTOL_TOO_SMALL,
    LMResult,
    _trial_status,
    lm,
)
from nlsq.solvers.minpack import enorm, lmpar, qrfac, qrsolv
from nlsq.solvers.termination import INITIAL_NOT_FINITE, RUNNING

pytestmark = pytest.mark.usefixtures("x64")

EPS = np.finfo(float).eps
#: x agrees with scipy to rounding; this leaves room for ill-conditioning.
X_RTOL = 1e-10
#: scipy's ``leastsq`` defaults.
LEASTSQ_TOL = 1.49012e-8
#: MINPACK ``info`` -> nlsq status (scipy's FROM_MINPACK_TO_COMMON, 6-8 passed through).
STATUS_FROM_IER = {0: -1, 1: 2, 2: 3, 3: 4, 4: 1, 5: 0, 6: 6, 7: 7, 8: 8}


# --------------------------------------------------------------------------------------
# Problems (data are NumPy float64 so that they trace as float64 constants)
# --------------------------------------------------------------------------------------

_rng = np.random.default_rng(1234)
T = np.linspace(0.0, 4.0, 25)
NOISE = _rng.standard_normal(T.size)
Y_DECAY = 2.5 * np.exp(-1.3 * T) + 0.02 * NOISE
Y_DECAY_EXACT = 2.5 * np.exp(-1.3 * T)
Y_TWO_EXP = 3.0 * np.exp(-2.0 * T) + 1.0 * np.exp(-0.3 * T) + 0.01 * NOISE
X_PEAK = np.linspace(-3.0, 5.0, 40)
Y_PEAK = (
    4.0 * np.exp(-0.5 * ((X_PEAK - 1.2) / 0.7) ** 2)
    + 0.3
    + 0.05 * _rng.standard_normal(X_PEAK.size)
)
Y_TWO_PEAKS = (
    2.0 * np.exp(-0.5 * ((X_PEAK + 1.0) / 0.5) ** 2)
    + 1.5 * np.exp(-0.5 * ((X_PEAK - 2.0) / 0.8) ** 2)
    + 0.1
    + 0.05 * X_PEAK
    + 0.02 * _rng.standard_normal(X_PEAK.size)
)
# A Gauss-Newton step from x = 10 overshoots far enough to overflow exp.
Y_OVERFLOW = 2000.0 * np.exp(10.0)


def _gaussian(x, height, center, width):
    return height * jnp.exp(-0.5 * ((x - center) / width) ** 2)


@dataclass(frozen=True)
class Problem:
    fun: Callable[[jax.Array], jax.Array]
    x0: tuple[float, ...]


PROBLEMS = {
    # m == n, zero residual at (1, 1).
    "rosenbrock": Problem(lambda x: jnp.stack([10 * (x[1] - x[0] ** 2), 1 - x[0]]), (-1.2, 1.0)),
    "decay": Problem(lambda p: p[0] * jnp.exp(-p[1] * T) - Y_DECAY, (1.0, 1.0)),
    "decay_exact": Problem(lambda p: p[0] * jnp.exp(-p[1] * T) - Y_DECAY_EXACT, (1.0, 1.0)),
    "two_exp": Problem(
        lambda p: p[0] * jnp.exp(-p[1] * T) + p[2] * jnp.exp(-p[3] * T) - Y_TWO_EXP,
        (1.0, 1.0, 2.0, 0.1),
    ),
    "peak": Problem(
        lambda p: _gaussian(X_PEAK, p[0], p[1], p[2]) + p[3] - Y_PEAK, (3.0, 1.0, 1.0, 0.0)
    ),
    "two_peaks": Problem(
        lambda p: (
            _gaussian(X_PEAK, p[0], p[1], p[2])
            + _gaussian(X_PEAK, p[3], p[4], p[5])
            + p[6]
            + p[7] * X_PEAK
            - Y_TWO_PEAKS
        ),
        (1.5, -0.8, 0.6, 1.0, 2.2, 1.0, 0.0, 0.0),
    ),
    # The third parameter does not enter the model: J has an exactly zero column.
    "zero_column": Problem(
        lambda p: p[0] * jnp.exp(-p[1] * T) + 0.0 * p[2] - Y_DECAY, (1.0, 1.0, 3.0)
    ),
    # Moré, Garbow and Hillstrom's helical valley: m == n == 3.
    "helical": Problem(
        lambda x: jnp.stack(
            [
                10 * (x[2] - 10 * jnp.arctan2(x[1], x[0]) / (2 * jnp.pi)),
                10 * (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1),
                x[2],
            ]
        ),
        (-1.0, 0.0, 0.0),
    ),
    # Trial steps with a negative p[0] give NaN residuals.
    "log": Problem(
        lambda p: 3 * jnp.log(p[0]) + p[1] * T - (3 * np.log(0.01) + 0.5 * T), (5.0, 0.0)
    ),
    # A trial with exactly one infinite residual (norm inf) ...
    "overflow_one": Problem(
        lambda p: jnp.stack([jnp.exp(p[0]) - Y_OVERFLOW, 1e-3 * (p[0] - np.log(Y_OVERFLOW))]),
        (10.0,),
    ),
    # ... and with several (norm NaN): MINPACK shrinks the step bound differently.
    "overflow_many": Problem(
        lambda p: jnp.exp(p[0]) * jnp.ones(3) - Y_OVERFLOW * np.array([1.0, 1.01, 0.99]),
        (10.0,),
    ),
}


def forward_difference(fun: Callable) -> Callable:
    """MINPACK's ``fdjac2`` Jacobian (``lmdif``): step ``sqrt(eps) |x_j|``, or ``sqrt(eps)``."""
    step = np.sqrt(EPS)

    def jac(x: jax.Array) -> jax.Array:
        h = step * jnp.abs(x)
        h = jnp.where(h == 0, step, h)
        shifted = jax.vmap(fun)(x + jnp.diag(h))
        return ((shifted - fun(x)) / h[:, None]).T

    return jac


# --------------------------------------------------------------------------------------
# Running both solvers
# --------------------------------------------------------------------------------------


@functools.cache
def _compiled_lm(name: str, jac_scale: bool, jac_nfev: int = 0, finite_difference: bool = False):
    fun = PROBLEMS[name].fun
    jac = forward_difference(fun) if finite_difference else jax.jacfwd(fun)

    def solve(x0, ftol, xtol, gtol, max_nfev, x_scale):
        unbounded = jnp.full_like(x0, jnp.inf)
        return lm(
            fun,
            jac,
            x0,
            -unbounded,
            unbounded,
            ftol,
            xtol,
            gtol,
            max_nfev,
            x_scale,
            1.0,
            bounded=False,
            loss=None,
            jac_scale=jac_scale,
            jac_nfev=jac_nfev,
        )

    return jax.jit(solve)


def run_lm(
    name: str,
    x0=None,
    *,
    x_scale="jac",
    ftol=1e-8,
    xtol=1e-8,
    gtol=1e-8,
    max_nfev=None,
    jac_nfev=0,
    finite_difference=False,
) -> LMResult:
    """nlsq's lm on a problem, with scipy's defaults for ``max_nfev``; NumPy results."""
    x0 = np.asarray(PROBLEMS[name].x0 if x0 is None else x0, dtype=float)
    n = x0.size
    jac_scale = isinstance(x_scale, str)
    scale = np.ones(n) if jac_scale else np.broadcast_to(np.asarray(x_scale, float), (n,))
    solve = _compiled_lm(name, jac_scale, jac_nfev, finite_difference)
    result = solve(x0, ftol, xtol, gtol, 100 * n if max_nfev is None else max_nfev, scale)
    return LMResult(*(np.asarray(value) for value in jax.device_get(result)))


@functools.cache
def numpy_model(name: str) -> tuple[Callable, Callable]:
    """The problem's residuals and exact Jacobian as NumPy functions, for scipy."""
    fun = jax.jit(PROBLEMS[name].fun)
    jac = jax.jit(jax.jacfwd(PROBLEMS[name].fun))
    return (lambda x: np.asarray(fun(x))), (lambda x: np.asarray(jac(x)))


def run_scipy(name: str, x0=None, *, x_scale="jac", **options):
    fun, jac = numpy_model(name)
    x0 = np.asarray(PROBLEMS[name].x0 if x0 is None else x0, dtype=float)
    if not isinstance(x_scale, str):
        x_scale = np.broadcast_to(np.asarray(x_scale, float), x0.shape)
    return least_squares(fun, x0, jac=jac, method="lm", x_scale=x_scale, **options)


def run_leastsq(name: str, x0=None, *, dfun: bool = True, **options):
    """scipy's ``leastsq`` (``lmder`` with ``Dfun``, else ``lmdif``); warnings silenced.

    Returns ``x, infodict, ier``, with ``cov_x`` added to ``infodict``.
    """
    fun, jac = numpy_model(name)
    x0 = np.asarray(PROBLEMS[name].x0 if x0 is None else x0, dtype=float)
    with warnings.catch_warnings():
        # leastsq warns for every info outside 1-4.
        warnings.simplefilter("ignore", RuntimeWarning)
        x, cov_x, info, _, ier = leastsq(
            fun, x0, Dfun=jac if dfun else None, full_output=True, **options
        )
    return x, {**info, "cov_x": cov_x}, ier


def _ipvt_base() -> int:
    """First column index in the installed scipy's ``ipvt`` (1 in Fortran MINPACK)."""
    *_, info, _, _ = leastsq(lambda p: np.array([p[0], p[0]]), [1.0], full_output=True)
    return int(info["ipvt"][0])


def assert_factors_match_leastsq(
    ours: LMResult, info: dict, ier: int, f_floor: float = 0.0
) -> None:
    """MINPACK's ``fjac``, ``ipvt``, ``qtf`` and ``leastsq``'s ``cov_x``, to rounding.

    ``leastsq`` computes ``cov_x`` only for a success (``ier`` 1-4). ``f_floor`` is the
    residuals' absolute floor (:func:`residual_floor`), which ``qtf`` (``Q^T f``) shares.
    """
    np.testing.assert_array_equal(ours.ipvt + _ipvt_base(), info["ipvt"])
    fjac = ours.fjac.T  # scipy hands out the transpose of MINPACK's array
    scale = np.max(np.abs(info["fjac"]))
    np.testing.assert_allclose(fjac, info["fjac"], rtol=1e-10, atol=1e-13 * scale)
    np.testing.assert_allclose(
        ours.qtf,
        info["qtf"],
        rtol=1e-9,
        atol=1e-12 * np.linalg.norm(info["fvec"]) + np.sqrt(info["fvec"].size) * f_floor,
    )
    cov = np.asarray(leastsq_covariance(jnp.asarray(ours.fjac), jnp.asarray(ours.ipvt)))
    if ier not in (1, 2, 3, 4):
        return
    if info["cov_x"] is None:
        assert np.isnan(cov).all()
    else:
        assert_covariance_close(cov, info["cov_x"], 1e-10)


def assert_covariance_close(cov: np.ndarray, ref: np.ndarray, rtol: float) -> None:
    """Relative to each entry's scale ``sqrt(ref_ii ref_jj)``: near-zero correlations
    carry the rounding of the large entries."""
    scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
    np.testing.assert_array_less(np.abs(cov - ref), rtol * scale + 1e-300)


def residual_floor(f0: np.ndarray, f: np.ndarray) -> float:
    """Absolute floor for residuals: ``1e-12`` of the larger of the initial and final ones.

    At a zero-residual solution the residuals are the rounding of terms of the size of
    the data, which the initial residuals measure.
    """
    return 1e-12 * max(np.max(np.abs(f0)), np.max(np.abs(f)))


def assert_x_close(x: np.ndarray, ref: np.ndarray, rtol: float = X_RTOL) -> None:
    """``x`` relatively, entries near zero to ``rtol`` of the largest entry."""
    np.testing.assert_allclose(x, ref, rtol=rtol, atol=rtol * np.max(np.abs(ref)))


def assert_matches_scipy(
    ours: LMResult, ref, f0: np.ndarray, tie: Tie | None = None, case: tuple = ()
) -> None:
    """``ours`` against scipy's ``least_squares`` result (see the module docstring).

    ``case`` is ``(name, x0, options)``, from which a tie's stops are rerun.
    """
    if tie is None:
        assert (int(ours.status), int(ours.nfev), int(ours.njev)) == (
            ref.status,
            ref.nfev,
            ref.njev,
        )
        assert_x_close(ours.x, ref.x)
    else:
        name, x0, options = case
        assert_legitimate_stops(
            tie, nlsq_stop(name, x0, **options), scipy_stop(name, x0, **options)
        )
    f_floor = residual_floor(f0, ref.fun)
    rtol = 1e-9 if tie is None else tie.value_rtol
    np.testing.assert_allclose(ours.cost, ref.cost, rtol=rtol, atol=0.5 * f0.size * f_floor**2)
    np.testing.assert_allclose(ours.fun, ref.fun, rtol=rtol, atol=f_floor)
    j_scale = np.max(np.abs(ref.jac))
    np.testing.assert_allclose(ours.jac, ref.jac, rtol=rtol, atol=1e-12 * j_scale)
    # The gradient vanishes at the solution: compare it on the scale of its terms, with
    # the residuals' floor where they vanish too.
    j_norm, f_norm = np.linalg.norm(ref.jac), np.linalg.norm(ref.fun)
    g_scale = j_norm * (f_norm + np.sqrt(f0.size) * f_floor)
    if tie is None:
        g_atol = j_norm * (1e-11 * f_norm + np.sqrt(f0.size) * f_floor)
        np.testing.assert_allclose(ours.grad, ref.grad, rtol=1e-7, atol=g_atol)
        np.testing.assert_allclose(ours.optimality, ref.optimality, rtol=1e-7, atol=g_atol)
    else:
        # One step apart, the gradients are only both small: a cost within a relative
        # delta of the minimum has ||g|| <= ||J|| ||f|| sqrt(delta).
        bound = g_scale * np.sqrt(SLACK * max(tie.ftol, tie.xtol, EPS))
        assert max(np.linalg.norm(ours.grad), np.linalg.norm(ref.grad)) <= bound
    np.testing.assert_array_equal(ours.active_mask, np.zeros(ref.x.size, int))


# --------------------------------------------------------------------------------------
# Stops at a rounding tie
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tie:
    """A case whose stopping decision sits at a rounding tie, and why.

    ``value_rtol`` replaces the rounding-level relative tolerance of the values, which
    may now differ by one last step: at most what the tolerances leave unresolved.
    """

    ftol: float
    xtol: float
    gtol: float
    why: str
    value_rtol: float = 1e-6


@dataclass(frozen=True)
class Stop:
    """Where one side stopped, and the iterate before its last evaluation.

    ``status`` is in ``least_squares``' codes. ``x_before`` and ``fun_before`` come from
    the same fit with a budget of one evaluation less: the step from there to ``x`` is
    the last step the side took (zero when its last trial was rejected).
    """

    side: str
    status: int
    x: np.ndarray
    fun: np.ndarray
    jac: np.ndarray
    x_before: np.ndarray
    fun_before: np.ndarray


#: Statuses that report convergence, and the tests each reports met.
CLAIMS = {1: ("gtol",), 2: ("ftol",), 3: ("xtol",), 4: ("ftol", "xtol")}
#: MINPACK's xtol test bounds the step bound ``delta``, not the step: after a poor step
#: ``delta`` may shrink to ``0.1 min(delta, 10 pnorm)`` and the step may exceed ``delta``
#: by 10%, so the last step is at most about 11 times what ``xtol`` allows.
SLACK = 12.0


def assert_legitimate_stop(tie: Tie, stop: Stop) -> None:
    """A convergence stop, and each test it reports met is met at its own last step."""
    assert stop.status in CLAIMS, f"{stop.side} stopped with status {stop.status}"
    claims = CLAIMS[stop.status]
    if "gtol" in claims:
        gnorm = gradient_test_value("lm", stop.x, stop.jac, stop.fun, None, None)
        assert gnorm <= tie.gtol * (1 + 1e-6), f"{stop.side}: gnorm {gnorm:.3g} > gtol"
    if "ftol" in claims:
        # MINPACK's actred = 1 - (||f|| / ||f_before||)**2 of the last step.
        before, after = stop.fun_before @ stop.fun_before, stop.fun @ stop.fun
        reduction = abs(before - after) / before
        assert reduction <= tie.ftol + 10 * EPS, f"{stop.side}: last step reduced {reduction:.3g}"
    if "xtol" in claims:
        # MINPACK's pnorm and xnorm, scaled by the Jacobian's column norms (x_scale='jac').
        D = np.linalg.norm(stop.jac, axis=0)
        step, size = np.linalg.norm(D * (stop.x - stop.x_before)), np.linalg.norm(D * stop.x)
        assert step <= SLACK * tie.xtol * size + 10 * EPS * size, (
            f"{stop.side}: last step {step / size:.3g} of ||D x||"
        )


def assert_legitimate_stops(tie: Tie, *stops: Stop) -> None:
    """:func:`assert_legitimate_stop` for each side."""
    for stop in stops:
        assert_legitimate_stop(tie, stop)


def nlsq_stop(name: str, x0=None, **options) -> Stop:
    """nlsq's lm, and the same fit one evaluation short."""
    ours = run_lm(name, x0, **options)
    before = run_lm(name, x0, **{**options, "max_nfev": int(ours.nfev) - 1})
    return Stop("nlsq", int(ours.status), ours.x, ours.fun, ours.jac, before.x, before.fun)


def scipy_stop(name: str, x0=None, **options) -> Stop:
    """scipy's least_squares(method='lm'), and the same fit one evaluation short."""
    ref = run_scipy(name, x0, **options)
    before = run_scipy(name, x0, **{**options, "max_nfev": ref.nfev - 1})
    return Stop("scipy", ref.status, ref.x, ref.fun, ref.jac, before.x, before.fun)


def leastsq_stop(name: str, **tolerances) -> Stop:
    """scipy's leastsq, and the same fit one evaluation short."""
    x, info, ier = run_leastsq(name, **tolerances)
    x_before, info_before, _ = run_leastsq(name, maxfev=info["nfev"] - 1, **tolerances)
    jac = numpy_model(name)[1](x)
    return Stop(
        "leastsq", STATUS_FROM_IER[ier], x, info["fvec"], jac, x_before, info_before["fvec"]
    )


# --------------------------------------------------------------------------------------
# Parity with least_squares(method='lm')
# --------------------------------------------------------------------------------------

#: (problem, x0 or None, options, expected status)
CASES = [
    ("rosenbrock", None, {}, 1),
    ("rosenbrock", None, {"x_scale": [1.0, 2.0]}, 1),
    ("rosenbrock", None, {"max_nfev": 5}, 0),
    ("decay", None, {}, 2),
    ("decay", None, {"x_scale": [2.0, 0.5]}, 2),
    ("decay", None, {"ftol": 1e-3, "xtol": 1e-3, "gtol": 1e-3}, 2),
    ("decay", None, {"ftol": 1e-14, "xtol": 1e-14, "gtol": 1e-14}, 2),
    ("decay", None, {"ftol": 1e-15, "gtol": 1e-15}, 3),
    ("decay", None, {"max_nfev": 5}, 0),
    ("decay", (0.0, 0.0), {}, 2),
    ("decay", (0.0, 0.0), {"x_scale": 1.0}, 2),
    ("decay_exact", None, {}, 3),
    ("decay_exact", (0.0, 1.0), {}, 3),
    ("decay_exact", None, {"ftol": 1e-14, "xtol": 1e-14, "gtol": 1e-14}, 3),
    ("two_exp", None, {}, 1),
    ("two_exp", None, {"x_scale": 1.0}, 2),
    ("two_exp", None, {"x_scale": [1.0, 2.0, 1.0, 0.1]}, 2),
    ("two_exp", None, {"ftol": 1e-14, "xtol": 1e-14, "gtol": 1e-14}, 2),
    ("peak", None, {}, 2),
    ("peak", None, {"ftol": 1e-3, "xtol": 1e-3, "gtol": 1e-3}, 4),
    ("peak", (3.0, 0.0, 1.0, 0.0), {}, 2),
    ("two_peaks", None, {}, 2),
    ("two_peaks", None, {"x_scale": 1.0}, 2),
    ("two_peaks", None, {"ftol": 1e-3, "xtol": 1e-3, "gtol": 1e-3}, 3),
    ("two_peaks", None, {"max_nfev": 5}, 0),
    ("zero_column", None, {}, 2),
    ("zero_column", None, {"x_scale": 1.0}, 2),
    ("helical", None, {}, 3),
    ("helical", None, {"x_scale": 1.0}, 3),
    ("helical", None, {"max_nfev": 5}, 0),
    ("log", None, {}, 3),
    ("overflow_one", None, {}, 3),
    ("overflow_many", None, {"x_scale": 1.0}, 4),
]


def _case_id(case) -> str:
    name, x0, options, _ = case
    parts = [name] + ([f"x0={list(x0)}"] if x0 is not None else [])
    parts += [f"{key}={value}" for key, value in options.items()]
    return "-".join(parts)


TIGHT = {"ftol": 1e-14, "xtol": 1e-14, "gtol": 1e-14}

#: Case id -> the tie its stopping decision sits at.
TIES = {
    "two_exp-ftol=1e-14-xtol=1e-14-gtol=1e-14": Tie(
        **TIGHT, why="the relative reduction of the last steps is 1e-14 to rounding"
    ),
}


@pytest.mark.parametrize(("name", "x0", "options", "status"), CASES, ids=map(_case_id, CASES))
def test_matches_least_squares(name: str, x0, options: dict, status: int) -> None:
    ours = run_lm(name, x0, **options)
    ref = run_scipy(name, x0, **options)
    tie = TIES.get(_case_id((name, x0, options, status)))
    if tie is None:
        assert int(ours.status) == status
    f0 = numpy_model(name)[0](np.asarray(PROBLEMS[name].x0 if x0 is None else x0, float))
    assert_matches_scipy(ours, ref, f0, tie, (name, x0, options))
    np.testing.assert_allclose(ours.initial_cost, 0.5 * f0 @ f0, rtol=1e-12)


def test_tie_rule_rejects_an_early_stop() -> None:
    """A stop short of convergence that reports ftol or xtol met fails the rule."""
    tie = TIES["two_exp-ftol=1e-14-xtol=1e-14-gtol=1e-14"]
    # 12 evaluations: before the iterations whose reductions are rounding (nlsq and scipy
    # stop after 13 to 16 of them, by CPU); the last step still reduced the cost by ~0.5%.
    early = nlsq_stop("two_exp", **TIGHT, max_nfev=12)
    assert early.status == 0  # stopped by the budget
    with pytest.raises(AssertionError, match="last step reduced"):
        assert_legitimate_stop(tie, replace(early, status=2))
    with pytest.raises(AssertionError, match="last step"):
        assert_legitimate_stop(tie, replace(early, status=3))
    far = nlsq_stop("two_exp", **TIGHT, max_nfev=8)
    with pytest.raises(AssertionError, match="gnorm"):
        assert_legitimate_stop(tie, replace(far, status=1))
    assert_legitimate_stops(tie, nlsq_stop("two_exp", **TIGHT), scipy_stop("two_exp", **TIGHT))


def test_cases_reach_every_status() -> None:
    assert {case[3] for case in CASES} >= {0, 1, 2, 3, 4}


# --------------------------------------------------------------------------------------
# Parity with leastsq (gtol = 0 by default, MINPACK's info 6-8 reachable)
# --------------------------------------------------------------------------------------

LEASTSQ_CASES = [
    ("rosenbrock", LEASTSQ_TOL, LEASTSQ_TOL, 0.0),
    ("decay", LEASTSQ_TOL, LEASTSQ_TOL, 0.0),
    ("decay_exact", LEASTSQ_TOL, LEASTSQ_TOL, 0.0),
    ("two_exp", LEASTSQ_TOL, LEASTSQ_TOL, 0.0),
    ("peak", LEASTSQ_TOL, LEASTSQ_TOL, 0.0),
    ("two_peaks", LEASTSQ_TOL, LEASTSQ_TOL, 0.0),
    ("helical", LEASTSQ_TOL, LEASTSQ_TOL, 0.0),
    ("decay", 1e-15, 0.0, 0.0),
    ("decay", 0.0, 1e-15, 0.0),
    ("decay", 0.0, 0.0, 0.0),
    ("decay_exact", 0.0, 0.0, 0.0),
    ("helical", 0.0, 0.0, 0.0),
]


#: (problem, ftol, xtol, gtol) -> the tie its stopping decision sits at.
LEASTSQ_TIES = {
    ("two_exp", LEASTSQ_TOL, LEASTSQ_TOL, 0.0): Tie(
        LEASTSQ_TOL,
        LEASTSQ_TOL,
        0.0,
        why="the ftol test of the last step is met to rounding: info 2 (xtol) or 3 (both)",
    ),
}


@pytest.mark.parametrize(("name", "ftol", "xtol", "gtol"), LEASTSQ_CASES)
def test_matches_leastsq(name: str, ftol: float, xtol: float, gtol: float) -> None:
    x, info, ier = run_leastsq(name, ftol=ftol, xtol=xtol, gtol=gtol)
    n = x.size
    ours = run_lm(name, ftol=ftol, xtol=xtol, gtol=gtol, max_nfev=100 * (n + 1))
    f0 = numpy_model(name)[0](np.asarray(PROBLEMS[name].x0, float))
    f_floor = residual_floor(f0, info["fvec"])
    tie = LEASTSQ_TIES.get((name, ftol, xtol, gtol))
    if tie is not None:
        tolerances = {"ftol": ftol, "xtol": xtol, "gtol": gtol}
        assert_legitimate_stops(
            tie,
            nlsq_stop(name, **tolerances, max_nfev=100 * (n + 1)),
            leastsq_stop(name, **tolerances),
        )
        np.testing.assert_allclose(ours.fun, info["fvec"], rtol=tie.value_rtol, atol=f_floor)
        return
    assert int(ours.status) == STATUS_FROM_IER[ier]
    assert (int(ours.nfev), int(ours.njev)) == (info["nfev"], info["njev"])
    assert_x_close(ours.x, x)
    np.testing.assert_allclose(ours.fun, info["fvec"], rtol=1e-9, atol=f_floor)
    assert_factors_match_leastsq(ours, info, ier, f_floor)


def test_zero_column_has_no_covariance() -> None:
    """An exactly zero Jacobian column makes ``R`` singular: ``cov_x`` is None (NaN)."""
    x, info, ier = run_leastsq("zero_column")
    ours = run_lm("zero_column", ftol=LEASTSQ_TOL, xtol=LEASTSQ_TOL, gtol=0.0, max_nfev=400)
    assert int(ours.status) == STATUS_FROM_IER[ier]
    assert info["cov_x"] is None
    assert_factors_match_leastsq(ours, info, ier)


def test_factors_of_a_forward_difference_jacobian_match_lmdif() -> None:
    x, info, ier = run_leastsq("peak", dfun=False)
    ours = run_lm(
        "peak",
        ftol=LEASTSQ_TOL,
        xtol=LEASTSQ_TOL,
        gtol=0.0,
        max_nfev=200 * 5,
        jac_nfev=4,
        finite_difference=True,
    )
    assert int(ours.status) == STATUS_FROM_IER[ier]
    np.testing.assert_allclose(ours.x, x, rtol=1e-6)
    # Difference quotients amplify rounding to about sqrt(eps) relative.
    np.testing.assert_array_equal(ours.ipvt + _ipvt_base(), info["ipvt"])
    cov = np.asarray(leastsq_covariance(jnp.asarray(ours.fjac), jnp.asarray(ours.ipvt)))
    assert_covariance_close(cov, info["cov_x"], 1e-6)


def test_leastsq_zero_tolerances_end_at_the_rounding_limit() -> None:
    """With every tolerance 0 the fit runs until rounding stops it: MINPACK's info 6, 7
    or 8 (ftol, xtol or gtol "too small"); which one comes first is a rounding race that
    differs between machines, so any of them is right, on both sides."""
    x, info, ier = run_leastsq("decay", ftol=0.0, xtol=0.0, gtol=0.0)
    ours = run_lm("decay", ftol=0.0, xtol=0.0, gtol=0.0, max_nfev=300)
    rounding_limited = {FTOL_TOO_SMALL, XTOL_TOO_SMALL, GTOL_TOO_SMALL}
    assert STATUS_FROM_IER[ier] in rounding_limited
    assert int(ours.status) in rounding_limited
    # Both at the minimum, to rounding amplified by the conditioning.
    assert_x_close(ours.x, x, rtol=1e-8)


def test_improper_input_matches_leastsq() -> None:
    x, info, ier = run_leastsq("decay", ftol=-1.0)
    ours = run_lm("decay", ftol=-1.0)
    assert ier == 0
    assert (int(ours.status), int(ours.nfev), int(ours.njev)) == (IMPROPER_INPUT, 0, 0)
    np.testing.assert_array_equal(ours.x, x)
    np.testing.assert_allclose(ours.fun, info["fvec"], rtol=1e-15)


def test_nonpositive_budget_is_improper_input() -> None:
    ours = run_lm("decay", max_nfev=0)
    assert (int(ours.status), int(ours.nfev), int(ours.njev)) == (IMPROPER_INPUT, 0, 0)


# --------------------------------------------------------------------------------------
# Function evaluations per Jacobian (lmdif's count)
# --------------------------------------------------------------------------------------


def test_jac_nfev_adds_per_jacobian() -> None:
    plain = run_lm("two_exp")
    counted = run_lm("two_exp", jac_nfev=3)
    np.testing.assert_array_equal(counted.x, plain.x)
    assert int(counted.njev) == int(plain.njev)
    assert int(counted.nfev) == int(plain.nfev) + 3 * int(plain.njev)


@pytest.mark.parametrize(
    ("name", "maxfev"),
    [("decay", None), ("peak", None), ("rosenbrock", None), ("decay", 10), ("peak", 17)],
)
def test_forward_differences_match_lmdif(name: str, maxfev: int | None) -> None:
    """With ``jac_nfev = n`` the count, and so the budget, is ``lmdif``'s."""
    x, info, ier = run_leastsq(name, dfun=False, maxfev=maxfev or 0)
    n = x.size
    ours = run_lm(
        name,
        ftol=LEASTSQ_TOL,
        xtol=LEASTSQ_TOL,
        gtol=0.0,
        max_nfev=maxfev or 200 * (n + 1),
        jac_nfev=n,
        finite_difference=True,
    )
    assert int(ours.status) == STATUS_FROM_IER[ier]
    assert int(ours.nfev) == info["nfev"]
    # A difference quotient turns rounding in f into 1e-8 relative changes in J.
    np.testing.assert_allclose(ours.x, x, rtol=1e-6)


# --------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------


def test_initial_point_not_finite() -> None:
    ours = run_lm("log", x0=(-1.0, 0.0))
    assert (int(ours.status), int(ours.nfev), int(ours.njev)) == (INITIAL_NOT_FINITE, 1, 0)
    np.testing.assert_array_equal(ours.x, [-1.0, 0.0])


def _call_lm(fun, x0, **flags):
    x0 = jnp.asarray(x0, float)
    inf = jnp.full_like(x0, jnp.inf)
    options = {"bounded": False, "loss": None, "jac_scale": True} | flags
    scale = jnp.ones_like(x0)
    return lm(fun, jax.jacfwd(fun), x0, -inf, inf, 1e-8, 1e-8, 1e-8, 100, scale, 1.0, **options)


@pytest.mark.parametrize(
    "flags", [{"bounded": True}, {"loss": lambda z: z}], ids=["bounded", "robust-loss"]
)
def test_rejects_bounds_and_losses(flags: dict) -> None:
    with pytest.raises(ValueError, match="Method 'lm'"):
        _call_lm(PROBLEMS["decay"].fun, [1.0, 1.0], **flags)


def test_rejects_fewer_residuals_than_variables() -> None:
    with pytest.raises(ValueError, match="number of residuals"):
        _call_lm(lambda x: x[:1], [1.0, 2.0])


def test_vmap_matches_individual_runs() -> None:
    name = "two_exp"
    x0 = np.asarray(PROBLEMS[name].x0) * (1 + 0.3 * np.random.default_rng(0).normal(size=(4, 4)))
    n = x0.shape[1]
    solve = _compiled_lm(name, True)
    batched = jax.jit(jax.vmap(solve, in_axes=(0, None, None, None, None, None)))
    batch = jax.device_get(batched(x0, 1e-8, 1e-8, 1e-8, 100 * n, np.ones(n)))
    for i, start in enumerate(x0):
        single = run_lm(name, start)
        assert (int(batch.status[i]), int(batch.nfev[i]), int(batch.njev[i])) == (
            int(single.status),
            int(single.nfev),
            int(single.njev),
        )
        # Batched kernels may round differently; the path is the same.
        np.testing.assert_allclose(batch.x[i], single.x, rtol=1e-13)
        np.testing.assert_allclose(batch.cost[i], single.cost, rtol=1e-12)
        np.testing.assert_allclose(batch.fun[i], single.fun, rtol=1e-10, atol=1e-14)


def test_float32() -> None:
    t, y = T.astype(np.float32), Y_DECAY.astype(np.float32)

    def fun(p):
        return p[0] * jnp.exp(-p[1] * t) - y

    x0 = jnp.asarray([1.0, 1.0], jnp.float32)
    inf = jnp.full_like(x0, jnp.inf)
    eps32 = float(np.finfo(np.float32).eps)
    result = jax.jit(
        lambda x0: lm(
            fun,
            jax.jacfwd(fun),
            x0,
            -inf,
            inf,
            1e3 * eps32,
            1e3 * eps32,
            1e3 * eps32,
            200,
            jnp.ones_like(x0),
            1.0,
            bounded=False,
            loss=None,
            jac_scale=True,
        )
    )(x0)
    assert result.x.dtype == np.float32
    assert int(result.status) in (2, 3, 4)
    np.testing.assert_allclose(result.x, run_lm("decay").x, rtol=1e-4)


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3.0, 4.0], 5.0),
        ([0.0, 0.0], 0.0),
        ([3e-200, 4e-200], 5e-200),
        ([3e200, 4e200], 5e200),
        ([1.0, np.inf, 2.0], np.inf),
        ([1.0, -np.inf], np.inf),
        ([np.inf, 1.0, np.inf], np.nan),
        ([np.nan, 1.0], np.nan),
        ([np.inf, np.nan], np.nan),
    ],
)
def test_enorm_follows_minpack(values, expected) -> None:
    np.testing.assert_allclose(enorm(jnp.asarray(values)), expected, rtol=1e-15)


def test_enorm_of_columns_with_mask() -> None:
    A = np.arange(12.0).reshape(4, 3)
    rows = np.arange(4)[:, None] >= 1
    np.testing.assert_allclose(enorm(jnp.asarray(A), where=rows), np.linalg.norm(A[1:], axis=0))


def _collapsing_jacobian(seed: int) -> np.ndarray:
    """Columns 1 and 2 nearly parallel to column 0: their norms collapse after step 0."""
    rng = np.random.default_rng(seed)
    c0 = 10 * rng.normal(size=8)
    return np.column_stack(
        [
            c0,
            c0 + 1e-9 * rng.normal(size=8),
            0.5 * c0 + 3e-9 * rng.normal(size=8),
            rng.normal(size=8),
        ]
    )


@pytest.mark.parametrize("seed", range(6))
def test_qrfac_matches_minpack(seed: int) -> None:
    """Pivots, R and Q^T f as in scipy's lmder (one iteration of a linear problem)."""
    J = _collapsing_jacobian(seed)
    b = np.random.default_rng(100 + seed).normal(size=J.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _, _, info, _, _ = leastsq(
            lambda x: J @ x - b, np.zeros(4), Dfun=lambda x: J, full_output=True, maxfev=1
        )
    qr = qrfac(jnp.asarray(J), jnp.asarray(-b), EPS)
    np.testing.assert_array_equal(np.asarray(qr.ipvt), info["ipvt"])
    R_minpack = np.triu(info["fjac"].T[:4])  # scipy returns fjac transposed
    # The nearly dependent directions are only known to about eps / 1e-9.
    np.testing.assert_allclose(qr.R, R_minpack, rtol=1e-4, atol=1e-12 * np.abs(R_minpack).max())
    np.testing.assert_allclose(qr.qtf, info["qtf"], rtol=1e-4)
    np.testing.assert_allclose(qr.acnorm, np.linalg.norm(J, axis=0), rtol=1e-14)


def test_qrfac_is_a_pivoted_factorisation() -> None:
    J = np.random.default_rng(0).normal(size=(7, 4)) * [1.0, 10.0, 0.1, 3.0]
    f = np.random.default_rng(1).normal(size=7)
    qr = qrfac(jnp.asarray(J), jnp.asarray(f), EPS)
    R, ipvt = np.asarray(qr.R), np.asarray(qr.ipvt)
    np.testing.assert_allclose(R.T @ R, J[:, ipvt].T @ J[:, ipvt], rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(np.abs(np.diag(R))) <= 0)
    Q = np.linalg.lstsq(R.T, J[:, ipvt].T, rcond=None)[0].T  # J P = Q R
    np.testing.assert_allclose(qr.qtf, Q.T @ f, rtol=1e-10, atol=1e-12)


def test_qrsolv_solves_the_damped_problem() -> None:
    rng = np.random.default_rng(2)
    A, b, d = rng.normal(size=(9, 4)), rng.normal(size=9), rng.uniform(0.5, 2.0, size=4)
    qr = qrfac(jnp.asarray(A), jnp.asarray(b), EPS)
    x, sdiag, S = qrsolv(qr.R, qr.ipvt, jnp.asarray(d), qr.qtf)
    np.testing.assert_allclose((A.T @ A + np.diag(d**2)) @ x, A.T @ b, rtol=1e-12, atol=1e-12)
    S = np.triu(np.asarray(S), 1) + np.diag(sdiag)
    ipvt = np.asarray(qr.ipvt)
    damped = A.T @ A + np.diag(d**2)
    np.testing.assert_allclose(S.T @ S, damped[np.ix_(ipvt, ipvt)], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("delta", [1e-3, 0.1, 1.0, 1e3])
def test_lmpar_meets_the_step_bound(delta: float) -> None:
    rng = np.random.default_rng(3)
    A, b, diag = rng.normal(size=(9, 4)), rng.normal(size=9), rng.uniform(0.5, 2.0, size=4)
    qr = qrfac(jnp.asarray(A), jnp.asarray(b), EPS)
    x, par, _, _ = lmpar(qr.R, qr.ipvt, jnp.asarray(diag), qr.qtf, delta, 0.0, 1e-300)
    dxnorm = np.linalg.norm(diag * np.asarray(x))
    if float(par) == 0:
        np.testing.assert_allclose(x, np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-10)
        assert dxnorm <= 1.1 * delta
    else:
        assert abs(dxnorm - delta) <= 0.1 * delta
        damped = A.T @ A + float(par) * np.diag(diag**2)
        np.testing.assert_allclose(damped @ x, A.T @ b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("actred", "prered", "ratio", "delta", "gnorm", "nfev", "tol", "expected"),
    [
        (1e-10, 1e-10, 1.0, 1.0, 1.0, 5, 1e-8, 2),  # ftol
        (1e-10, 1e-10, 3.0, 1.0, 1.0, 5, 1e-8, RUNNING),  # ftol needs ratio <= 2
        (0.5, 0.5, 1.0, 1e-10, 1.0, 5, 1e-8, 3),  # xtol
        (1e-10, 1e-10, 1.0, 1e-10, 1.0, 5, 1e-8, 4),  # both
        (1e-10, 1e-10, 1.0, 1e-10, 1.0, 100, 1e-8, 4),  # convergence wins over the budget
        (0.5, 0.5, 1.0, 1.0, 1.0, 100, 1e-8, 0),  # budget
        (1e-17, 1e-17, 1.0, 1.0, 1.0, 100, 0.0, FTOL_TOO_SMALL),  # info 6 wins over 5
        (1e-17, 1e-17, 1.0, 1e-20, 1.0, 5, 0.0, XTOL_TOO_SMALL),  # 7 wins over 6
        (1e-17, 1e-17, 1.0, 1e-20, 1e-20, 5, 0.0, GTOL_TOO_SMALL),  # 8 wins over 7
        (0.5, 0.5, 1.0, 1e-20, 1e-20, 5, 1e-8, 3),  # convergence wins over 7 and 8
        (np.nan, 0.5, np.nan, 1.0, 1.0, 5, 1e-8, RUNNING),  # NaN compares false
    ],
)
def test_trial_status_follows_minpack_precedence(
    actred, prered, ratio, delta, gnorm, nfev, tol, expected
) -> None:
    xnorm, max_nfev = 1.0, 100
    status = _trial_status(
        actred, prered, ratio, delta, xnorm, gnorm, nfev, tol, tol, max_nfev, EPS
    )
    assert int(status) == expected
