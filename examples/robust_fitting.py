"""Fit data with gross outliers: a robust loss keeps them from dragging the fit.

With the default ``loss='linear'`` (least squares) a few wild points pull the curve
towards them. ``loss='soft_l1'`` (or ``'huber'``, ``'cauchy'``, ``'arctan'``) grows
slower than the square beyond ``f_scale``, the residual size beyond which a point
counts as an outlier: set it near the noise level of the good points. The options
are scipy's, and so is the result (compared at the end).
"""

import jax.numpy as jnp
import numpy as np
import scipy.optimize

import nlsq


def model(x, amplitude, rate, offset):
    return amplitude * jnp.exp(-rate * x) + offset


def model_np(x, amplitude, rate, offset):
    return amplitude * np.exp(-rate * x) + offset


def main() -> None:
    rng = np.random.default_rng(11)
    true = np.array([3.0, 0.9, 0.4])
    x = np.linspace(0.0, 5.0, 120)
    y = model_np(x, *true) + 0.05 * rng.standard_normal(x.size)
    outliers = rng.choice(x.size, size=12, replace=False)
    y[outliers] += rng.uniform(1.0, 3.0, outliers.size)  # 10% of the points, all too high
    p0 = [1.0, 1.0, 0.0]

    fitter = nlsq.CurveFit(model, p0=p0)
    plain = fitter.fit(x, y)
    robust = fitter.fit(x, y, loss="soft_l1", f_scale=0.1)
    # scipy needs method='trf' for a robust loss (its default 'lm' refuses `loss`).
    robust_scipy, _ = scipy.optimize.curve_fit(
        model_np, x, y, p0=p0, method="trf", loss="soft_l1", f_scale=0.1
    )

    print("true:   " + " ".join(f"{v:.6f}" for v in true))
    print("linear: " + " ".join(f"{v:.6f}" for v in plain.popt))
    print("robust: " + " ".join(f"{v:.6f}" for v in robust.popt))
    print("scipy:  " + " ".join(f"{v:.6f}" for v in robust_scipy))
    error_plain = np.max(np.abs(plain.popt - true))
    error_robust = np.max(np.abs(robust.popt - true))
    print(f"largest parameter error: linear {error_plain:.3f}, soft_l1 {error_robust:.3f}")
    print()
    print(robust.summary())


if __name__ == "__main__":
    main()
