"""nlsq.fit: a curve fit inside JAX programs, differentiated implicitly.

References: finite differences of the whole fit (re-fitting at perturbed inputs with
tight tolerances), the exact derivative of linear least squares, and curve_fit /
curve_fit_batch run in the same process.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlsq
from nlsq.batch_result import INVALID_INPUT, NOT_FINITE_AT_P0
from nlsq.cache import programs, track_compiles

pytestmark = pytest.mark.usefixtures("x64")

#: A re-fit stops only when its step is at rounding level, far below the differences' error.
TIGHT = {"ftol": None, "xtol": 1e-15, "gtol": None}


def exponential(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def gaussian(x, a, mu, s):
    return a * jnp.exp(-((x - mu) ** 2) / (2 * s**2))


def quadratic(x, a, b, c):
    return a + b * x + c * x**2


@pytest.fixture(scope="module")
def exp_data():
    rng = np.random.default_rng(1)
    x = np.linspace(0.0, 4.0, 30)
    y = exponential(x, 2.0, 0.8, 0.3) + 0.05 * rng.standard_normal(x.size)
    sigma = 0.04 + 0.02 * rng.random(x.size)
    return x, np.asarray(y), sigma


@pytest.fixture(scope="module")
def gauss_data():
    rng = np.random.default_rng(2)
    x = np.linspace(-3.0, 3.0, 40)
    y = gaussian(x, 1.5, 0.2, 0.9) + 0.03 * rng.standard_normal(x.size)
    return x, np.asarray(y)


def central_difference(fn, point, direction, h):
    """Directional derivative of ``fn`` at ``point`` along ``direction``."""
    return (np.asarray(fn(point + h * direction)) - np.asarray(fn(point - h * direction))) / (2 * h)


def check_derivatives(fn, point, h, rtol=1e-5, directions=2):
    """jacfwd and jacrev of ``fn`` along random directions against central differences.

    With the steps used the differences are accurate to about 1e-6 (truncation and the
    re-fits' rounding); a Gauss-Newton-only derivative (without the residuals'
    curvature) is off by about 1e-2 on these problems.
    """
    point = jnp.asarray(point)
    rng = np.random.default_rng(0)
    forward = np.asarray(jax.jacfwd(fn)(point))
    reverse = np.asarray(jax.jacrev(fn)(point))
    np.testing.assert_allclose(forward, reverse, rtol=1e-9, atol=1e-12 * np.abs(forward).max())
    for _ in range(directions):
        direction = rng.standard_normal(point.shape)
        expected = central_difference(fn, point, direction, h)
        floor = 1e-6 * np.abs(expected).max()
        axes = tuple(range(forward.ndim - point.ndim, forward.ndim))
        along = np.tensordot(forward, direction, axes=(axes, tuple(range(point.ndim))))
        np.testing.assert_allclose(along, expected, rtol=rtol, atol=floor)
        _, pushed = jax.jvp(fn, (point,), (jnp.asarray(direction),))
        np.testing.assert_allclose(np.asarray(pushed), expected, rtol=rtol, atol=floor)


# --- values: equal to curve_fit and curve_fit_batch ----------------------------------


def test_values_equal_curve_fit(exp_data):
    x, y, sigma = exp_data
    popt, pcov = nlsq.curve_fit(exponential, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma)
    out = nlsq.fit(exponential, x, y, [1.0, 1.0, 0.0], sigma=sigma)
    np.testing.assert_allclose(out.popt, popt, rtol=1e-12)
    np.testing.assert_allclose(out.pcov, pcov, rtol=1e-10)
    assert bool(out.success) and int(out.status) > 0
    residuals = (exponential(x, *popt) - y) / sigma
    np.testing.assert_allclose(out.cost, 0.5 * np.sum(residuals**2), rtol=1e-12)


def test_shares_the_compiled_program_with_curve_fit(exp_data):
    x, y, _ = exp_data

    def decay(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    nlsq.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0])
    entries, misses = len(programs), programs.misses
    with track_compiles() as first:
        nlsq.fit(decay, x, y, [1.0, 1.0, 0.0])
    # One new entry (the fit's finishing functions); the solver program was a hit.
    assert (len(programs), programs.misses) == (entries + 1, misses + 1)
    # The finish compiles (a few small kernels at most), never the solver again ...
    assert first.compiles <= 3
    new_data = y * 1.01
    with track_compiles() as second:
        nlsq.fit(decay, x, new_data, [1.0, 1.0, 0.0])
    # ... and a second fit of the same shape compiles nothing.
    assert second.compiles == 0


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"loss": "soft_l1", "f_scale": 0.1},
        {"absolute_sigma": True},
        {"method": "dogbox", "bounds": ([0, 0, -1], [5, 5, 1])},
    ],
    ids=["plain", "soft_l1", "absolute_sigma", "dogbox-bounded"],
)
def test_vmap_equals_curve_fit_batch_and_curve_fit(exp_data, options):
    x, _, sigma = exp_data
    rng = np.random.default_rng(3)
    Y = exponential(x, 2.0, 0.8, 0.3) + 0.05 * rng.standard_normal((5, x.size))
    p0 = jnp.array([1.0, 1.0, 0.0])

    def one(y):
        return nlsq.fit(exponential, x, y, p0, sigma=sigma, **options)

    out = jax.jit(jax.vmap(one))(jnp.asarray(Y))
    batch = nlsq.curve_fit_batch(exponential, x, Y, p0=np.asarray(p0), sigma=sigma, **options)
    np.testing.assert_array_equal(out.status, batch.status)
    np.testing.assert_array_equal(out.nfev, batch.nfev)
    np.testing.assert_allclose(out.popt, batch.popt, rtol=1e-10)
    np.testing.assert_allclose(out.pcov, batch.pcov, rtol=1e-8)
    np.testing.assert_allclose(out.cost, batch.cost, rtol=1e-10)
    for i, y in enumerate(Y):
        popt, pcov = nlsq.curve_fit(exponential, x, y, p0=np.asarray(p0), sigma=sigma, **options)
        np.testing.assert_allclose(out.popt[i], popt, rtol=1e-10)
        np.testing.assert_allclose(out.pcov[i], pcov, rtol=1e-8)


def test_jit_equals_eager(gauss_data):
    x, y = gauss_data
    eager = nlsq.fit(gaussian, x, y, [1.0, 0.0, 1.0])
    jitted = jax.jit(lambda y: nlsq.fit(gaussian, x, y, jnp.array([1.0, 0.0, 1.0])))(y)
    for name in ("popt", "pcov", "cost"):
        np.testing.assert_allclose(getattr(jitted, name), getattr(eager, name), rtol=1e-12)
    assert int(jitted.nfev) == int(eager.nfev) and int(jitted.status) == int(eager.status)


# --- derivatives against finite differences of the whole fit ------------------------


def test_exponential_derivatives_in_y_x_and_sigma(exp_data):
    x, y, sigma = exp_data
    p0 = jnp.array([1.0, 1.0, 0.0])
    check_derivatives(lambda y: nlsq.fit(exponential, x, y, p0, sigma=sigma, **TIGHT).popt, y, 1e-4)
    check_derivatives(lambda x: nlsq.fit(exponential, x, y, p0, sigma=sigma, **TIGHT).popt, x, 1e-4)
    check_derivatives(lambda s: nlsq.fit(exponential, x, y, p0, sigma=s, **TIGHT).popt, sigma, 1e-5)


def test_gaussian_derivatives_of_popt_pcov_and_cost(gauss_data):
    x, y = gauss_data
    p0 = jnp.array([1.0, 0.0, 1.0])

    def outputs(y):
        out = nlsq.fit(gaussian, x, y, p0, **TIGHT)
        return jnp.concatenate([out.popt, out.pcov.ravel(), out.cost[None]])

    check_derivatives(outputs, y, 1e-4)


def test_derivative_through_a_closure_and_through_args(gauss_data):
    x, y = gauss_data
    p0 = jnp.array([1.0, 0.0, 1.0])

    def with_closure(background):
        def model(x, a, mu, s):
            return gaussian(x, a, mu, s) + background

        return nlsq.fit(model, x, y, p0, **TIGHT).popt

    def with_args(background):
        def model(x, a, mu, s, background):
            return gaussian(x, a, mu, s) + background

        return nlsq.fit(model, x, y, p0, args=(background,), **TIGHT).popt

    background = 0.05 * np.cos(x)
    # Each concrete closure is a new model (a new program): one direction only.
    check_derivatives(with_closure, background, 1e-3, directions=1)
    check_derivatives(with_args, background, 1e-3)
    np.testing.assert_allclose(
        jax.jacrev(with_closure)(background), jax.jacrev(with_args)(background), rtol=1e-10
    )


def test_bounded_fit_with_an_active_bound(exp_data):
    x, _, _ = exp_data
    rng = np.random.default_rng(4)
    # The offset wants to be negative; the bound holds it at 0.
    y = exponential(x, 2.0, 0.8, -0.2) + 0.02 * rng.standard_normal(x.size)
    p0 = jnp.array([1.0, 1.0, 0.5])

    def fit_at(y, lower=0.0):
        lb = jnp.array([-jnp.inf, -jnp.inf, 0.0]) + jnp.array([0.0, 0.0, 1.0]) * lower
        return nlsq.fit(exponential, x, y, p0, bounds=(lb, jnp.inf), **TIGHT)

    out = fit_at(jnp.asarray(y))
    np.testing.assert_array_equal(out.active_mask, [0, 0, -1])
    assert abs(float(out.popt[2])) < 1e-8
    # The solver leaves the bounded parameter within rounding of its bound, by an
    # amount that varies between re-fits: larger steps than for unbounded fits.
    check_derivatives(lambda y: fit_at(y).popt, y, 1e-3)
    dy = jax.jacrev(lambda y: fit_at(y).popt)(jnp.asarray(y))
    np.testing.assert_array_equal(dy[2], 0.0)
    # Moving the active bound moves the solution: d popt / d lb by differences.
    check_derivatives(lambda lower: fit_at(jnp.asarray(y), lower).popt, 0.01, 1e-3)
    dlb = jax.jacfwd(lambda lower: fit_at(jnp.asarray(y), lower).popt)(0.0)
    assert float(dlb[2]) == pytest.approx(1.0, abs=1e-12)


def test_robust_loss_derivative(exp_data):
    x, y, _ = exp_data
    y = np.array(y)
    y[[5, 17]] += 1.0
    p0 = jnp.array([1.0, 1.0, 0.0])
    check_derivatives(
        lambda y: nlsq.fit(exponential, x, y, p0, loss="soft_l1", f_scale=0.1, **TIGHT).popt,
        y,
        1e-4,
    )


def test_linear_least_squares_derivative_is_exact():
    rng = np.random.default_rng(5)
    x = np.linspace(-1.0, 2.0, 25)
    sigma = 0.5 + rng.random(x.size)
    y = quadratic(x, 0.3, -1.2, 0.7) + 0.1 * rng.standard_normal(x.size)
    A = np.stack([np.ones_like(x), x, x**2], axis=1) / sigma[:, None]
    # popt = (A^T A)^-1 A^T (y / sigma): d popt / dy = (J^T J)^-1 J^T diag(1/sigma).
    expected = np.linalg.solve(A.T @ A, A.T) / sigma[None, :]

    def popt(y):
        return nlsq.fit(quadratic, x, y, jnp.zeros(3), sigma=sigma).popt

    np.testing.assert_allclose(jax.jacrev(popt)(jnp.asarray(y)), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(jax.jacfwd(popt)(jnp.asarray(y)), expected, rtol=1e-9, atol=1e-12)


def test_second_derivative_of_linear_least_squares_is_exact():
    rng = np.random.default_rng(8)
    x = np.linspace(-1.0, 1.0, 12)
    y = quadratic(x, 0.1, 0.5, -0.3) + 0.05 * rng.standard_normal(x.size)
    target = jnp.array([0.2, 0.4, -0.1])
    A = np.stack([np.ones_like(x), x, x**2], axis=1)
    # popt = P y with P = (A^T A)^-1 A^T, so |popt - target|^2 has Hessian 2 P^T P.
    P = np.linalg.solve(A.T @ A, A.T)

    def loss(y):
        return jnp.sum((nlsq.fit(quadratic, x, y, jnp.zeros(3)).popt - target) ** 2)

    np.testing.assert_allclose(jax.hessian(loss)(jnp.asarray(y)), 2 * P.T @ P, atol=1e-10)


def test_covariance_sigma_equals_curve_fit(exp_data):
    x, y, sigma = exp_data
    covariance = np.diag(sigma**2) + 0.2 * np.outer(sigma, sigma) * np.exp(
        -np.abs(np.subtract.outer(x, x))
    )
    popt, pcov = nlsq.curve_fit(exponential, x, y, p0=[1.0, 1.0, 0.0], sigma=covariance)
    out = nlsq.fit(exponential, x, y, [1.0, 1.0, 0.0], sigma=covariance)
    np.testing.assert_allclose(out.popt, popt, rtol=1e-10)
    np.testing.assert_allclose(out.pcov, pcov, rtol=1e-8)
    with pytest.raises(ValueError, match="positive definite"):
        nlsq.fit(exponential, x, y, [1.0, 1.0, 0.0], sigma=-covariance)


def test_derivatives_under_jit_and_vmap(exp_data):
    x, y, _ = exp_data
    rng = np.random.default_rng(6)
    Y = jnp.asarray(y + 0.01 * rng.standard_normal((3, x.size)))
    p0 = jnp.array([1.0, 1.0, 0.0])

    def popt(y):
        return nlsq.fit(exponential, x, y, p0).popt

    batched = jax.jit(jax.vmap(jax.jacrev(popt)))(Y)
    forward = jax.vmap(jax.jacfwd(popt))(Y)
    for i in range(3):
        single = jax.jacrev(popt)(Y[i])
        np.testing.assert_allclose(batched[i], single, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(forward[i], single, rtol=1e-8, atol=1e-12)


def test_second_gradient_does_not_recompile(exp_data):
    x, y, _ = exp_data
    p0 = jnp.array([1.0, 1.0, 0.0])
    target = jnp.array([2.0, 0.8, 0.3])

    def loss(y):
        return jnp.sum((nlsq.fit(exponential, x, y, p0).popt - target) ** 2)

    grad = jax.grad(loss)
    first = grad(jnp.asarray(y))
    new_data = jnp.asarray(y * 1.01)
    with track_compiles() as call:
        second = grad(new_data)
    assert call.compiles == 0
    assert not np.allclose(first, second)


# --- invalid input: exceptions when concrete, statuses when traced -----------------


def test_concrete_invalid_input_raises(exp_data):
    x, y, _ = exp_data
    with pytest.raises(ValueError, match="Initial guess is outside of provided bounds"):
        nlsq.fit(exponential, x, y, [1.0, 1.0, 2.0], bounds=(0.0, 1.5))
    with pytest.raises(ValueError, match="strictly less"):
        nlsq.fit(exponential, x, y, [1.0, 1.0, 1.0], bounds=(1.0, 1.0))
    bad = np.array(y)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="must not contain infs or NaNs"):
        nlsq.fit(exponential, x, bad, [1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="`sigma` has incorrect shape"):
        nlsq.fit(exponential, x, y, [1.0, 1.0, 0.0], sigma=np.ones(3))
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo'"):
        nlsq.fit(exponential, x, y, [1.0, 1.0, 0.0], foo=1)
    with pytest.raises(ValueError, match="`jac` is not supported"):
        nlsq.fit(exponential, x, y, [1.0, 1.0, 0.0], jac=lambda x, *p: x)
    with pytest.raises(ValueError, match="doesn't support bounds"):
        nlsq.fit(exponential, x, y, [1.0, 1.0, 0.0], method="lm", bounds=(0.0, 5.0))


def test_traced_invalid_input_gives_statuses(exp_data):
    x, y, _ = exp_data
    Y = np.stack([y, y, y])
    Y[1, 4] = np.nan
    P0 = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 9.0]])

    def one(y, p0):
        return nlsq.fit(exponential, x, y, p0, bounds=(-5.0, 5.0))

    out = jax.jit(jax.vmap(one))(jnp.asarray(Y), jnp.asarray(P0))
    np.testing.assert_array_equal(out.status[1:], [INVALID_INPUT, INVALID_INPUT])
    assert np.isnan(out.popt[1:]).all() and np.isnan(out.pcov[1:]).all()
    assert not out.success[1:].any() and (out.nfev[1:] == 0).all()
    alone = nlsq.fit(exponential, x, y, P0[0], bounds=(-5.0, 5.0))
    np.testing.assert_allclose(out.popt[0], alone.popt, rtol=1e-10)
    assert bool(out.success[0])


def test_residuals_not_finite_at_p0():
    x = np.linspace(1.0, 2.0, 10)

    def model(x, b):
        return jnp.log(b * x)

    out = jax.jit(lambda y: nlsq.fit(model, x, y, jnp.array([-1.0])))(jnp.log(2 * x))
    assert int(out.status) == NOT_FINITE_AT_P0
    assert np.isnan(out.popt).all() and not bool(out.success)


def test_covariance_without_degrees_of_freedom_is_inf():
    x = np.array([0.0, 1.0])
    out = nlsq.fit(lambda x, a, b: a + b * x, x, np.array([1.0, 3.0]), [0.0, 0.0])
    np.testing.assert_allclose(out.popt, [1.0, 2.0], rtol=1e-10)
    assert np.isinf(out.pcov).all()
