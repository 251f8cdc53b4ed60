"""Fit results: ``FitResult`` with its report and intervals, and the data it keeps."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass(frozen=True)
class FitData:
    """The data of one fit, as the solver saw them (after ``nan_policy='omit'``).

    Attributes
    ----------
    xdata : array_like
        The independent variable.
    ydata : ndarray
        The dependent data, length ``m``.
    sigma_kind : {'none', 'diagonal', 'covariance'}
        How the residuals were weighted.
    transform : ndarray or None
        ``1 / sigma`` (scalar or per point) for ``'diagonal'``; the lower Cholesky
        factor ``L`` of the covariance ``sigma = L L^T`` for ``'covariance'``.
    """

    xdata: Any
    ydata: np.ndarray
    sigma_kind: str = "none"
    transform: np.ndarray | None = None

    def whiten(self, values: np.ndarray) -> np.ndarray:
        """Weight ``values`` as the solver weighs residuals.

        Parameters
        ----------
        values : ndarray
            One value per data point, in the units of ``ydata``.

        Returns
        -------
        ndarray
            ``values / sigma``, or ``L^-1 values`` for a covariance ``sigma``.
        """
        if self.sigma_kind == "diagonal":
            return np.asarray(self.transform, float) * values
        if self.sigma_kind == "covariance":
            from scipy.linalg import solve_triangular

            return solve_triangular(self.transform, values, lower=True)
        return values

    def unwhiten(self, values: np.ndarray) -> np.ndarray:
        """Undo :meth:`whiten`: weighted residuals back in the units of ``ydata``.

        Parameters
        ----------
        values : ndarray
            Weighted values, one per data point.

        Returns
        -------
        ndarray
            ``values * sigma``, or ``L values`` for a covariance ``sigma``.
        """
        if self.sigma_kind == "diagonal":
            return values / np.asarray(self.transform, float)
        if self.sigma_kind == "covariance":
            return np.asarray(self.transform, float) @ values
        return values

    @property
    def sigma(self) -> np.ndarray | None:
        """Standard deviation of each point (``None`` without ``sigma``)."""
        if self.sigma_kind == "diagonal":
            return np.broadcast_to(1.0 / np.asarray(self.transform, float), self.ydata.shape)
        if self.sigma_kind == "covariance":
            L = np.asarray(self.transform, float)
            return np.sqrt(np.einsum("ij,ij->i", L, L))
        return None


def parameter_names(model: Callable | None, n: int) -> tuple[str, ...]:
    """Names of the ``n`` fit parameters from ``model(x, p1, ..., pn)``'s signature.

    Models whose signature does not name them (``f(x, *p)``, a builtin) get
    ``p0, p1, ...``.
    """
    try:
        parameters = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    positional = [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) == n + 1:
        return tuple(positional[1:])
    return tuple(f"p{i}" for i in range(n))


def t_quantile(probability: float, dof: float) -> float:
    """Quantile of Student's t with ``dof`` degrees of freedom (scipy.stats)."""
    # Imported here: scipy.stats adds a noticeable share to ``import nlsq``.
    from scipy import stats

    return float(stats.t.ppf(probability, dof))


def normal_quantile(probability: float) -> float:
    """Quantile of the standard normal distribution (scipy.stats)."""
    from scipy import stats

    return float(stats.norm.ppf(probability))


@dataclass(frozen=True)
class FitResult:
    """Result of one curve fit; unpacks and indexes as ``popt, pcov = result``.

    Returned by :meth:`nlsq.CurveFit.fit` and :func:`nlsq.curve_fit_large`.
    :meth:`summary` prints a report of the fit, :meth:`conf_int` gives confidence
    intervals of the parameters.

    Attributes
    ----------
    popt : ndarray
        Optimal parameters.
    pcov : ndarray
        Their estimated covariance (scipy's rule).
    status : int
        Termination status as in ``scipy.optimize.least_squares``.
    message : str
        Termination message.
    success : bool
        True when the fit converged (a fit that did not raises ``RuntimeError``).
    nfev, njev : int
        Function and Jacobian evaluations.
    cost : float
        Half the (weighted, robust) sum of squared residuals at ``popt``.
    optimality : float
        Infinity norm of the scaled gradient at ``popt``.
    active_mask : ndarray
        Bounds active at ``popt``.
    cache_stats : dict
        Compile figures of this fit and the process totals (see
        :func:`nlsq.cache_info`).
    covariance_warning : bool
        True when ``pcov`` could not be estimated (it is then all ``inf``).
    n_points : int or None
        Number of data points ``m`` (after ``nan_policy='omit'``).
    absolute_sigma : bool
        Whether ``sigma`` was taken as absolute (``pcov`` not rescaled).
    model : callable or None
        The model ``f(x, p1, ..., pn)``; its signature names the parameters.
    data : FitData or None
        The data of the fit; ``None`` for data streamed from a chunk source.
    """

    popt: np.ndarray
    pcov: np.ndarray
    status: int
    message: str
    success: bool
    nfev: int
    njev: int
    cost: float
    optimality: float
    active_mask: np.ndarray
    cache_stats: dict[str, Any] = field(default_factory=dict)
    covariance_warning: bool = False
    device_residuals: Any = field(default=None, repr=False)
    device_jac: Any = field(default=None, repr=False)
    n_points: int | None = None
    absolute_sigma: bool = False
    model: Callable | None = field(default=None, repr=False)
    data: FitData | None = field(default=None, repr=False)

    @property
    def residuals(self) -> np.ndarray:
        """Weighted residuals ``(f(x, *popt) - y) / sigma`` at ``popt`` (scipy's ``fvec``).

        Fetched from the device (or computed chunk by chunk) on access.
        """
        return self.device_residuals.numpy()

    @property
    def jac(self) -> np.ndarray:
        """Weighted (and loss-scaled) Jacobian at ``popt``, fetched on access."""
        return self.device_jac.numpy()

    @property
    def perr(self) -> np.ndarray:
        """One-standard-deviation errors, ``sqrt(diag(pcov))``."""
        return np.sqrt(np.diag(self.pcov))

    @property
    def param_names(self) -> tuple[str, ...]:
        """Parameter names from the model's signature (``p0, p1, ...`` without one)."""
        return parameter_names(self.model, self.popt.size)

    @property
    def dof(self) -> int:
        """Degrees of freedom, ``m - n`` (number of points minus parameters)."""
        m = len(self.residuals) if self.n_points is None else self.n_points
        return m - self.popt.size

    @functools.cached_property
    def chisqr(self) -> float:
        """Chi-square: the sum of squared weighted residuals at ``popt``.

        Without ``sigma`` it is the residual sum of squares. With a robust ``loss``
        it is still the plain sum of squares, not twice ``cost``.
        """
        return float(np.sum(np.square(self.residuals)))

    @property
    def redchi(self) -> float:
        """Reduced chi-square, ``chisqr / dof`` (``nan`` without degrees of freedom)."""
        return self.chisqr / self.dof if self.dof > 0 else float("nan")

    @functools.cached_property
    def rsquared(self) -> float:
        """Coefficient of determination, ``1 - chisqr / TSS``.

        ``TSS`` is the weighted total sum of squares of ``ydata`` about its weighted
        mean (generalised least squares with a covariance ``sigma``), so without
        ``sigma`` this is the usual ``1 - SS_res / SS_tot``. ``nan`` when the data
        are not kept (chunk sources) or are constant.
        """
        if self.data is None:
            return float("nan")
        y = np.asarray(self.data.ydata, float)
        whitened_y = self.data.whiten(y)
        whitened_one = self.data.whiten(np.ones_like(y))
        weight = float(whitened_one @ whitened_one)
        tss = float(whitened_y @ whitened_y) - float(whitened_one @ whitened_y) ** 2 / weight
        if not tss > 0:
            return float("nan")
        return 1.0 - self.chisqr / tss

    @property
    def best_fit(self) -> np.ndarray:
        """Model values at the data points, ``f(xdata, *popt)``.

        Recovered from the residuals and ``ydata``, without calling the model again.

        Raises
        ------
        ValueError
            If the fit kept no data (data streamed from a chunk source).
        """
        if self.data is None:
            raise ValueError(
                "This fit kept no data (it streamed them from a chunk source); "
                "evaluate the model yourself: f(x, *result.popt)."
            )
        return np.asarray(self.data.ydata, float) + self.data.unwhiten(self.residuals)

    @property
    def correlation(self) -> np.ndarray:
        """Correlation matrix of the parameters, ``pcov / outer(perr, perr)``."""
        perr = self.perr
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.pcov / np.outer(perr, perr)

    def conf_int(self, alpha: float = 0.05) -> np.ndarray:
        """Two-sided ``1 - alpha`` confidence intervals of the parameters.

        ``popt -/+ q * perr``. When ``sigma`` is estimated from the residuals (the
        default, ``absolute_sigma=False``), ``q`` is the ``1 - alpha/2`` quantile of
        Student's t with ``dof = m - n`` degrees of freedom; with
        ``absolute_sigma=True`` the variances are known and ``q`` is the normal
        quantile. The intervals rely on the linearisation behind ``pcov``.

        Parameters
        ----------
        alpha : float, optional
            Significance level, in ``(0, 1)``; 0.05 gives 95% intervals.

        Returns
        -------
        ndarray, shape (n, 2)
            Lower and upper bound of each parameter; ``-inf, inf`` where the
            covariance could not be estimated.

        Raises
        ------
        ValueError
            If ``alpha`` is not in ``(0, 1)``.
        """
        if not 0.0 < alpha < 1.0:
            raise ValueError(
                f"`alpha` must be in (0, 1), e.g. 0.05 for 95% intervals; got {alpha}."
            )
        if self.absolute_sigma:
            q = normal_quantile(1.0 - alpha / 2)
        elif self.dof > 0:
            q = t_quantile(1.0 - alpha / 2, self.dof)
        else:
            q = np.inf
        with np.errstate(invalid="ignore"):
            half = np.where(np.isfinite(self.perr), q * self.perr, np.inf)
        return np.column_stack([self.popt - half, self.popt + half])

    def summary(self, correlation_threshold: float = 0.1, alpha: float = 0.05) -> str:
        """A report of the fit: statistics, parameters, correlations.

        Parameters
        ----------
        correlation_threshold : float, optional
            Parameter correlations with a larger absolute value are listed.
        alpha : float, optional
            Significance level of the confidence intervals (see :meth:`conf_int`).

        Returns
        -------
        str
            The report, one line per item.
        """
        return "\n".join(
            _statistics_lines(self)
            + _parameter_lines(self, alpha)
            + _correlation_lines(self, correlation_threshold)
        )

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.popt, self.pcov))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int | slice) -> Any:
        """``result[0]`` is ``popt`` and ``result[1]`` is ``pcov``, as in the tuple
        that :func:`nlsq.curve_fit` returns."""
        return (self.popt, self.pcov)[index]


def _number(value: float) -> str:
    """A float in 7 significant digits, as in a fit report."""
    return f"{value:.7g}"


def _statistics_lines(result: FitResult) -> list[str]:
    verdict = "converged" if result.success else "did not converge"
    lines = [
        "[[Fit statistics]]",
        f"    status             = {result.status} ({verdict}): {result.message}",
        f"    data points        = {result.dof + result.popt.size}",
        f"    parameters         = {result.popt.size}",
        f"    degrees of freedom = {result.dof}",
        f"    function evals     = {result.nfev}",
        f"    Jacobian evals     = {result.njev}",
        f"    chi-square         = {_number(result.chisqr)}",
        f"    reduced chi-square = {_number(result.redchi)}",
        f"    R-squared          = {_number(result.rsquared)}",
    ]
    if result.covariance_warning:
        lines.append("    covariance         = could not be estimated (pcov is inf)")
    elif result.absolute_sigma:
        lines.append("    covariance         = absolute sigma (not scaled by reduced chi-square)")
    return lines


def _relative_error(value: float, error: float) -> str:
    if value == 0 or not np.isfinite(error):
        return "-"
    percent = abs(error / value) * 100
    return f"{percent:.2f}%" if percent < 1000 else ">1000%"


def _parameter_lines(result: FitResult, alpha: float) -> list[str]:
    names = result.param_names
    width = max(9, *(len(name) for name in names))
    level = f"{100 * (1 - alpha):g}% interval"
    lines = [
        "[[Parameters]]",
        f"    {'name':<{width}}  {'value':>13}  {'std error':>13}  {'rel. error':>10}  {level}",
    ]
    intervals = result.conf_int(alpha)
    active = np.asarray(result.active_mask)
    for index, name in enumerate(names):
        value, error = result.popt[index], result.perr[index]
        low, high = intervals[index]
        # The interval is a linearisation: it ignores the bound a parameter stopped on.
        at_bound = {-1: "  (at lower bound)", 1: "  (at upper bound)"}.get(int(active[index]), "")
        lines.append(
            f"    {name:<{width}}  {value:>13.7g}  {error:>13.7g}  "
            f"{_relative_error(value, error):>10}  [{_number(low)}, {_number(high)}]{at_bound}"
        )
    return lines


def _correlation_lines(result: FitResult, threshold: float) -> list[str]:
    names = result.param_names
    correlation = result.correlation
    pairs = [
        (abs(correlation[i, j]), names[i], names[j], correlation[i, j])
        for i in range(len(names))
        for j in range(i + 1, len(names))
        if np.isfinite(correlation[i, j]) and abs(correlation[i, j]) > threshold
    ]
    if not pairs:
        return []
    lines = [f"[[Correlations]] (|r| > {threshold:g})"]
    for _, first, second, value in sorted(pairs, reverse=True):
        lines.append(f"    C({first}, {second}) = {value:+.4f}")
    return lines
