"""The user's ``callback`` of ``least_squares``, as the solvers call it on the host."""

from __future__ import annotations

import contextlib
import inspect
import itertools
import threading
from collections.abc import Callable, Iterator

import numpy as np

from nlsq.scipy_types import optimize_result


class CallbackWrapper:
    """Calls ``callback`` like scipy and says whether the solver must stop.

    scipy passes ``intermediate_result`` (an ``OptimizeResult`` with ``x``, ``fun``,
    ``nit``, ``nfev`` and ``cost``) when that is the callback's only parameter, else
    a copy of ``x``. The solver stops when the callback returns True or raises
    ``StopIteration``. Any other exception is kept and re-raised when the fit
    returns, with its traceback.

    """

    def __init__(self, callback: Callable) -> None:
        self.callback = callback
        try:
            parameters = set(inspect.signature(callback).parameters)
        except (TypeError, ValueError):
            parameters = set()
        self.takes_result = parameters == {"intermediate_result"}
        self.error: BaseException | None = None

    def __call__(self, x, fun, cost, nit, nfev) -> bool:
        if self.error is not None:
            return True
        x = np.array(x, dtype=float)
        try:
            if self.takes_result:
                result = optimize_result(
                    x=x, fun=np.array(fun, dtype=float), nit=int(nit), nfev=int(nfev)
                )
                result["cost"] = float(cost)
                stop = self.callback(intermediate_result=result)
            else:
                stop = self.callback(x)
        except StopIteration:
            return True
        except BaseException as error:  # noqa: BLE001 - re-raised after the fit
            self.error = error
            return True
        return stop is True or (isinstance(stop, np.bool_) and bool(stop))

    def raise_error(self) -> None:
        """Re-raise (once) what the callback raised during the last fit."""
        error, self.error = self.error, None
        if error is not None:
            raise error


_lock = threading.Lock()
_tokens = itertools.count(1)
_running: dict[int, CallbackWrapper] = {}


def dispatch(token: int, x, fun, cost, nit, nfev) -> bool:
    """Host side of the compiled callback hook: call the fit's own callback."""
    wrapper = _running.get(token)
    return True if wrapper is None else wrapper(x, fun, cost, nit, nfev)


@contextlib.contextmanager
def callback_fit(callback: Callable | None) -> Iterator[np.ndarray | None]:
    """Register ``callback`` for one fit; yields its token (None without callback).

    What the callback raised (other than ``StopIteration``) is re-raised on exit.
    """
    if callback is None:
        yield None
        return
    wrapper = CallbackWrapper(callback)
    token = next(_tokens)
    with _lock:
        _running[token] = wrapper
    try:
        yield np.asarray(token, np.int64)
    finally:
        with _lock:
            _running.pop(token, None)
    wrapper.raise_error()
