"""Fit an exponential decay with nlsq and compare with scipy.optimize.curve_fit.

``nlsq.curve_fit`` returns scipy's ``popt, pcov``. ``nlsq.CurveFit(model).fit``
runs the same fit (the same compiled program: no second compile) and returns a
``FitResult`` with a readable report (``summary()``) and confidence intervals
(``conf_int()``). With ``--plot fit.png`` (needs matplotlib: ``pip install
"nlsq[plot]"``) the data, the fitted curve and the residuals are drawn to a file.
"""

import argparse

import jax.numpy as jnp
import numpy as np
import scipy.optimize

import nlsq


def model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def model_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plot", metavar="PATH", help="save a plot of the fit (PNG, PDF, ...)")
    args = parser.parse_args()

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

    # The same fit, with a FitResult: a report and 95% confidence intervals.
    result = nlsq.CurveFit(model, p0=p0).fit(x, y)
    print()
    print(result.summary())
    low, high = result.conf_int(alpha=0.05).T
    print("ci95 low:  " + " ".join(f"{v:.6f}" for v in low))
    print("ci95 high: " + " ".join(f"{v:.6f}" for v in high))

    if args.plot:
        from nlsq.plotting import plot_fit

        figure = plot_fit(result, title="a exp(-b x) + c", xlabel="time", ylabel="signal")
        figure.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
