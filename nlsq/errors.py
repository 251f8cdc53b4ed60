"""Exceptions of nlsq: input errors found while tracing, bad chunks of a large fit, and
out-of-memory errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class TraceTimeInputError(ValueError):
    """Invalid user input found while tracing the solver.

    JAX attaches notes about its filtered traceback to exceptions that cross a ``jit``
    boundary; :func:`plain_input_errors` re-raises these as the plain exception type a
    scipy user expects (``error_type``), with the same message.
    """

    def __init__(self, message: str, error_type: type[Exception] = ValueError) -> None:
        super().__init__(message)
        self.error_type = error_type


@contextlib.contextmanager
def plain_input_errors() -> Iterator[None]:
    """Re-raise :class:`TraceTimeInputError` as its plain ``error_type``."""
    try:
        yield
    except TraceTimeInputError as error:
        raise error.error_type(str(error)) from None


class ChunkError(ValueError):
    """A chunk of the data is invalid (non-finite values, wrong shape)."""


class FitMemoryError(MemoryError):
    """The device ran out of memory during a fit.

    Raised from JAX's ``RESOURCE_EXHAUSTED`` runtime error (kept as ``__cause__``),
    with a message that says how to fit in less memory.

    Notes
    -----
    XLA:CPU (jaxlib 0.10) reports a failed allocation of a program's working arrays,
    but waits forever when it cannot allocate one of its outputs (for the in-memory fit,
    the ``m x n`` Jacobian). The memory budget (setting ``large.memory_budget``) keeps
    fits that large out of memory by chunking them; raising it far above the memory a
    process may use (``ulimit -v``, a container's limit) gives up that protection.
    """


#: How the XLA runtime reports a failed allocation (CPU and GPU alike).
_OUT_OF_MEMORY_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is the XLA runtime's out-of-memory error."""
    return isinstance(error, RuntimeError) and any(
        marker in str(error) for marker in _OUT_OF_MEMORY_MARKERS
    )


@contextlib.contextmanager
def out_of_memory_advice(advice: str) -> Iterator[None]:
    """Re-raise the runtime's out-of-memory error as :class:`FitMemoryError`.

    Parameters
    ----------
    advice : str
        What the user can do (appended to the message).
    """
    try:
        yield
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        first_line = str(error).strip().splitlines()[0]
        raise FitMemoryError(f"The fit ran out of memory ({first_line}). {advice}") from error
