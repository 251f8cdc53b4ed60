"""A fit inside a JAX program: ``nlsq.fit`` under ``jit``, ``vmap`` and ``grad``.

Two uses of the derivative of a fit's result with respect to its data:

1. Calibration inside an outer optimisation. A detector's readings carry an unknown
   constant offset. Its saturation curve ``a * (1 - exp(-b * x))`` is fitted to the
   readings minus a trial offset, and the offset is chosen so that the fitted
   saturation level ``a`` equals that of a reference standard. The outer loop is
   Newton's method on the offset, with ``jax.value_and_grad`` through the fit, all in
   one jitted step. scipy solves the same problem with a root finder around
   ``scipy.optimize.curve_fit``, for comparison.
2. Uncertainty propagation by the delta method. The half-saturation dose
   ``ln(2) / b`` is a function of the data through the fit; its gradient ``g`` with
   respect to the readings gives its standard deviation ``sigma * |g|``. A Monte Carlo
   check re-fits many simulated data sets at once, with ``jax.vmap``; the covariance
   of the fit gives the same to first order.

Run it with ``python differentiable_fit.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

import nlsq

NOISE = 0.02
REFERENCE_LEVEL = 2.0


def saturation(x, a, b):
    return a * (1 - jnp.exp(-b * x))


def saturation_np(x, a, b):
    return a * (1 - np.exp(-b * x))


def main() -> None:
    rng = np.random.default_rng(7)
    x = np.linspace(0.1, 5.0, 60)
    true_offset = 0.15
    readings = saturation_np(x, REFERENCE_LEVEL, 0.9) + true_offset
    readings = readings + NOISE * rng.standard_normal(x.size)
    p0 = jnp.array([1.0, 1.0])

    # 1. Calibration: the offset at which the fitted level equals the reference.
    def level_error(offset):
        popt = nlsq.fit(saturation, x, readings - offset, p0).popt
        return popt[0] - REFERENCE_LEVEL

    @jax.jit
    def newton_step(offset):
        error, slope = jax.value_and_grad(level_error)(offset)
        return offset - error / slope, error

    offset = jnp.asarray(0.0)
    for _ in range(8):
        offset, error = newton_step(offset)
    print(f"offset: {float(offset):.10f}")
    print(f"level error before the last step: {abs(float(error)):.2e}")

    def scipy_level_error(offset):
        popt, _ = scipy.optimize.curve_fit(saturation_np, x, readings - offset, p0=[1.0, 1.0])
        return popt[0] - REFERENCE_LEVEL

    scipy_offset = scipy.optimize.brentq(scipy_level_error, -0.5, 0.5, xtol=1e-14)
    print(f"scipy offset: {scipy_offset:.10f}")
    print(f"true offset: {true_offset:.10f}")

    # 2. The half-saturation dose and its standard deviation by the delta method.
    def half_dose(y):
        out = nlsq.fit(saturation, x, y, p0)
        return jnp.log(2.0) / out.popt[1], out

    corrected = jnp.asarray(readings) - offset
    (dose, out), gradient = jax.jit(jax.value_and_grad(half_dose, has_aux=True))(corrected)
    delta_sd = NOISE * float(jnp.linalg.norm(gradient))
    # The same from the covariance of the fit, rescaled from the estimated noise
    # variance (chi2 / dof) to the known one.
    dq_dp = jnp.array([0.0, -jnp.log(2.0) / out.popt[1] ** 2])
    known = out.pcov * NOISE**2 / (2 * out.cost / (x.size - 2))
    covariance_sd = float(jnp.sqrt(dq_dp @ known @ dq_dp))

    # Monte Carlo: re-fit 400 simulated data sets in one vmapped, jitted call.
    fitted = saturation(x, *out.popt)
    simulated = fitted + NOISE * rng.standard_normal((400, x.size))
    doses, _ = jax.jit(jax.vmap(half_dose))(jnp.asarray(simulated))
    print(f"half dose: {float(dose):.6f}")
    print(f"delta-method sd: {delta_sd:.6f}")
    print(f"covariance sd: {covariance_sd:.6f}")
    print(f"monte-carlo sd: {float(jnp.std(doses, ddof=1)):.6f}")


if __name__ == "__main__":
    with jax.enable_x64(True):
        main()
