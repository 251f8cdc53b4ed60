"""``nlsq.least_squares``: scipy's ``least_squares`` on the compiled solvers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from nlsq import config
from nlsq.execute.dense import fit_residuals
from nlsq.finish.assemble import to_optimize_result
from nlsq.prepare.options import validate_options

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult


def least_squares(
    fun: Callable,
    x0: Any,
    jac: Callable | str | None = None,
    bounds: Any = (-np.inf, np.inf),
    method: str = "trf",
    ftol: float | None = 1e-8,
    xtol: float | None = 1e-8,
    gtol: float | None = 1e-8,
    x_scale: Any = None,
    loss: str | Callable = "linear",
    f_scale: float = 1.0,
    diff_step: Any = None,
    tr_solver: str | None = None,
    tr_options: dict | None = None,
    jac_sparsity: Any = None,
    max_nfev: int | None = None,
    verbose: int = 0,
    args: tuple = (),
    kwargs: dict | None = None,
    callback: Callable | None = None,
    workers: Any = None,
    *,
    dtype: Any = None,
    jacobian_mode: str | None = None,
) -> OptimizeResult:
    """Solve a nonlinear least-squares problem with bounds on the variables.

    A drop-in for :func:`scipy.optimize.least_squares` whose solver runs as one
    compiled JAX program. Given residuals ``f(x)`` (an m-D real function of n real
    variables) and a loss function ``rho(s)``, finds a local minimum of
    ``F(x) = 0.5 * sum(rho(f_i(x)**2))`` subject to ``lb <= x <= ub``.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args, **kwargs)`` returning the residuals, shape (m,), written with
        ``jax.numpy`` so that it can be traced and differentiated.
    x0 : array_like, shape (n,) or float
        Initial guess.
    jac : {None, '2-point', '3-point', 'cs'} or callable, optional
        ``None`` (default): exact Jacobian by JAX autodiff (scipy's default is
        '2-point'). The finite-difference schemes take scipy's steps (``diff_step``).
        A callable ``jac(x, *args, **kwargs)`` returning shape (m, n) is used as
        given; one written with NumPy runs on the host, and may return a
        ``scipy.sparse`` matrix (its nonzero pattern at ``x0`` is kept) or a
        ``LinearOperator``, solved with ``tr_solver='lsmr'`` as in scipy.
    bounds : 2-tuple of array_like or `scipy.optimize.Bounds`, optional
        Lower and upper bounds on the variables; ``np.inf`` with a sign disables a
        bound. Default: no bounds.
    method : {'trf', 'dogbox', 'lm'}, optional
        Trust Region Reflective (default), dogleg with rectangular trust regions, or
        MINPACK's Levenberg-Marquardt (unbounded, linear loss, ``m >= n``), as in
        scipy.
    ftol, xtol, gtol : float or None, optional
        Tolerances for termination by the change of the cost, of the variables and
        by the norm of the scaled gradient, as in scipy. ``None`` disables a test.
    x_scale : array_like or 'jac', optional
        Characteristic scale of each variable. Default 1.0; 'jac' uses the inverse
        norms of the Jacobian's columns.
    loss : {'linear', 'soft_l1', 'huber', 'cauchy', 'arctan'} or callable, optional
        Loss function; a callable ``rho(z)`` must return shape (3, m) (value, first
        and second derivative) and be traceable by JAX.
    f_scale : float, optional
        Soft margin between inlier and outlier residuals. Default 1.0.
    diff_step : None or array_like, optional
        Relative step of the finite-difference schemes, as in scipy.
    tr_solver : {None, 'exact', 'lsmr'}, optional
        Trust-region subproblem solver of 'trf' and 'dogbox': 'exact' (an SVD of the
        dense Jacobian) or 'lsmr' (scipy's LSMR step on a 2-D subspace, which only
        multiplies by the Jacobian). None: 'lsmr' for a sparse Jacobian or
        ``jac_sparsity``, else 'exact', as in scipy. 'lm' ignores it.
    tr_options : dict, optional
        With 'lsmr': the options of ``scipy.sparse.linalg.lsmr`` (``damp``, ``atol``,
        ``btol``, ``conlim``, ``maxiter``) and, for 'trf', ``regularize`` (default
        True). Ignored by 'exact'.
    jac_sparsity : None, 'auto', array_like or sparse matrix, optional
        Pattern of the Jacobian's nonzeros, shape (m, n). Columns are grouped as in
        scipy (no two columns of a group share a row) and the Jacobian is formed
        from one derivative per group and kept sparse: by forward-mode autodiff along
        the group's seed vector for a JAX ``fun`` with ``jac=None`` (exact), by
        grouped finite differences for '2-point', '3-point' and 'cs' (as scipy).
        'auto' (nlsq extension, JAX models) reads the pattern from ``fun``'s jaxpr.
        Implies ``tr_solver='lsmr'``. Ignored with a callable ``jac``, as in scipy.
        See :doc:`/sparse`.
    max_nfev : None or int, optional
        Maximum number of function evaluations; default ``100 * n``.
    verbose : {0, 1, 2}, optional
        1 prints a termination report, 2 also prints progress per iteration.
    args, kwargs : tuple and dict, optional
        Extra arguments of `fun` and `jac`. Arrays and floats among them are passed
        to the compiled program as data (new values do not recompile); ints,
        strings and other objects are treated as constants of the program.
    callback : None or callable, optional
        ``callback(intermediate_result)`` or ``callback(x)`` after each iteration
        ('trf', 'dogbox'); returning True or raising ``StopIteration`` stops the fit
        with status -2. Ignored with a warning by 'lm', as in scipy.
    workers : optional
        Accepted for compatibility and ignored: finite differences of a JAX model run
        inside the compiled program, those of a NumPy model on the host, point by
        point (a forking ``multiprocessing.Pool`` is unsafe once JAX has started its
        threads).
    dtype : {None, 'float64', 'float32'}, optional
        Working precision (nlsq extension). Default float64.
    jacobian_mode : {None, 'auto', 'fwd', 'rev'}, optional
        Autodiff mode for ``jac=None`` (nlsq extension). ``None`` takes the
        ``NLSQ_JACOBIAN_MODE`` environment variable, then the config file, then 'auto'
        (see :mod:`nlsq.config`).

    Returns
    -------
    OptimizeResult
        With fields ``x, cost, fun, jac, grad, optimality, active_mask, nfev, njev,
        status, message, success``, as scipy's.

    Raises
    ------
    ValueError
        For invalid arguments (scipy's messages), or when the residuals at ``x0``
        are not finite.
    """
    with config.one_reading():
        options = validate_options(
            x0,
            jac=jac,
            bounds=bounds,
            method=method,
            ftol=ftol,
            xtol=xtol,
            gtol=gtol,
            x_scale=x_scale,
            loss=loss,
            f_scale=f_scale,
            tr_solver=tr_solver,
            jac_sparsity=jac_sparsity,
            max_nfev=max_nfev,
            verbose=verbose,
            callback=callback,
            dtype=dtype,
            jacobian_mode=jacobian_mode,
            diff_step=diff_step,
            tr_options=tr_options,
        )
        raw = fit_residuals(fun, jac, options, args, kwargs or {})
    result = to_optimize_result(raw, options.bounded)
    if options.method == "lm" and not callable(jac):
        result.njev = None
    return result
