"""Fit with bounds on the parameters, as with scipy: ``bounds=(lower, upper)``.

A Gaussian peak on a flat baseline, where physics says the amplitude and the baseline
cannot be negative and the width lies between 0.05 and 2. The baseline of these data
is zero, so noise pushes the unconstrained estimate below zero; the bounded fit stops
on the bound, and ``active_mask`` says so (-1: lower bound active, 1: upper). For
bounded problems scipy's default method is ``'trf'``, nlsq's too: both give the same
answer. ``scipy.optimize.Bounds`` objects and ``-np.inf``/``np.inf`` entries work too.
"""

import jax.numpy as jnp
import numpy as np
import scipy.optimize

import nlsq


def peak(x, amplitude, center, width, baseline):
    return amplitude * jnp.exp(-0.5 * ((x - center) / width) ** 2) + baseline


def peak_np(x, amplitude, center, width, baseline):
    return amplitude * np.exp(-0.5 * ((x - center) / width) ** 2) + baseline


def main() -> None:
    rng = np.random.default_rng(5)
    x = np.linspace(-3.0, 3.0, 150)
    true = np.array([1.2, 0.4, 0.5, 0.0])
    y = peak_np(x, *true) + 0.05 * rng.standard_normal(x.size)
    p0 = [1.0, 0.0, 1.0, 0.1]
    lower = [0.0, -3.0, 0.05, 0.0]
    upper = [np.inf, 3.0, 2.0, np.inf]

    bounded = nlsq.CurveFit(peak, p0=p0, bounds=(lower, upper)).fit(x, y)
    popt_scipy, _ = scipy.optimize.curve_fit(peak_np, x, y, p0=p0, bounds=(lower, upper))
    # For comparison, the unconstrained optimum (scipy here, to keep the example short).
    popt_free, _ = scipy.optimize.curve_fit(peak_np, x, y, p0=p0, method="trf")

    print("free:    " + " ".join(f"{v:.8f}" for v in popt_free))
    print("bounded: " + " ".join(f"{v:.8f}" for v in bounded.popt))
    print("scipy:   " + " ".join(f"{v:.8f}" for v in popt_scipy))
    print("active:  " + " ".join(str(v) for v in bounded.active_mask))
    print(f"lower:   {' '.join(str(v) for v in lower)}")
    print()
    print(bounded.summary())


if __name__ == "__main__":
    main()
