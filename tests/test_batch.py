"""``nlsq.curve_fit_batch``: a batch of fits equals a loop of single fits.

Every fit of a batch must give what ``nlsq.curve_fit`` gives for it alone: the same
``popt`` and ``pcov``, the same status and evaluation count, and the same covariance
verdict (where the single fit warns, the batch flags). A fit ``curve_fit`` would raise
for gets its own status in the batch and leaves the other fits exactly as they are
without it. A few cases are also checked against ``scipy.optimize.curve_fit``.

Tolerance rule
--------------
The batch program is the single fit's program under ``vmap``, which may order a
reduction differently: the two agree to rounding, not bit for bit, and how far rounding
moves a fit is a property of the fit, not of the machine. Each reference single fit is
therefore also run on its data perturbed by one rounding error (``y (1 +- eps)``, a few
seeded sign patterns), and the batch must agree with it to ``RTOL`` or to
``SENSITIVITY_FACTOR`` times the largest move those perturbations caused, whichever is
larger. A smooth, well-conditioned fit moves by ~1e-16 (so ``RTOL`` applies); a robust
loss whose scaling cancels for outliers moves by up to ~1e-8. Status and evaluation
count must be identical, unless a perturbation changes them too: then the fit's
stopping test sits at a rounding tie and either count is right. Against scipy the
same holds, with the rule of ``tests/stopping.py`` where the statuses differ.
"""

from __future__ import annotations

import logging
import sys
import types
import warnings
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
from scipy.optimize import OptimizeWarning
from stopping import assert_same_or_legitimate_status, gradient_test_value

import nlsq
from nlsq import BatchResult, CurveFit, config, curve_fit_batch
from nlsq.batch_result import INVALID_INPUT, NOT_FINITE_AT_P0
from nlsq.execute import batched as batched_module
from nlsq.plan import budget as batch_module
from nlsq.prepare import batch as prepare_batch_module

#: Chunks run on several threads only on a CPU backend.
cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu", reason="threads split CPU batches")

RTOL = 1e-10
#: The batch may differ from a single fit by this many times the largest move that
#: rounding-level perturbations of the single fit's data cause (see the docstring).
SENSITIVITY_FACTOR = 100.0
#: Seeded sign patterns of the one-ulp data perturbations.
PERTURBATIONS = 3
EPS = np.finfo(np.float64).eps
SCIPY_POPT_RTOL = 1e-8
SCIPY_PCOV_RTOL = 1e-6
N_FITS = 6
M = 32
P0 = [1.0, 1.0, 0.0]


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def decay_jac(x, a, b, c):
    e = jnp.exp(-b * x)
    return jnp.stack([e, -a * x * e, jnp.ones_like(x)], axis=1)


def np_decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def np_decay_jac(x, a, b, c):
    e = np.exp(-b * x)
    return np.stack([e, -a * x * e, np.ones_like(x)], axis=1)


def two_predictors(x, a, b, c):
    return a * x[0] + b * jnp.exp(-c * x[1])


def centered(x, a, b, c):
    """Not pointwise: each value depends on the mean of all x."""
    return a * jnp.exp(-b * (x - jnp.mean(x))) + c


def _truth(n_fits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.uniform(1.5, 3.0, n_fits), rng.uniform(0.6, 1.8, n_fits), rng.uniform(0, 1, n_fits)]
    )


def decay_data(
    n_fits: int = N_FITS, m: int = M, seed: int = 0, per_fit_x: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: x shared (m,) or per fit (B, m); y (B, m) noisy decays."""
    rng = np.random.default_rng(seed)
    truth = _truth(n_fits, seed)
    if per_fit_x:
        x = np.sort(rng.uniform(0.0, 4.0, (n_fits, m)), axis=1)
    else:
        x = np.linspace(0.0, 4.0, m)
    xs = np.broadcast_to(x, (n_fits, m))
    y = truth[:, :1] * np.exp(-truth[:, 1:2] * xs) + truth[:, 2:]
    return x, y + 0.03 * rng.standard_normal((n_fits, m))


@dataclass(frozen=True)
class Single:
    """What ``nlsq.curve_fit`` returned for one fit, and how far rounding moves it.

    ``popt_spread`` and ``pcov_spread`` are the largest moves (relative to the largest
    entry) of ``popt`` and ``pcov`` under one-ulp perturbations of the data;
    ``at_tie`` says whether a perturbation changed the status or the count.
    """

    popt: np.ndarray
    pcov: np.ndarray
    status: int
    nfev: int
    covariance_warning: bool
    popt_spread: float = 0.0
    pcov_spread: float = 0.0
    at_tie: bool = False


def _single_fit(f, x, y, **options) -> Single | Exception:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            popt, pcov, info, _, ier = nlsq.curve_fit(f, x, y, full_output=True, **options)
        except (ValueError, TypeError, RuntimeError) as error:
            return error
    warned = any(issubclass(w.category, OptimizeWarning) for w in caught)
    return Single(popt, pcov, ier, info["nfev"], warned)


def _relative_move(value: np.ndarray, reference: np.ndarray) -> float:
    """Largest change relative to the largest finite entry (equal entries, inf too, 0)."""
    finite = np.isfinite(reference)
    scale = np.abs(reference[finite]).max(initial=0.0)
    with np.errstate(invalid="ignore"):
        change = np.where(value == reference, 0.0, np.abs(value - reference))
    return float(change.max() / scale) if scale > 0 else 0.0


def single(f, x, y, **options) -> Single | Exception:
    """One ``nlsq.curve_fit``, with its response to rounding-level data perturbations;
    the exception it raises, if any, is returned."""
    reference = _single_fit(f, x, y, **options)
    if not isinstance(reference, Single):
        return reference
    y = np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(12345)
    popt_spread = pcov_spread = 0.0
    at_tie = False
    for _ in range(PERTURBATIONS):
        moved = _single_fit(f, x, y * (1 + EPS * rng.choice([-1.0, 1.0], y.shape)), **options)
        if not isinstance(moved, Single):
            at_tie = True
            continue
        popt_spread = max(popt_spread, _relative_move(moved.popt, reference.popt))
        pcov_spread = max(pcov_spread, _relative_move(moved.pcov, reference.pcov))
        at_tie |= (moved.status, moved.nfev) != (reference.status, reference.nfev)
    return replace(reference, popt_spread=popt_spread, pcov_spread=pcov_spread, at_tie=at_tie)


def assert_fit_matches(
    result: BatchResult, index: int, reference: Single, rtol: float = RTOL
) -> None:
    """Fit ``index`` of ``result`` against its single fit (see the module docstring)."""
    popt, pcov = reference.popt, reference.pcov
    popt_rtol = max(rtol, SENSITIVITY_FACTOR * reference.popt_spread)
    pcov_rtol = max(rtol, SENSITIVITY_FACTOR * reference.pcov_spread)
    np.testing.assert_allclose(
        result.popt[index], popt, rtol=popt_rtol, atol=popt_rtol * np.abs(popt).max()
    )
    np.testing.assert_allclose(
        result.pcov[index], pcov, rtol=pcov_rtol, atol=pcov_rtol * np.abs(pcov).max()
    )
    if not reference.at_tie:
        assert result.status[index] == reference.status
        assert result.nfev[index] == reference.nfev
    assert result.success[index]
    assert result.covariance_warning[index] == reference.covariance_warning


def per_fit(value, index: int):
    """Row ``index`` of a per-fit option, or the option itself when shared."""
    return value[index] if isinstance(value, np.ndarray) and value.ndim >= 2 else value


# --- batch == loop of single fits, option by option ------------------------------------

_x, _y = decay_data()
_rng = np.random.default_rng(7)
SIGMA_PER_FIT = 0.02 + 0.03 * _rng.random((N_FITS, M))
SIGMA_SHARED = 0.02 + 0.03 * _rng.random(M)
_A = _rng.standard_normal((N_FITS, M, M))
COVARIANCE_PER_FIT = 0.0005 * (_A @ _A.transpose(0, 2, 1)) / M + np.eye(M) * 0.03**2
P0_PER_FIT = _truth(N_FITS, 3) * 0.7
BOUNDS_PER_FIT = (
    np.column_stack([np.zeros(N_FITS), np.zeros(N_FITS), np.full(N_FITS, -1.0)]),
    np.column_stack([np.full(N_FITS, 5.0), np.linspace(0.9, 2.0, N_FITS), np.full(N_FITS, 1.0)]),
)

#: name -> (options for both, per-fit arrays among them are indexed per fit)
OPTIONS = {
    "defaults": {},
    "p0-per-fit": {"p0": P0_PER_FIT},
    "method-trf": {"method": "trf"},
    "sigma-per-fit": {"sigma": SIGMA_PER_FIT},
    "sigma-per-fit-absolute": {"sigma": SIGMA_PER_FIT, "absolute_sigma": True},
    "sigma-shared": {"sigma": SIGMA_SHARED},
    "sigma-scalar-absolute": {"sigma": 0.03, "absolute_sigma": True},
    "covariance-per-fit": {"sigma": COVARIANCE_PER_FIT},
    "covariance-shared-absolute": {"sigma": COVARIANCE_PER_FIT[0], "absolute_sigma": True},
    "loss-soft_l1": {"loss": "soft_l1", "f_scale": 0.05},
    "loss-huber": {"loss": "huber", "f_scale": 0.05},
    "x_scale-jac": {"x_scale": "jac"},
    "x_scale-array": {"x_scale": [2.0, 0.5, 1.0]},
    "tolerances": {"ftol": 1e-12, "xtol": 1e-6, "gtol": 1e-10},
    "jacobian_mode-rev": {"jacobian_mode": "rev"},
    "jac-callable": {"jac": decay_jac},
    "jac-2-point": {"jac": "2-point"},
    "bounds-shared": {"p0": [1.0, 1.0, 0.4], "bounds": ([0.0, 0.0, 0.0], [5.0, 1.2, 1.0])},
    "bounds-per-fit": {"p0": [0.5, 0.5, 0.0], "bounds": BOUNDS_PER_FIT},
    "bounds-per-fit-p0-none": {"bounds": BOUNDS_PER_FIT},
    "bounds-loss-x_scale": {
        "p0": [1.0, 1.0, 0.4],
        "bounds": ([0.0, 0.0, 0.0], [5.0, 1.2, 1.0]),
        "loss": "cauchy",
        "f_scale": 0.1,
        "x_scale": "jac",
    },
}


def _single_options(options: dict, index: int) -> dict:
    out = {}
    for name, value in options.items():
        if name == "bounds" and isinstance(value[0], np.ndarray) and value[0].ndim == 2:
            out[name] = (value[0][index], value[1][index])
        elif name == "p0" and isinstance(value, np.ndarray) and value.ndim == 2:
            out[name] = value[index]
        elif name == "sigma" and isinstance(value, np.ndarray) and value.shape[0] == N_FITS:
            out[name] = value[index]
        else:
            out[name] = value
    if "bounds" not in options:
        out.setdefault("p0", P0)
    return out


@pytest.mark.parametrize("name", list(OPTIONS))
def test_batch_equals_loop_of_single_fits(name: str) -> None:
    options = OPTIONS[name]
    x, y = _x, _y.copy()
    if name.startswith("loss"):
        y[:, ::9] += 0.8  # outliers
    batch_options = dict(options)
    if "bounds" not in options:
        batch_options.setdefault("p0", P0)
    result = curve_fit_batch(decay, x, y, **batch_options)
    assert isinstance(result, BatchResult) and len(result) == N_FITS
    for i in range(N_FITS):
        reference = single(decay, x, y[i], **_single_options(options, i))
        assert isinstance(reference, Single), reference
        assert_fit_matches(result, i, reference)


@pytest.mark.parametrize("layout", ["per-fit-2d", "list", "two-predictors", "two-per-fit"])
def test_xdata_layouts(layout: str) -> None:
    if layout.startswith("two"):
        rng = np.random.default_rng(11)
        x = np.vstack([np.linspace(-1, 1, M), np.linspace(0, 3, M) ** 1.5])
        if layout == "two-per-fit":
            x = x + 0.01 * rng.standard_normal((N_FITS, 2, M))
        xs = np.broadcast_to(x, (N_FITS, 2, M))
        y = 0.7 * xs[:, 0] + 2.0 * np.exp(-0.8 * xs[:, 1]) + 0.02 * rng.standard_normal((N_FITS, M))
        model = two_predictors
    else:
        x, y = decay_data(per_fit_x=True, seed=5)
        model = decay
    batch_x = list(x) if layout == "list" else x
    result = curve_fit_batch(model, batch_x, y, p0=P0)
    for i in range(N_FITS):
        xi = x[i] if np.ndim(x) == 3 or layout in ("per-fit-2d", "list") else x
        assert_fit_matches(result, i, single(model, xi, y[i], p0=P0))


@pytest.fixture(params=["lapack", "small_linalg"])
def factorisation(request, monkeypatch) -> str:
    """Run a test with the batch's LAPACK factorisations and again with
    :mod:`nlsq.small_linalg`'s (which large batches use)."""
    if request.param == "small_linalg":
        monkeypatch.setattr(prepare_batch_module, "small_linalg_min_fits", lambda: 1)
    return request.param


def test_batch_matches_scipy(factorisation) -> None:
    x, y = _x, _y
    sigma = SIGMA_PER_FIT
    bounds = ([0.0, 0.0, 0.0], [5.0, 1.2, 1.0])
    for options in ({}, {"sigma": sigma}, {"bounds": bounds, "p0": [1.0, 1.0, 0.4]}):
        result = curve_fit_batch(decay, x, y, **{"p0": P0, **options})
        for i in range(N_FITS):
            scipy_options = {"p0": P0, **options}
            if "sigma" in options:
                scipy_options["sigma"] = sigma[i]
            popt, pcov, info, _, ier = so.curve_fit(
                np_decay,
                x,
                y[i],
                jac=np_decay_jac,
                method="trf",
                full_output=True,
                **scipy_options,
            )
            np.testing.assert_allclose(result.popt[i], popt, rtol=SCIPY_POPT_RTOL)
            np.testing.assert_allclose(result.pcov[i], pcov, rtol=SCIPY_PCOV_RTOL)
            if (result.nfev[i], result.status[i]) == (info["nfev"], ier):
                continue
            # A stopping test at a rounding tie (seen: status 4 against 3, same count, with
            # another LAPACK kernel): both stops must be legitimate.
            bounds = options.get("bounds", (-np.inf, np.inf))
            w = 1 / np.asarray(scipy_options.get("sigma", 1.0))
            assert_same_or_legitimate_status(
                int(result.status[i]),
                ier,
                _decay_gradient_test(result.popt[i], x, y[i], w, bounds),
                _decay_gradient_test(popt, x, y[i], w, bounds),
                1e-8,
                f"fit {i} {options}",
            )


def test_batch_of_sinusoids_equals_single_fits(factorisation) -> None:
    """A model with sines, whose forward Jacobian loops over columns on a CPU: that loop
    runs vmapped in the batch program."""

    def sinusoid(x, a, w, phi, c):
        return a * jnp.sin(w * x + phi) + c

    rng = np.random.default_rng(11)
    x = np.linspace(0.0, 6.0, M)
    y = 1.5 * np.sin(2.0 * x + 0.3) + 0.5 + 0.05 * rng.standard_normal((N_FITS, M))
    p0 = [1.2, 1.9, 0.2, 0.4]
    result = curve_fit_batch(sinusoid, x, y, p0=p0)
    for i in range(N_FITS):
        assert_fit_matches(result, i, single(sinusoid, x, y[i], p0=p0))


def _decay_gradient_test(p, x, y, w, bounds) -> float:
    """scipy trf's gradient-test value for the weighted decay fit at ``p``."""
    lb, ub = (np.broadcast_to(np.asarray(b, float), (3,)) for b in bounds)
    J, f = np_decay_jac(x, *p) * np.reshape(w, (-1, 1)), (np_decay(x, *p) - y) * w
    return gradient_test_value("trf", p, J, f, lb, ub)


# --- one bad fit never affects the others ------------------------------------------------


def _assert_others_unchanged(result: BatchResult, clean: BatchResult, bad: set[int]) -> None:
    good = [i for i in range(len(clean)) if i not in bad]
    np.testing.assert_array_equal(result.popt[good], clean.popt[good])
    np.testing.assert_array_equal(result.pcov[good], clean.pcov[good])
    np.testing.assert_array_equal(result.nfev[good], clean.nfev[good])
    np.testing.assert_array_equal(result.status[good], clean.status[good])


def test_nan_data_give_invalid_input_and_leave_others_alone() -> None:
    x, y = decay_data(seed=1)
    clean = curve_fit_batch(decay, x, y, p0=P0)
    bad_y = y.copy()
    bad_y[2] = np.nan
    bad_y[4, 7] = np.inf
    result = curve_fit_batch(decay, x, bad_y, p0=P0)
    _assert_others_unchanged(result, clean, {2, 4})
    for i in (2, 4):
        error = single(decay, x, bad_y[i], p0=P0)
        assert isinstance(error, ValueError)
        assert result.status[i] == INVALID_INPUT and not result.success[i]
        assert result.errors[i] == str(error) == result.message(i)
        assert np.isnan(result.popt[i]).all() and np.isnan(result.pcov[i]).all()
        assert result.nfev[i] == 0
    assert set(result.errors) == {2, 4}
    assert result.n_converged == N_FITS - 2


def test_residuals_not_finite_at_p0() -> None:
    x, y = decay_data(seed=2)
    clean = curve_fit_batch(decay, x, y, p0=P0)
    bad_y = y.copy()
    bad_y[1] = np.nan
    result = curve_fit_batch(decay, x, bad_y, p0=P0, check_finite=False)
    _assert_others_unchanged(result, clean, {1})
    error = single(decay, x, bad_y[1], p0=P0, check_finite=False)
    assert isinstance(error, ValueError) and str(error) == result.message(1)
    assert result.status[1] == NOT_FINITE_AT_P0 and not result.success[1]
    assert np.isnan(result.popt[1]).all() and np.isnan(result.pcov[1]).all()

    # The same status from a p0 where the model overflows, per fit.
    p0 = np.tile(P0, (N_FITS, 1))
    p0[3] = [1.0, -400.0, 0.0]
    result = curve_fit_batch(decay, x, y, p0=p0)
    assert result.status[3] == NOT_FINITE_AT_P0
    assert str(single(decay, x, y[3], p0=p0[3])) == result.message(3)
    assert result.success[[0, 1, 2, 4, 5]].all()


def test_fit_out_of_evaluations_keeps_its_last_iterate() -> None:
    x, y = decay_data(seed=3)
    p0 = np.tile(P0, (N_FITS, 1))
    p0[2] = [50.0, 9.0, -5.0]  # far away: needs more evaluations than the budget
    result = curve_fit_batch(decay, x, y, p0=p0, max_nfev=8)
    assert result.status[2] == 0 and not result.success[2]
    assert result.message(2) == "The maximum number of function evaluations is exceeded."
    assert isinstance(single(decay, x, y[2], p0=p0[2], max_nfev=8), RuntimeError)
    # The iterate scipy's RuntimeError hides: least_squares on the same residuals.
    ls = nlsq.least_squares(lambda p: decay(x, *p) - y[2], p0[2], max_nfev=8)
    np.testing.assert_allclose(result.popt[2], ls.x, rtol=RTOL)
    assert result.nfev[2] == ls.nfev
    assert np.isfinite(result.pcov[2]).all()
    for i in (0, 1, 3, 4, 5):
        assert_fit_matches(result, i, single(decay, x, y[i], p0=p0[i], max_nfev=8))


def test_per_fit_input_errors_carry_curve_fits_message() -> None:
    x, y = decay_data(seed=4)
    lb = np.tile([0.0, 0.0, -1.0], (N_FITS, 1))
    ub = np.tile([5.0, 3.0, 1.0], (N_FITS, 1))
    p0 = np.tile([1.0, 1.0, 0.0], (N_FITS, 1))
    p0[1] = [9.0, 1.0, 0.0]  # outside its box
    lb[3, 2], ub[3, 2] = 1.0, 1.0  # an empty box
    result = curve_fit_batch(decay, x, y, p0=p0, bounds=(lb, ub))
    for i in (1, 3):
        error = single(decay, x, y[i], p0=p0[i], bounds=(lb[i], ub[i]))
        assert isinstance(error, ValueError)
        assert result.status[i] == INVALID_INPUT and result.errors[i] == str(error)
    for i in (0, 2, 4, 5):
        assert_fit_matches(result, i, single(decay, x, y[i], p0=p0[i], bounds=(lb[i], ub[i])))


def test_too_few_points_and_covariance_not_estimated(factorisation) -> None:
    x, y = decay_data(seed=5)
    lengths = [M, 2, 3, M]
    xs = [x[:m] for m in lengths]
    ys = [y[i][:m] for i, m in enumerate(lengths)]
    result = curve_fit_batch(decay, xs, ys, p0=P0)
    error = single(decay, xs[1], ys[1], p0=P0)
    assert isinstance(error, TypeError)
    assert result.status[1] == INVALID_INPUT and result.errors[1] == str(error)
    # Three points, three parameters: curve_fit warns, the batch flags.
    reference = single(decay, xs[2], ys[2], p0=P0)
    assert reference.covariance_warning
    assert_fit_matches(result, 2, reference)
    assert np.isinf(result.pcov[2]).all()
    assert result.covariance_warning.tolist() == [False, False, True, False]
    assert "covariance could not be estimated for 1 fit" in result.summary()


def test_empty_fit_in_a_list() -> None:
    x, y = decay_data(seed=6)
    result = curve_fit_batch(decay, [x, x[:0], x], [y[0], y[1][:0], y[2]], p0=P0)
    assert result.status.tolist()[1] == INVALID_INPUT
    assert result.errors == {1: "`ydata` must not be empty!"}
    assert result.n_points.tolist() == [M, 0, M]


def test_all_fits_invalid_returns_without_running() -> None:
    x, y = decay_data(seed=6)
    result = curve_fit_batch(decay, x, np.full_like(y, np.nan), p0=P0)
    assert (result.status == INVALID_INPUT).all() and result.chunks == 0
    assert np.isnan(result.popt).all()


# --- ragged data ------------------------------------------------------------------------


def test_list_of_arrays_of_different_lengths() -> None:
    rng = np.random.default_rng(8)
    lengths = [20, 32, 7, 45, 31, 12]
    truth = _truth(len(lengths), 8)
    xs = [np.sort(rng.uniform(0, 4, m)) for m in lengths]
    ys = [
        t[0] * np.exp(-t[1] * x) + t[2] + 0.03 * rng.standard_normal(x.size)
        for t, x in zip(truth, xs, strict=True)
    ]
    sigmas = [0.02 + 0.02 * rng.random(x.size) for x in xs]
    result = curve_fit_batch(decay, xs, ys, p0=P0, sigma=sigmas)
    assert result.n_points.tolist() == lengths
    for i, (x, y, s) in enumerate(zip(xs, ys, sigmas, strict=True)):
        assert_fit_matches(result, i, single(decay, x, y, p0=P0, sigma=s))


def test_mask_with_holes_equals_fits_on_the_kept_points() -> None:
    x, y = decay_data(seed=9)
    rng = np.random.default_rng(9)
    mask = rng.random(y.shape) > 0.3
    mask[0] = True  # one complete fit
    y = np.where(mask, y, 1e30)  # masked values must not matter
    result = curve_fit_batch(decay, x, y, p0=P0, sigma=SIGMA_PER_FIT, mask=mask)
    assert result.n_points.tolist() == mask.sum(axis=1).tolist()
    for i in range(N_FITS):
        keep = mask[i]
        reference = single(decay, x[keep], y[i][keep], p0=P0, sigma=SIGMA_PER_FIT[i][keep])
        assert_fit_matches(result, i, reference)


def test_mask_with_covariance() -> None:
    x, y = decay_data(seed=10)
    mask = np.ones(y.shape, bool)
    mask[1, 5:9] = False
    mask[4, -6:] = False
    result = curve_fit_batch(decay, x, y, p0=P0, sigma=COVARIANCE_PER_FIT, mask=mask)
    for i in range(N_FITS):
        keep = mask[i]
        cov = COVARIANCE_PER_FIT[i][np.ix_(keep, keep)]
        assert_fit_matches(result, i, single(decay, x[keep], y[i][keep], p0=P0, sigma=cov))


def test_nan_policy_omit_equals_curve_fit() -> None:
    x, y = decay_data(seed=12, per_fit_x=True)
    y[0, [3, 17]] = np.nan
    x[2, 9] = np.nan
    result = curve_fit_batch(decay, x, y, p0=P0, nan_policy="omit")
    for i in range(N_FITS):
        assert_fit_matches(result, i, single(decay, x[i], y[i], p0=P0, nan_policy="omit"))
    with pytest.raises(ValueError, match="The input contains nan values"):
        curve_fit_batch(decay, x, y, p0=P0, nan_policy="raise")


def test_ragged_data_need_a_pointwise_model() -> None:
    x, y = decay_data(seed=13)
    mask = np.ones(y.shape, bool)
    mask[0, -3:] = False
    with pytest.raises(ValueError, match="depends only on that point"):
        curve_fit_batch(centered, x, y, p0=P0, mask=mask)
    # Equal lengths need no padding: any model works.
    result = curve_fit_batch(centered, x, y, p0=P0)
    assert_fit_matches(result, 0, single(centered, x, y[0], p0=P0))


# --- per-fit bounds ---------------------------------------------------------------------


def test_per_fit_bounds_active_at_the_solution() -> None:
    x, y = decay_data(seed=14)
    lb, ub = BOUNDS_PER_FIT
    result = curve_fit_batch(decay, x, y, p0=[0.5, 0.5, 0.0], bounds=(lb, ub))
    assert (result.active_mask != 0).any()
    for i in range(N_FITS):
        reference = nlsq.CurveFit(decay).fit(x, y[i], p0=[0.5, 0.5, 0.0], bounds=(lb[i], ub[i]))
        np.testing.assert_array_equal(result.active_mask[i], reference.active_mask)
        assert_fit_matches(
            result, i, single(decay, x, y[i], p0=[0.5, 0.5, 0.0], bounds=(lb[i], ub[i]))
        )


def test_unbounded_fits_in_a_bounded_batch() -> None:
    x, y = decay_data(seed=15)
    lb = np.full((N_FITS, 3), -np.inf)
    ub = np.full((N_FITS, 3), np.inf)
    lb[0], ub[0] = [0.0, 0.0, -1.0], [5.0, 1.0, 1.0]
    result = curve_fit_batch(decay, x, y, p0=[0.5, 0.5, 0.0], bounds=(lb, ub))
    for i in range(N_FITS):
        reference = single(decay, x, y[i], p0=[0.5, 0.5, 0.0], bounds=(lb[i], ub[i]))
        assert_fit_matches(result, i, reference)


def test_scipy_bounds_object() -> None:
    x, y = decay_data(seed=16)
    bounds = so.Bounds([0.0, 0.0, 0.0], [5.0, 1.2, 1.0])
    result = curve_fit_batch(decay, x, y, p0=[1.0, 1.0, 0.4], bounds=bounds)
    for i in range(N_FITS):
        assert_fit_matches(result, i, single(decay, x, y[i], p0=[1.0, 1.0, 0.4], bounds=bounds))


# --- chunks and progress ----------------------------------------------------------------


def test_chunked_equals_unchunked() -> None:
    n_fits = 29
    x, y = decay_data(n_fits=n_fits, seed=17)
    y[5] = np.nan
    p0 = _truth(n_fits, 18) * 0.8
    whole = curve_fit_batch(decay, x, y, p0=p0, sigma=0.03)
    assert whole.chunks == 1
    for options in (
        {"fits_per_chunk": 4},
        {"memory_budget": 10 * batch_module.bytes_per_fit(M, 3, 8, M)},
    ):
        chunked = curve_fit_batch(decay, x, y, p0=p0, sigma=0.03, **options)
        assert chunked.chunks > 1
        np.testing.assert_array_equal(chunked.status, whole.status)
        np.testing.assert_array_equal(chunked.nfev, whole.nfev)
        ran = np.isfinite(whole.popt).all(axis=1)
        np.testing.assert_allclose(chunked.popt[ran], whole.popt[ran], rtol=RTOL)
        np.testing.assert_allclose(chunked.pcov[ran], whole.pcov[ran], rtol=RTOL, atol=1e-300)
        assert chunked.errors == whole.errors


def test_chunk_length_follows_the_memory_budget() -> None:
    per_fit = batch_module.bytes_per_fit(1000, 5, 8, 2000)
    assert batch_module.chunk_length(10**6, per_fit, None, 100 * per_fit) == 100
    assert batch_module.chunk_length(10**6, per_fit, None, None) == min(
        batch_module.MAX_FITS_PER_CALL, config.get("large.memory_budget") // per_fit
    )
    assert batch_module.chunk_length(10**6, per_fit, 7, None) == 7
    assert batch_module.chunk_length(3, per_fit, None, None) == 4
    assert batch_module.chunk_length(100, per_fit, None, None) == 104
    assert batch_module.chunk_length(1000, per_fit, None, 1 << 40) == 1024
    with pytest.raises(ValueError, match="fits_per_chunk"):
        batch_module.chunk_length(10, per_fit, 0, None)


def test_progress_callback_logger_and_tqdm(caplog, monkeypatch) -> None:
    n_fits = 10
    x, y = decay_data(n_fits=n_fits, seed=19)
    calls = []
    with caplog.at_level(logging.INFO, logger="nlsq"):
        result = curve_fit_batch(
            decay,
            x,
            y,
            p0=P0,
            fits_per_chunk=4,
            progress=lambda done, total: calls.append((done, total)),
        )
    assert calls == [(4, 10), (8, 10), (10, 10)]
    assert result.chunks == 3
    messages = [r.getMessage() for r in caplog.records if r.name == "nlsq"]
    assert any("10/10 fits done (chunk 3/3" in message for message in messages)

    updates = []

    class FakeBar:
        def __init__(self, total, **_):
            updates.append(("total", total))

        def update(self, count):
            updates.append(("update", count))

        def close(self):
            updates.append(("close", None))

    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = FakeBar
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    curve_fit_batch(decay, x, y, p0=P0, fits_per_chunk=4, progress=True)
    assert updates == [("total", 10), ("update", 4), ("update", 4), ("update", 2), ("close", None)]


# --- the result and the API -------------------------------------------------------------


def test_batch_result_fields() -> None:
    x, y = decay_data(seed=20)
    y[3] = np.nan
    result = curve_fit_batch(decay, x, y, p0=P0)
    popt, pcov = result
    assert popt.shape == (N_FITS, 3) and pcov.shape == (N_FITS, 3, 3)
    assert popt.dtype == np.float64 and result.status.dtype == np.int64
    np.testing.assert_array_equal(result.perr[0], np.sqrt(np.diag(pcov[0])))
    for name in ("status", "success", "nfev", "njev", "cost", "optimality", "n_points"):
        assert getattr(result, name).shape == (N_FITS,)
    assert result.active_mask.shape == (N_FITS, 3)
    assert result.n_converged == N_FITS - 1
    assert result.status_counts()[INVALID_INPUT] == 1
    assert result.message(0) == result.messages[int(result.status[0])]
    summary = result.summary()
    assert summary.startswith(f"{N_FITS - 1} of {N_FITS} fits converged")
    assert "status -4" in summary
    assert "5 converged" in repr(result)
    reference = CurveFit(decay, p0=P0).fit(x, y[0])
    assert result.cost[0] == pytest.approx(reference.cost, rel=RTOL)
    assert result.njev[0] == reference.njev


def test_curve_fit_object_fit_batch() -> None:
    x, y = decay_data(seed=21)
    fitter = CurveFit(decay, p0=P0, loss="soft_l1", f_scale=0.1)
    result = fitter.fit_batch(x, y)
    direct = curve_fit_batch(decay, x, y, p0=P0, loss="soft_l1", f_scale=0.1)
    np.testing.assert_array_equal(result.popt, direct.popt)
    linear = fitter.fit_batch(x, y, loss="linear", bounds=([0, 0, -1], [10, 10, 1]))
    assert_fit_matches(linear, 0, single(decay, x, y[0], p0=P0, bounds=([0, 0, -1], [10, 10, 1])))
    assert fitter.options == {"p0": P0, "loss": "soft_l1", "f_scale": 0.1}


def test_second_call_compiles_nothing() -> None:
    x, y = decay_data(seed=22)
    curve_fit_batch(decay, x, y, p0=P0)
    _, y2 = decay_data(seed=23)
    result = curve_fit_batch(decay, x, y2, p0=np.tile(P0, (N_FITS, 1)) * 1.1)
    assert result.cache_stats["compiles"] == 0
    assert result.cache_stats["hit"]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"verbose": 1}, ValueError, "verbose"),
        ({"chunk_size": 100}, ValueError, "fits_per_chunk"),
        ({"callback": print}, ValueError, "callback"),
        ({"full_output": True}, TypeError, "full_output"),
        ({"nan_policy": "propagate"}, ValueError, "propagate"),
        ({"unknown": 1}, TypeError, "unexpected keyword argument 'unknown'"),
        ({"loss": "nope"}, ValueError, "`loss` must be one of"),
        ({"p0": np.ones((2, 3))}, ValueError, "`p0` must have shape"),
        ({"bounds": ([0, 0], [1, 1])}, ValueError, "Inconsistent shapes"),
        ({"sigma": np.ones(5)}, ValueError, "`sigma` has incorrect shape"),
        ({"mask": np.ones((2, 2), bool)}, ValueError, "`mask` must have the shape"),
    ],
)
def test_whole_call_errors(options: dict, error: type, match: str) -> None:
    x, y = decay_data(seed=24)
    with pytest.raises(error, match=match):
        curve_fit_batch(decay, x, y, **{"p0": P0, **options})


def test_data_shape_errors() -> None:
    x, y = decay_data(seed=25)
    with pytest.raises(ValueError, match="must be 2-D"):
        curve_fit_batch(decay, x, y[0], p0=P0)
    with pytest.raises(ValueError, match="data length"):
        curve_fit_batch(decay, x[:-1], y, p0=P0)
    with pytest.raises(ValueError, match="at least one fit"):
        curve_fit_batch(decay, x, y[:0], p0=P0)


def test_numpy_models_are_refused() -> None:
    x, y = decay_data(seed=26)
    with pytest.raises(TypeError, match="jax.numpy"):
        curve_fit_batch(np_decay, x, y, p0=P0)


def test_exported_from_nlsq() -> None:
    assert nlsq.curve_fit_batch is curve_fit_batch
    assert nlsq.BatchResult is BatchResult
    assert {"curve_fit_batch", "BatchResult"} <= set(nlsq.__all__)


def test_tolerance_rule_rejects_a_wrong_fit() -> None:
    """The sensitivity-scaled tolerance still catches a fit off by 1e-6."""
    x, y = _x, _y.copy()
    y[:, ::9] += 0.8
    options = {"p0": P0, "loss": "huber", "f_scale": 0.05}
    result = curve_fit_batch(decay, x, y, **options)
    reference = single(decay, x, y[0], **options)
    assert reference.popt_spread < 1e-7  # sensitive to rounding, but not that much
    assert_fit_matches(result, 0, reference)
    wrong = types.SimpleNamespace(
        popt=result.popt * (1 + 1e-6),
        pcov=result.pcov,
        status=result.status,
        nfev=result.nfev,
        success=result.success,
        covariance_warning=result.covariance_warning,
    )
    with pytest.raises(AssertionError):
        assert_fit_matches(wrong, 0, reference)


def test_large_trf_batches_with_few_parameters_factorise_without_lapack(monkeypatch) -> None:
    from nlsq.prepare.batch import SMALL_LINALG_MAX_PARAMETERS, batch_solver_spec, prepare_batch

    x, y = decay_data(n_fits=3, seed=21)

    def spec(method, f=decay, p0=P0[:3]):
        batch = prepare_batch(
            f, x, y, p0, None, (-np.inf, np.inf), method, None, None, True, None, {}
        )
        return batch_solver_spec(batch)

    assert not spec("trf").small_linalg
    monkeypatch.setattr(prepare_batch_module, "small_linalg_min_fits", lambda: 3)
    assert spec(None).small_linalg and spec("trf").small_linalg
    assert not spec("dogbox").small_linalg and not spec("lm").small_linalg

    def many(x, *p):
        return sum(c * x**k for k, c in enumerate(p))

    count = SMALL_LINALG_MAX_PARAMETERS + 1
    assert not spec("trf", many, np.ones(count)).small_linalg
    assert spec("trf", many, np.ones(count - 1)).small_linalg


def test_small_linalg_from_fewer_fits_when_programs_are_kept_on_disk(monkeypatch) -> None:
    monkeypatch.setattr(prepare_batch_module, "ensure_disk_cache", lambda: None)
    assert prepare_batch_module.small_linalg_min_fits() == 50_000
    monkeypatch.setattr(prepare_batch_module, "ensure_disk_cache", lambda: "/a/cache")
    assert prepare_batch_module.small_linalg_min_fits() == 2_048


@cpu_only
def test_chunk_workers_only_for_programs_without_lapack(monkeypatch) -> None:
    monkeypatch.setattr(batched_module, "host_cores", lambda: 2)
    assert batched_module.chunk_workers(small_linalg=False, chunks=10) == 1
    assert batched_module.chunk_workers(small_linalg=True, chunks=1) == 1
    assert batched_module.chunk_workers(small_linalg=True, chunks=10) == 2
    monkeypatch.setattr(batched_module, "host_cores", lambda: 8)
    assert batched_module.chunk_workers(small_linalg=True, chunks=3) == 3


@pytest.fixture
def concurrent_runs(monkeypatch) -> list[int]:
    """The worker counts of the batches that ran their chunks on several threads."""
    runs: list[int] = []
    run_concurrently = batched_module._run_concurrently

    def spy(*args, **kwargs):
        runs.append(args[-1])
        return run_concurrently(*args, **kwargs)

    monkeypatch.setattr(batched_module, "_run_concurrently", spy)
    return runs


@cpu_only
def test_concurrent_chunks_equal_one_thread_and_report_in_order(
    monkeypatch, concurrent_runs
) -> None:
    """Chunks run on two threads give the fits of one thread exactly (the same program
    on the same inputs), and progress comes in order, in the calling thread."""
    import threading

    monkeypatch.setattr(prepare_batch_module, "small_linalg_min_fits", lambda: 1)
    monkeypatch.setattr(batched_module, "host_cores", lambda: 2)
    n_fits = 37
    x, y = decay_data(n_fits=n_fits, seed=29)
    y[11] = np.nan
    p0 = _truth(n_fits, 30) * 0.8
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append((done, threading.current_thread() is threading.main_thread()))

    both = curve_fit_batch(decay, x, y, p0=p0, fits_per_chunk=8, progress=progress)
    assert concurrent_runs == [2]
    # The fit with NaN data does not run: 36 fits in five chunks.
    assert calls == [(done, True) for done in (8, 16, 24, 32, 36)]
    monkeypatch.setattr(batched_module, "host_cores", lambda: 1)
    one = curve_fit_batch(decay, x, y, p0=p0, fits_per_chunk=8)
    assert concurrent_runs == [2]
    for name in ("popt", "pcov", "status", "nfev", "cost"):
        np.testing.assert_array_equal(getattr(both, name), getattr(one, name))


@cpu_only
@pytest.mark.timeout(120)
def test_a_model_that_calls_lapack_runs_its_chunks_on_one_thread(
    monkeypatch, concurrent_runs
) -> None:
    """nlsq's small-matrix factorisations call no custom kernel, so their chunks may run
    on two threads; a model that calls LAPACK itself keeps the batch on one thread
    (two threads running vmapped LAPACK calls at once deadlock XLA:CPU)."""
    monkeypatch.setattr(prepare_batch_module, "small_linalg_min_fits", lambda: 1)
    monkeypatch.setattr(batched_module, "host_cores", lambda: 2)

    def solved_decay(x, a, k, c):
        # A 1 x 1 linear solve: LAPACK's LU on XLA:CPU, the same value as the division.
        rate = jnp.linalg.solve(jnp.ones((1, 1)), jnp.reshape(k, (1,)))[0]
        return a * jnp.exp(-rate * x) + c

    n_fits = 24
    x, y = decay_data(n_fits=n_fits, seed=31)
    p0 = _truth(n_fits, 32) * 0.8
    plain = curve_fit_batch(decay, x, y, p0=p0, fits_per_chunk=8)
    assert concurrent_runs == [2]
    solved = curve_fit_batch(solved_decay, x, y, p0=p0, fits_per_chunk=8)
    assert concurrent_runs == [2]
    np.testing.assert_allclose(solved.popt, plain.popt, rtol=1e-10)


def _memory_mapped_batch(path, n_fits: int, m: int = 512):
    """A decay batch written to a memory map, with its truth and starting point."""
    x = np.linspace(0.0, 4.0, m)
    truth = _truth(n_fits, 23)
    y = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n_fits, m))
    y[:] = truth[:, :1] * np.exp(-truth[:, 1:2] * x) + truth[:, 2:]
    y.flush()
    del y
    return x, np.load(path, mmap_mode="r"), truth, truth * 0.9


def _streamed_batch_peak(path, n_fits: int) -> int:
    """The peak host memory of a memory-mapped batch's second run (the first compiles),
    after checking its results and that progress came after every chunk."""
    import tracemalloc

    x, y, truth, p0 = _memory_mapped_batch(path, n_fits)
    curve_fit_batch(decay, x, y, p0=p0, fits_per_chunk=20)
    done: list[int] = []
    tracemalloc.start()
    try:
        result = curve_fit_batch(
            decay, x, y, p0=p0, fits_per_chunk=20, progress=lambda d, t: done.append(d)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done == list(range(20, n_fits + 1, 20))
    assert result.n_converged == n_fits
    np.testing.assert_allclose(result.popt, truth, rtol=1e-6)
    return peak


def test_memory_mapped_batch_streams_without_copying_the_data(tmp_path) -> None:
    """A batch read from a memory map runs chunk by chunk: the host never holds a copy
    of the data, nor per-point arrays of its size, and progress comes after every chunk.

    Doubling the batch grows the peak by its results, a small fraction of the added
    data; what does not grow with the data (the program's compilation, the chunks in
    flight, one per core) is the same for both sizes and cancels.
    """
    small, large = (_streamed_batch_peak(tmp_path / f"{n}.npy", n) for n in (2400, 4800))
    added_data = 2400 * 512 * 8
    assert large - small < 0.25 * added_data, (small, large, added_data)
