"""Fit an exponential decay with nlsq and compare with scipy.optimize.curve_fit."""

import jax.numpy as jnp
import numpy as np
import scipy.optimize

import nlsq


def model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def model_np(x, a, b, c):
    return a * np.exp(-b * x) + c


true = np.array([2.5, 1.3, 0.5])
rng = np.random.default_rng(42)
x = np.linspace(0.0, 4.0, 200)
y = model_np(x, *true) + 0.05 * rng.standard_normal(x.size)
p0 = [2.0, 1.0, 0.0]

popt, pcov = nlsq.curve_fit(model, x, y, p0=p0)
perr = np.sqrt(np.diag(pcov))

print("true: " + " ".join(f"{v:.6f}" for v in true))
print("popt: " + " ".join(f"{v:.6f}" for v in popt))
print("perr: " + " ".join(f"{v:.6f}" for v in perr))
for name, t, p, e in zip("abc", true, popt, perr, strict=True):
    print(f"  {name} = {p:.4f} +/- {e:.4f}   (true {t})")

popt_scipy, _ = scipy.optimize.curve_fit(model_np, x, y, p0=p0)
print(f"max |nlsq - scipy| over parameters: {np.max(np.abs(popt - popt_scipy)):.2e}")
