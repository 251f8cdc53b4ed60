"""Move a scipy.optimize.curve_fit script to nlsq: change the import, use jax.numpy.

Both fits below get the same data, starting point and options. With ``method='trf'``
scipy runs the same trust-region algorithm as nlsq, so the two agree to many digits;
scipy's default for an unbounded problem is ``'lm'`` (nlsq's default is ``'trf'``), so
the example asks for ``'trf'`` explicitly on both sides. Everything else is unchanged:
``p0``, ``sigma``, ``absolute_sigma``, ``bounds``, ``full_output`` and the returned
``popt, pcov`` (NumPy float64 arrays).
"""

import jax.numpy as jnp
import numpy as np
import scipy.optimize

import nlsq


# Before: the scipy model, written with NumPy.
def damped_sine_np(t, amplitude, decay, frequency, phase):
    return amplitude * np.exp(-decay * t) * np.sin(2 * np.pi * frequency * t + phase)


# After: the same model with jax.numpy (np.exp -> jnp.exp, np.sin -> jnp.sin).
def damped_sine(t, amplitude, decay, frequency, phase):
    return amplitude * jnp.exp(-decay * t) * jnp.sin(2 * jnp.pi * frequency * t + phase)


def main() -> None:
    rng = np.random.default_rng(3)
    t = np.linspace(0.0, 3.0, 300)
    true = np.array([1.5, 0.8, 2.0, 0.3])
    sigma = np.full(t.size, 0.03)
    y = damped_sine_np(t, *true) + sigma * rng.standard_normal(t.size)
    p0 = [1.0, 1.0, 1.9, 0.0]
    options = dict(p0=p0, sigma=sigma, absolute_sigma=True, method="trf")

    popt_s, pcov_s, info_s, _, _ = scipy.optimize.curve_fit(
        damped_sine_np, t, y, full_output=True, **options
    )
    popt, pcov, info, message, ier = nlsq.curve_fit(damped_sine, t, y, full_output=True, **options)

    print("scipy popt: " + " ".join(f"{v:.10f}" for v in popt_s))
    print("nlsq  popt: " + " ".join(f"{v:.10f}" for v in popt))
    print("scipy perr: " + " ".join(f"{v:.10f}" for v in np.sqrt(np.diag(pcov_s))))
    print("nlsq  perr: " + " ".join(f"{v:.10f}" for v in np.sqrt(np.diag(pcov))))
    print(f"nlsq: {message} (ier {ier}, nfev {info['nfev']}); scipy nfev {info_s['nfev']}")
    # scipy differentiates the NumPy model by finite differences, nlsq the JAX model
    # exactly: the iterates differ slightly, the optimum agrees to rounding.
    print(f"max relative difference in popt: {np.max(np.abs(popt / popt_s - 1)):.2e}")
    print(f"max relative difference in pcov: {np.max(np.abs(pcov / pcov_s - 1)):.2e}")


if __name__ == "__main__":
    main()
