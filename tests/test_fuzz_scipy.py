"""Property-based parity of nlsq with scipy on generated problems (hypothesis).

Each example draws a model family (exponential decay, Gaussian peak, rational,
cubic polynomial), true parameters, seeded noise, a starting point near the truth,
bounds with some infinite sides (some cutting through the truth, so that a bound is
active at the solution), ``x_scale``, a loss, and a method ('trf', 'dogbox', or 'lm'
where scipy allows it). scipy and nlsq both get the same analytic Jacobian (NumPy for
scipy, ``jax.numpy`` for nlsq); the ``curve_fit`` property adds ``sigma`` (1-D or a
2-D covariance).

Tolerance rule
--------------
With the same Jacobian both libraries run the same iterations up to rounding, and the
rounding differs between machines. The stopping reasons must agree, unless a
termination test sits at a rounding tie: then each side's status must be a
convergence status (1-4), and a side that reports the gradient test met must meet it
at its own solution (:func:`gradient_test_value` below ``gtol``); what ``ftol`` and
``xtol`` claim is checked by the solution comparison that follows, whose bound is what
those tests leave unresolved. Where they stop may differ by that much, which depends
on the conditioning. The solutions are therefore compared where that ambiguity is
measured, in the space of predictions:
with ``J`` the weighted Jacobian at scipy's solution ``x_s``, nlsq's ``x_n`` must satisfy

    ||J (x_n - x_s)|| <= 10 (2 sqrt(ftol) ||f(x_s)|| + 2 xtol ||J|| (xtol + ||x_s||))

(``ftol`` bounds the cost reduction left, ``xtol`` the step left). A direction the data
barely determine (a small singular value of ``J``) may thus differ more in ``x``, by
at most that bound over ``sigma_min(J)``: the tolerance in parameters grows with
``cond(J)``. The costs must agree to ``1e-6`` relative (equal-cost minima reached at
different points are accepted by the prediction-space test, which such points pass
only when they predict the same). The covariance is compared after scaling by scipy's
standard errors, to ``1e-4 + 100 eps cond(J)^2`` (the rounding of ``pinv(J^T J)``);
it is compared only where ``cond(J) < 1e6``.

A drawn start from which scipy itself ends elsewhere when the start moves by a few
rounding errors (a chaotic path, e.g. a Gaussian started at almost zero width) has no
answer that two implementations can share; such examples are discarded
(:func:`rounding_decides`).

Profiles
--------
``ci`` (the default): few examples drawn from a small set of shapes and static
options, so the module compiles a bounded number of programs and runs in well under a
minute on two cores. ``long``: ``NLSQ_FUZZ_PROFILE=long pytest tests/test_fuzz_scipy.py``
runs hundreds of examples over every combination of model and static options (each
new combination compiles once: tens of minutes). ``NLSQ_FUZZ_EXAMPLES=N`` overrides
the number of examples of either profile. Neither profile writes an example database
to disk.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from stopping import assert_same_or_legitimate_status, gradient_test_value

import nlsq

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("NLSQ_FUZZ_PROFILE", "ci")
FUZZ = settings(
    settings.get_profile(PROFILE),
    max_examples=int(
        os.environ.get("NLSQ_FUZZ_EXAMPLES", settings.get_profile(PROFILE).max_examples)
    ),
)

EPS = np.finfo(float).eps
#: Every problem has this many points, so that each model compiles once per option set.
M = 40
FTOL = XTOL = GTOL = 1e-8

pytestmark = pytest.mark.filterwarnings("ignore::scipy.optimize.OptimizeWarning")


@dataclass(frozen=True)
class Family:
    """A model ``f(t, *p)`` and its Jacobian, for NumPy (scipy) and jax.numpy (nlsq)."""

    name: str
    np_model: Callable
    np_jac: Callable
    jax_model: Callable
    jax_jac: Callable
    t: np.ndarray
    #: Ranges of the true parameters.
    low: tuple[float, ...]
    high: tuple[float, ...]


def _exponential(xp):
    def model(t, a, b, c):
        return a * xp.exp(-b * t) + c

    def jac(t, a, b, c):
        e = xp.exp(-b * t)
        return xp.stack([e, -a * t * e, xp.ones_like(t)], axis=1)

    return model, jac


def _gaussian(xp):
    def model(t, a, mu, s):
        return a * xp.exp(-((t - mu) ** 2) / (2 * s**2))

    def jac(t, a, mu, s):
        g = xp.exp(-((t - mu) ** 2) / (2 * s**2))
        return xp.stack([g, a * g * (t - mu) / s**2, a * g * (t - mu) ** 2 / s**3], axis=1)

    return model, jac


def _rational(xp):
    def model(t, a, b, c):
        return (a + b * t) / (1 + c * t)

    def jac(t, a, b, c):
        d = 1 + c * t
        return xp.stack([1 / d, t / d, -t * (a + b * t) / d**2], axis=1)

    return model, jac


def _polynomial(xp):
    def model(t, p0, p1, p2, p3):
        return p0 + t * (p1 + t * (p2 + t * p3))

    def jac(t, p0, p1, p2, p3):
        return xp.stack([xp.ones_like(t), t, t**2, t**3], axis=1)

    return model, jac


def _family(name, factory, t, low, high) -> Family:
    np_model, np_jac = factory(np)
    jax_model, jax_jac = factory(jnp)
    return Family(name, np_model, np_jac, jax_model, jax_jac, t, low, high)


FAMILIES = {
    f.name: f
    for f in (
        _family("exponential", _exponential, np.linspace(0, 4, M), (0.5, 0.3, -1), (5, 3, 1)),
        _family("gaussian", _gaussian, np.linspace(-3, 3, M), (0.5, -1, 0.5), (5, 1, 1.5)),
        _family("rational", _rational, np.linspace(0, 2, M), (-2, -2, 0.1), (2, 2, 1.0)),
        _family("polynomial", _polynomial, np.linspace(-1, 1, M), (-2,) * 4, (2,) * 4),
    )
}


# --- residuals for least_squares: data travel as arguments, so one compile per option set


def _residuals(family: Family, jax: bool) -> tuple[Callable, Callable]:
    model = family.jax_model if jax else family.np_model
    jac = family.jax_jac if jax else family.np_jac

    def fun(p, t, y, w):
        return w * (model(t, *p) - y)

    def fun_jac(p, t, y, w):
        return w[:, None] * jac(t, *p)

    return fun, fun_jac


RESIDUALS = {
    (name, jax): _residuals(family, jax) for name, family in FAMILIES.items() for jax in (0, 1)
}


@dataclass(frozen=True)
class Static:
    """The options that select a compiled program: one compile per distinct value."""

    family: str
    method: str
    bounded: bool
    loss: str = "linear"
    x_scale: str = "default"  # 'default', 'jac' or 'array'
    sigma: str = "none"  # curve_fit only: 'none', '1-D' or '2-D'


LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")

#: The ``ci`` profile draws its programs from these (each compiles once per module run);
#: together they cover every family, method, loss kind, bound kind and sigma kind.
CI_LEAST_SQUARES = (
    Static("exponential", "trf", True, "soft_l1", "jac"),
    Static("gaussian", "dogbox", True, "linear", "array"),
    Static("rational", "lm", False, "linear", "jac"),
    Static("polynomial", "trf", False, "cauchy", "array"),
)
CI_CURVE_FIT = (
    Static("exponential", "trf", False, sigma="1-D"),
    Static("gaussian", "trf", True, sigma="2-D"),
    Static("rational", "dogbox", True, sigma="none"),
)


@st.composite
def any_static(draw, curve_fit: bool) -> Static:
    """Any valid combination (the ``long`` profile)."""
    family = draw(st.sampled_from(sorted(FAMILIES)))
    method = draw(st.sampled_from(["trf", "dogbox", "lm"]))
    bounded = False if method == "lm" else draw(st.booleans())
    if curve_fit:
        return Static(family, method, bounded, sigma=draw(st.sampled_from(["none", "1-D", "2-D"])))
    loss = "linear" if method == "lm" else draw(st.sampled_from(LOSSES))
    x_scale = draw(st.sampled_from(["default", "jac", "array"]))
    return Static(family, method, bounded, loss, x_scale)


def statics(curve_fit: bool) -> st.SearchStrategy[Static]:
    if PROFILE == "ci":
        return st.sampled_from(CI_CURVE_FIT if curve_fit else CI_LEAST_SQUARES)
    return any_static(curve_fit)


@dataclass(frozen=True)
class Problem:
    family: Family
    truth: np.ndarray
    y: np.ndarray
    p0: np.ndarray
    lb: np.ndarray
    ub: np.ndarray


@st.composite
def problems(draw, static: Static) -> Problem:
    """Data from true parameters plus seeded noise; ``p0`` near the truth; when
    bounded, bounds around the truth with some sides infinite and some cutting
    through it (at least one side finite)."""
    family = FAMILIES[static.family]
    n = len(family.low)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    truth = rng.uniform(family.low, family.high)
    noise = draw(st.sampled_from([0.0, 1e-3, 0.05]))
    y = family.np_model(family.t, *truth) + noise * rng.standard_normal(M)
    p0 = truth * (1 + 0.2 * rng.uniform(-1, 1, n)) + 0.05 * rng.uniform(-1, 1, n)
    lb, ub = np.full(n, -np.inf), np.full(n, np.inf)
    if static.bounded:
        kinds = ["free", "lower", "upper", "both", "active"]
        sides = draw(st.lists(st.sampled_from(kinds), min_size=n, max_size=n))
        if set(sides) == {"free"}:
            sides[0] = "both"
        for i, kind in enumerate(sides):
            width = 0.5 + abs(truth[i])
            if kind in ("lower", "both"):
                lb[i] = min(truth[i], p0[i]) - width
            if kind in ("upper", "both"):
                ub[i] = max(truth[i], p0[i]) + width
            if kind == "active":
                # The bound excludes the truth: it is active at the solution.
                ub[i] = truth[i] - 0.1 * width
                lb[i] = ub[i] - 2 * width
                p0[i] = ub[i] - 0.5 * width
    return Problem(family, truth, y, p0, lb, ub)


def _cond(J: np.ndarray) -> float:
    s = np.linalg.svd(J, compute_uv=False)
    return float(s[0] / s[-1]) if s[-1] > 0 else np.inf


def _prediction_bound(J: np.ndarray, f_s: np.ndarray, x_s: np.ndarray) -> float:
    """The prediction-space tolerance of the module docstring."""
    left_by_ftol = 2 * np.sqrt(FTOL) * np.linalg.norm(f_s)
    left_by_xtol = 2 * XTOL * np.linalg.norm(J, 2) * (XTOL + np.linalg.norm(x_s))
    return 10 * (left_by_ftol + left_by_xtol) + 1e3 * EPS * np.linalg.norm(J, 2)


#: leastsq's info (curve_fit's ier with method='lm') -> least_squares' status.
LM_STATUS = {1: 2, 2: 3, 3: 4, 4: 1, 5: 0}


def rounding_decides(solve: Callable[[np.ndarray], np.ndarray | None], p0, x_s, J, f_s) -> bool:
    """Whether scipy, started a few rounding errors from ``p0``, ends away from ``x_s``.

    ``solve(p0)`` returns scipy's solution from ``p0``, or None where it fails; ``J`` and
    ``f_s`` are the Jacobian and residuals at ``x_s`` (the prediction-space bound).
    """
    bound = _prediction_bound(J, f_s, x_s)
    for factor in (1 + 4 * EPS, 1 - 4 * EPS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            x = solve(np.asarray(p0) * factor)
        if x is None or np.linalg.norm(J @ (x - x_s)) > bound:
            return True
    return False


def assert_same_solution(x_n, x_s, cost_n, cost_s, J, f_s, label: str) -> None:
    """``x`` in prediction space, the cost relatively (see the module docstring)."""
    x_n, x_s = np.asarray(x_n), np.asarray(x_s)
    gap = float(np.linalg.norm(J @ (x_n - x_s)))
    bound = _prediction_bound(J, f_s, x_s)
    assert gap <= bound, (
        f"{label}: ||J dx|| = {gap:.3g} > {bound:.3g} (cond(J) = {_cond(J):.3g}); "
        f"nlsq x = {x_n}, scipy x = {x_s}"
    )
    assert cost_n == pytest.approx(cost_s, rel=1e-6, abs=1e3 * EPS * (1 + cost_s)), label


def assert_same_covariance(pcov_n, pcov_s, J_s, J_n, label: str) -> None:
    """Covariances scaled by scipy's standard errors, to a conditioning-aware tolerance.

    ``J_s`` and ``J_n`` are the weighted Jacobians at scipy's and nlsq's solutions: the
    covariance moves with ``J``, by at most about ``2 cond(J) ||dJ|| / ||J||``.
    """
    cond = _cond(J_s)
    finite_s = np.isfinite(pcov_s).all()
    assert np.isfinite(pcov_n).all() == finite_s, label
    if not finite_s or cond >= 1e6:
        return
    d = np.sqrt(np.diag(pcov_s))
    scaled = (np.asarray(pcov_n) - pcov_s) / np.outer(d, d)
    moved = np.linalg.norm(J_n - J_s, 2) / np.linalg.norm(J_s, 2)
    tol = 1e-4 + 100 * EPS * cond**2 + 4 * cond * moved
    worst = np.abs(scaled).max()
    assert worst <= tol, f"{label}: pcov differs by {worst:.3g} > {tol:.3g}"


def unscaled(pcov: np.ndarray, chi2: float, absolute_sigma: bool) -> np.ndarray:
    """``pinv(J^T J)``: ``pcov`` without scipy's factor ``chi2 / (m - n)``.

    The factor is compared through the costs; at a zero-residual solution it is a
    rounding-level number whose relative value the two libraries need not share.
    """
    if absolute_sigma or not np.isfinite(pcov).all():
        return pcov
    return pcov / chi2


@st.composite
def options(draw, static: Static, n: int) -> dict:
    """``least_squares`` keywords: the static choice plus drawn values."""
    chosen = {"method": static.method, "loss": static.loss}
    if static.x_scale == "jac":
        chosen["x_scale"] = "jac"
    elif static.x_scale == "array":
        scales = draw(st.lists(st.sampled_from([0.1, 1.0, 10.0]), min_size=n, max_size=n))
        chosen["x_scale"] = np.asarray(scales)
    if static.loss != "linear":
        chosen["f_scale"] = draw(st.sampled_from([0.1, 1.0]))
    return chosen


def _scipy_least_squares(problem: Problem, w: np.ndarray, chosen: dict):
    fun, jac = RESIDUALS[(problem.family.name, 0)]
    args = (problem.family.t, problem.y, w)
    bounds = (problem.lb, problem.ub)
    try:
        return so.least_squares(
            fun, problem.p0, jac, bounds, args=args, ftol=FTOL, xtol=XTOL, gtol=GTOL, **chosen
        )
    except (ValueError, np.linalg.LinAlgError) as error:
        return error


def _nlsq_least_squares(problem: Problem, w: np.ndarray, chosen: dict):
    fun, jac = RESIDUALS[(problem.family.name, 1)]
    args = (problem.family.t, problem.y, w)
    bounds = (problem.lb, problem.ub)
    try:
        return nlsq.least_squares(
            fun, problem.p0, jac, bounds, args=args, ftol=FTOL, xtol=XTOL, gtol=GTOL, **chosen
        )
    except (ValueError, np.linalg.LinAlgError) as error:
        return error


@FUZZ
@given(data=st.data())
@pytest.mark.timeout(300 if PROFILE == "ci" else 3600)
def test_least_squares_agrees_with_scipy(data) -> None:
    """Same status, same solution (prediction space) and cost as scipy's least_squares."""
    static = data.draw(statics(curve_fit=False))
    problem = data.draw(problems(static))
    chosen = data.draw(options(static, problem.p0.size))
    w = np.ones(M)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow in a trial step
        expected = _scipy_least_squares(problem, w, chosen)
    actual = _nlsq_least_squares(problem, w, chosen)
    label = f"{problem.family.name} {chosen}"
    if isinstance(expected, Exception):
        assert type(actual) is type(expected) and str(actual) == str(expected), label
        return
    J = problem.family.np_jac(problem.family.t, *expected.x)

    def solve(p0: np.ndarray) -> np.ndarray | None:
        result = _scipy_least_squares(replace(problem, p0=p0), w, chosen)
        return None if isinstance(result, Exception) else result.x

    assume(not rounding_decides(solve, problem.p0, expected.x, J, expected.fun))
    assert not isinstance(actual, Exception), f"{label}: nlsq raised {actual!r}"
    gradients = [
        gradient_test_value(chosen["method"], r.x, r.jac, r.fun, problem.lb, problem.ub)
        if chosen["method"] == "lm"
        else r.optimality  # the gradient test's own value, loss scaling included
        for r in (actual, expected)
    ]
    assert_same_or_legitimate_status(actual.status, expected.status, *gradients, GTOL, label)
    assert_same_solution(actual.x, expected.x, actual.cost, expected.cost, J, expected.fun, label)
    np.testing.assert_array_equal(actual.active_mask, expected.active_mask, err_msg=label)


def _sigma(draw, kind: str) -> np.ndarray | None:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "none":
        return None
    errors = rng.uniform(0.5, 2.0, M)
    if kind == "1-D":
        return errors
    # An AR(1)-correlated covariance: positive definite, well conditioned.
    rho = 0.5
    lag = np.abs(np.subtract.outer(np.arange(M), np.arange(M)))
    return np.outer(errors, errors) * rho**lag


def _weighted_jacobian(J: np.ndarray, sigma) -> np.ndarray:
    if sigma is None:
        return J
    if sigma.ndim == 1:
        return J / sigma[:, None]
    return np.linalg.solve(np.linalg.cholesky(sigma), J)


@FUZZ
@given(data=st.data())
@pytest.mark.timeout(300 if PROFILE == "ci" else 3600)
def test_curve_fit_agrees_with_scipy(data) -> None:
    """Same popt (prediction space) and pcov as scipy's curve_fit, with sigma 1-D/2-D."""
    static = data.draw(statics(curve_fit=True))
    problem = data.draw(problems(static))
    method = static.method
    sigma = _sigma(data.draw, static.sigma)
    absolute_sigma = data.draw(st.booleans())
    family = problem.family
    common = dict(
        p0=problem.p0,
        sigma=sigma,
        absolute_sigma=absolute_sigma,
        method=method,
        full_output=True,
    )
    if method != "lm":
        common["bounds"] = (problem.lb, problem.ub)
    label = f"{family.name} {method} sigma={None if sigma is None else sigma.ndim}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            popt_s, pcov_s, info_s, _, ier_s = so.curve_fit(
                family.np_model, family.t, problem.y, jac=family.np_jac, **common
            )
    except RuntimeError as error:
        with pytest.raises(RuntimeError) as raised:
            nlsq.curve_fit(family.jax_model, family.t, problem.y, jac=family.jax_jac, **common)
        assert str(raised.value) == str(error), label
        return
    J = _weighted_jacobian(family.np_jac(family.t, *popt_s), sigma)
    f_s = np.asarray(info_s["fvec"])

    def solve(p0: np.ndarray) -> np.ndarray | None:
        try:
            options = {**common, "p0": p0, "full_output": False}
            return so.curve_fit(family.np_model, family.t, problem.y, jac=family.np_jac, **options)[
                0
            ]
        except RuntimeError:
            return None

    assume(not rounding_decides(solve, problem.p0, popt_s, J, f_s))
    popt_n, pcov_n, info_n, _, ier_n = nlsq.curve_fit(
        family.jax_model, family.t, problem.y, jac=family.jax_jac, **common
    )
    J_n = _weighted_jacobian(family.np_jac(family.t, *popt_n), sigma)
    if ier_n != ier_s:
        # curve_fit's ier is least_squares' status (leastsq's info for lm).
        status = (lambda ier: LM_STATUS[ier]) if method == "lm" else (lambda ier: ier)
        lb, ub = (problem.lb, problem.ub) if method != "lm" else (-np.inf, np.inf)
        f_n = np.asarray(info_n["fvec"])
        assert_same_or_legitimate_status(
            status(ier_n),
            status(ier_s),
            gradient_test_value(method, popt_n, J_n, f_n, lb, ub),
            gradient_test_value(method, popt_s, J, f_s, lb, ub),
            GTOL,
            label,
        )
    cost_s = 0.5 * f_s @ f_s
    cost_n = 0.5 * np.sum(np.asarray(info_n["fvec"]) ** 2)
    assert_same_solution(popt_n, popt_s, cost_n, cost_s, J, f_s, label)
    if cost_s > 0 and cost_n > 0:
        pcov_s = unscaled(pcov_s, 2 * cost_s, absolute_sigma)
        pcov_n = unscaled(pcov_n, 2 * cost_n, absolute_sigma)
        assert_same_covariance(pcov_n, pcov_s, J, J_n, label)
    else:
        # An exact fit: scipy's factor chi2 / (m - n) is 0.
        np.testing.assert_allclose(pcov_n, pcov_s, atol=1e3 * EPS, err_msg=label)


@pytest.mark.timeout(120)
def test_tolerance_rule_detects_a_wrong_solution() -> None:
    """The comparison is not vacuous: a visibly worse point fails it."""
    family = FAMILIES["exponential"]
    truth = np.array([2.0, 1.0, 0.5])
    J = family.np_jac(family.t, *truth)
    with pytest.raises(AssertionError):
        assert_same_solution(truth * 1.001, truth, 1e-3, 0.0, J, np.zeros(M), "shifted")


def test_status_rule_rejects_an_illegitimate_stop() -> None:
    """Different statuses pass only as two convergence stops whose gtol claims hold."""
    family = FAMILIES["exponential"]
    rng = np.random.default_rng(3)
    y = family.np_model(family.t, 2.0, 1.0, 0.5) + 0.05 * rng.standard_normal(M)
    tight = {"ftol": 1e-15, "xtol": 1e-15, "gtol": 1e-15}
    x = so.curve_fit(family.np_model, family.t, y, p0=[1.0, 1.0, 0.0], **tight)[0]
    J, free = family.np_jac(family.t, *x), np.full(3, np.inf)
    at_minimum = gradient_test_value("trf", x, J, family.np_model(family.t, *x) - y, -free, free)
    assert at_minimum < GTOL
    away = x * 1.01
    f_away = family.np_model(family.t, *away) - y
    gradient_away = gradient_test_value(
        "trf", away, family.np_jac(family.t, *away), f_away, -free, free
    )
    assert_same_or_legitimate_status(1, 2, at_minimum, gradient_away, GTOL, "at the minimum")
    with pytest.raises(AssertionError, match="claims gtol"):
        assert_same_or_legitimate_status(1, 2, gradient_away, at_minimum, GTOL, "1% off")
    with pytest.raises(AssertionError, match="stopped with status 0"):
        assert_same_or_legitimate_status(0, 2, at_minimum, at_minimum, GTOL, "budget")
