"""Exceptions used inside traced code."""

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
