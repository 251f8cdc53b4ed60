"""Models written with NumPy, evaluated on the host from inside the compiled fit.

A model such as ``a * np.exp(-b * x)`` cannot be traced by JAX. nlsq detects this
once per model, then calls the model through :func:`jax.pure_callback`: the solver
still runs as one compiled program, the model runs in Python at each evaluation,
and the Jacobian comes from finite differences as in scipy.

Each fit gets a token (a traced integer passed with the data) that identifies it on
the host side. It keys two things: the last evaluation, so that asking again for
the residuals at the same point (finite differences start from ``f(x)``) does not
call the model twice, and the first exception the model raised, which is re-raised
with its own traceback when the fit returns (the compiled program itself only
sees NaN).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nlsq.errors import plain_input_errors
from nlsq.transfer import device_values, device_words, host_values, host_words, words_per_value


class NumPyModelWarning(UserWarning):
    """A model could not be traced by JAX and runs on the host (slower)."""


#: Token of host calls outside :func:`host_fit` (a NumPy loss): errors propagate.
UNTRACKED = 0

_lock = threading.Lock()
_tokens = itertools.count(1)
_failures: dict[int, BaseException] = {}
_last_values: dict[tuple[int, str], tuple[bytes, np.ndarray]] = {}
_warned: set[Any] = set()


def traces(function: Callable, *args: Any) -> bool:
    """Whether ``function(*args)`` can be traced by JAX (False for NumPy code)."""
    try:
        jax.eval_shape(function, *args)
    except Exception:  # noqa: BLE001 - any failure to trace means: run it on the host
        return False
    return True


def reads_numpy(function: Callable) -> bool:
    """Whether ``function``'s own code reads NumPy (the module, or one of its functions
    or ufuncs), through a global or a closure; True for anything but a plain function."""
    if not isinstance(function, types.FunctionType):
        return True
    values = [cell.cell_contents for cell in function.__closure__ or () if _filled(cell)]
    values += [function.__globals__.get(name) for name in _code_names(function.__code__)]
    return any(_from_numpy(value) for value in values)


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _from_numpy(value: Any) -> bool:
    module = value.__name__ if isinstance(value, types.ModuleType) else None
    if module is None and callable(value):
        module = getattr(value, "__module__", None)
    return module is not None and module.split(".")[0] == "numpy"


def _runs_on_host_when_called(function: Callable, x: Any, rest: tuple, probe: dict | None) -> bool:
    """The verdict of calling ``function(x, *rest)`` with ``x`` as a JAX array (see
    :func:`runs_on_host`)."""
    try:
        value = function(jnp.asarray(x), *rest)
    except Exception:  # noqa: BLE001 - the host evaluation raises it again if real
        return True
    verdict = not isinstance(value, jax.Array) or not traces(function, x, *rest)
    if verdict and probe is not None:
        # Other results (a sparse matrix from `jac`) are kept as they are.
        probe["value"] = np.asarray(value) if isinstance(value, jax.Array) else value
    return verdict


def warn_once(key: Any, name: str, stacklevel: int = 4) -> None:
    """Warn, once per model, that a function runs on the host.

    ``stacklevel`` as in ``warnings.warn`` (1 is this function).
    """
    with _lock:
        if key is not None and key in _warned:
            return
        _warned.add(key)
    warnings.warn(
        f"`{name}` cannot be traced by JAX (it uses NumPy or Python control flow on the "
        "parameters), so nlsq calls it on the host at each evaluation and uses finite "
        "differences for the Jacobian, as scipy does. Write it with jax.numpy for a "
        "fully compiled fit with an exact Jacobian.",
        NumPyModelWarning,
        stacklevel=stacklevel,
    )


def _fail(token: int, error: BaseException) -> None:
    with _lock:
        _failures.setdefault(token, error)


def host_callable(
    function: Callable[[np.ndarray, Any], Any], shape: tuple[int, ...], role: str
) -> Callable[[jax.Array, Any, jax.Array], jax.Array]:
    """Make ``function(x, data)`` (NumPy) callable from traced code.

    Parameters
    ----------
    function : callable
        ``function(x, data)`` evaluated on the host with NumPy arrays.
    shape : tuple of int
        Shape of its result (checked at every call).
    role : str
        Name of the function in error messages and in the per-fit memo
        ("fun" or "jac").

    Returns
    -------
    callable
        ``device_function(x, data, token)``; complex ``x`` (complex-step
        differences) gives a complex result. Under ``vmap`` (finite differences)
        the host evaluates the points one by one.
    """

    def evaluate(x: np.ndarray, data: Any, token: int) -> np.ndarray:
        if token in _failures:
            return np.full(shape, np.nan, x.dtype)
        memo_key = (token, role)
        x_bytes = x.tobytes()
        last = _last_values.get(memo_key)
        if last is not None and last[0] == x_bytes:
            return last[1]
        try:
            # 64-bit JAX as during the probe and the fit: a model that keeps the JAX
            # values it was probed with and later mixes them with NumPy values
            # must not see them truncated (or warned about).
            with jax.enable_x64(True):
                value = np.array(function(x.copy(), data))
            if value.shape != shape and value.size == np.prod(shape, dtype=int):
                value = value.reshape(shape)
            if value.shape != shape:
                raise ValueError(
                    f"`{role}` returned shape {value.shape} at x = {x}, "
                    f"but shape {shape} at the initial point."
                )
            if np.iscomplexobj(value) and not np.iscomplexobj(x):
                raise TypeError(f"`{role}` returned complex values; residuals must be real.")
            value = value.astype(x.dtype)
        except BaseException as error:  # noqa: BLE001 - re-raised by the caller
            if token == UNTRACKED:
                raise
            _fail(token, error)
            return np.full(shape, np.nan, x.dtype)
        _last_values[memo_key] = (x_bytes, value)
        return value

    def on_host(words: Any, *, dtypes: Any, ranks: Any) -> np.ndarray:
        x, data, token = jax.tree.map(host_values, words, dtypes)
        batch = x.shape[: x.ndim - ranks[0]]
        if not batch:
            return host_words(evaluate(x, data, int(token)))
        count = int(np.prod(batch))

        def rows(a: np.ndarray, rank: int) -> np.ndarray:
            # Operands without some of the batch axes broadcast along them.
            core = a.shape[a.ndim - rank :] if rank else ()
            return np.broadcast_to(a, batch + core).reshape((count,) + core)

        x_rows, data_rows, token_rows = jax.tree.map(rows, (x, data, token), ranks)
        values = [
            evaluate(x_rows[i], jax.tree.map(lambda a, i=i: a[i], data_rows), int(token_rows[i]))
            for i in range(count)
        ]
        return host_words(np.stack(values).reshape(batch + shape))

    def device_function(x: jax.Array, data: Any, token: jax.Array) -> jax.Array:
        operands = (x, data, token)
        dtypes = jax.tree.map(lambda a: np.dtype(jnp.result_type(a)), operands)
        words = jax.tree.map(device_words, operands)
        ranks = jax.tree.map(jnp.ndim, operands)
        width = words_per_value(x.dtype)
        result = jax.ShapeDtypeStruct(shape + (width,), np.uint32)

        # Batched (finite differences, batch fits), every operand gets the batch
        # axes in front and the host loops over the points.
        raw = jax.pure_callback(
            functools.partial(on_host, dtypes=dtypes, ranks=ranks),
            result,
            words,
            vmap_method="broadcast_all",
        )
        return device_values(raw, x.dtype)

    return device_function


_verdicts: dict[Any, bool] = {}


def runs_on_host(
    function: Callable,
    key: Any,
    x: Any,
    *rest: Any,
    probe: dict | None = None,
    written_by: Callable | None = None,
) -> bool:
    """Whether ``function(x, *rest)`` must run on the host, decided once per ``key``.

    The function is called with ``x`` as a JAX array: NumPy code returns a NumPy
    array (or fails, when it writes into ``x``), JAX code a JAX array, which is then
    traced, to be sure that it can be. With ``probe``, the result of a function found
    to run on the host is stored under ``probe["value"]`` (as NumPy): it is the
    function at ``x``, which scipy computes first too, so the function is not called
    at ``x`` again: a model that checks it is never called twice in a row with the
    same parameters, as scipy guarantees, keeps working.

    ``written_by`` is the user's function behind ``function``. When its own code
    reads nothing from NumPy, it is traced first, and found to be JAX code without the
    eager call, which compiles each of its operations on a first call. (A NumPy model
    may keep the arguments it is called with, so it never sees a tracer.)
    """
    if key is not None and key in _verdicts:
        return _verdicts[key]
    with jax.enable_x64(True), plain_input_errors():
        if written_by is not None and not reads_numpy(written_by) and traces(function, x, *rest):
            verdict = False
        else:
            verdict = _runs_on_host_when_called(function, x, rest, probe)
    if key is not None:
        _verdicts[key] = verdict
    return verdict


@contextlib.contextmanager
def host_fit(x0: np.ndarray, initial: dict[str, np.ndarray]) -> Iterator[np.ndarray]:
    """Token for one fit with host functions; re-raises the model's first exception.

    ``initial`` maps a role ("fun", "jac") to its value already computed at ``x0``
    (the shape probe), so that the solver's first evaluation does not call it again.
    """
    token = next(_tokens)
    for role, value in initial.items():
        _last_values[(token, role)] = (x0.tobytes(), np.asarray(value).astype(x0.dtype))
    try:
        yield np.asarray(token, np.int64)
    except BaseException:
        # The model's own exception explains a failure better than its consequence
        # (non-finite residuals, say).
        _raise_failure(token)
        raise
    else:
        _raise_failure(token)
    finally:
        with _lock:
            _failures.pop(token, None)
            _last_values.pop((token, "fun"), None)
            _last_values.pop((token, "jac"), None)
            for key in [k for k in _operators if k[0] == token]:
                del _operators[key]


def _raise_failure(token: int) -> None:
    with _lock:
        error = _failures.pop(token, None)
    if error is not None:
        raise error


#: Linear operators returned by host Jacobians, by ``(token, handle)``; the last two
#: of a fit are kept (the solver only ever uses the latest Jacobian).
_operators: dict[tuple[int, int], Any] = {}
_handles = itertools.count(1)


def _store_operator(token: int, operator: Any) -> int:
    handle = next(_handles)
    with _lock:
        _operators[(token, handle)] = operator
        for key in [k for k in _operators if k[0] == token and k[1] < handle - 1]:
            del _operators[key]
    return handle


def _operator_product(
    words: Any, *, dtype: np.dtype, shape: tuple[int], transpose: bool
) -> np.ndarray:
    handle, token, v = words
    operator = _operators.get((int(np.asarray(token)), int(np.asarray(handle))))
    v = host_values(v, dtype)
    if operator is None:
        return host_words(np.full(shape, np.nan, dtype))
    product = operator.rmatvec(v) if transpose else operator.matvec(v)
    return host_words(np.asarray(product, dtype=dtype).reshape(shape))


@jax.tree_util.register_pytree_node_class
class HostOperator:
    """A ``LinearOperator`` Jacobian that stays on the host, scaled on both sides.

    It stands for ``diag(row_scale) @ A @ diag(col_scale)`` with ``A`` the operator
    the user's ``jac`` returned (kept on the host under ``handle``): products with it
    and its transpose call the host, scaling of rows (robust losses) and columns
    (variable scaling) stays in the compiled program. This is all the iteration with
    ``tr_solver='lsmr'`` asks of a Jacobian.
    """

    def __init__(
        self, handle: jax.Array, token: jax.Array, row_scale: jax.Array, col_scale: jax.Array
    ) -> None:
        self.handle = handle
        self.token = token
        self.row_scale = row_scale
        self.col_scale = col_scale

    def tree_flatten(self) -> tuple[tuple, None]:
        return (self.handle, self.token, self.row_scale, self.col_scale), None

    @classmethod
    def tree_unflatten(cls, _: None, children: tuple) -> HostOperator:
        return cls(*children)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.row_scale.shape[0], self.col_scale.shape[0])

    def _product(self, v: jax.Array, transpose: bool) -> jax.Array:
        size = self.shape[1] if transpose else self.shape[0]
        dtype = np.dtype(v.dtype)
        result = jax.ShapeDtypeStruct((size, words_per_value(dtype)), np.uint32)
        words = (self.handle, self.token.astype(jnp.int32), device_words(v))
        raw = jax.pure_callback(
            functools.partial(_operator_product, dtype=dtype, shape=(size,), transpose=transpose),
            result,
            words,
            vmap_method="sequential",
        )
        return device_values(raw, dtype)

    def __matmul__(self, v: jax.Array) -> jax.Array:
        return self.row_scale * self._product(self.col_scale * v, transpose=False)

    @property
    def T(self) -> _TransposedOperator:  # noqa: N802 - numpy's name for the transpose
        return _TransposedOperator(self)

    def __mul__(self, other: jax.Array) -> HostOperator:
        other = jnp.asarray(other)
        if other.ndim == 2 and other.shape[1] == 1:
            return HostOperator(
                self.handle, self.token, self.row_scale * other[:, 0], self.col_scale
            )
        return HostOperator(self.handle, self.token, self.row_scale, self.col_scale * other)


class _TransposedOperator:
    def __init__(self, operator: HostOperator) -> None:
        self.operator = operator

    def __matmul__(self, u: jax.Array) -> jax.Array:
        op = self.operator
        return op.col_scale * op._product(op.row_scale * u, transpose=True)


def host_operator_jacobian(
    function: Callable[[np.ndarray, Any], Any], m: int, n: int
) -> Callable[[jax.Array, Any, jax.Array], HostOperator]:
    """Make ``function(x, data)``, a host Jacobian returning a ``LinearOperator``,
    callable from traced code as a :class:`HostOperator`."""

    def on_host(words: Any, *, dtypes: Any) -> np.ndarray:
        x, data, token = jax.tree.map(host_values, words, dtypes)
        if int(token) in _failures:
            return np.zeros((), np.int32)
        try:
            with jax.enable_x64(True):
                operator = function(x.copy(), data)
        except BaseException as error:  # noqa: BLE001 - re-raised by the caller
            _fail(int(token), error)
            return np.zeros((), np.int32)
        return np.asarray(_store_operator(int(token), operator), np.int32)

    def device_jacobian(x: jax.Array, data: Any, token: jax.Array) -> HostOperator:
        operands = (x, data, token)
        dtypes = jax.tree.map(lambda a: np.dtype(jnp.result_type(a)), operands)
        words = jax.tree.map(device_words, operands)
        handle = jax.pure_callback(
            functools.partial(on_host, dtypes=dtypes),
            jax.ShapeDtypeStruct((), np.int32),
            words,
            vmap_method="sequential",
        )
        ones_m = jnp.ones(m, x.dtype)
        ones_n = jnp.ones(n, x.dtype)
        return HostOperator(handle, token, ones_m, ones_n)

    return device_jacobian


def host_linear_operator(operator: HostOperator, token: int) -> Any:
    """The ``scipy.sparse.linalg.LinearOperator`` a :class:`HostOperator` stands for
    (fetched before the fit's ``token`` is released)."""
    from scipy.sparse.linalg import LinearOperator

    handle = int(np.asarray(operator.handle))
    with _lock:
        base = _operators.get((token, handle))
    rows = np.asarray(operator.row_scale, dtype=float)
    cols = np.asarray(operator.col_scale, dtype=float)
    return LinearOperator(
        base.shape,
        matvec=lambda v: rows * base.matvec(cols * np.ravel(v)),
        rmatvec=lambda u: cols * base.rmatvec(rows * np.ravel(u)),
        dtype=float,
    )
