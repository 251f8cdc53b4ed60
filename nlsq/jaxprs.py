"""Walking a traced program: the equations of a jaxpr and of the jaxprs they hold."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def all_equations(jaxpr: Any) -> Iterator[Any]:
    """Every equation of ``jaxpr``, each followed by those of the jaxprs it holds
    (the bodies of calls, loops and each branch of a conditional), depth first."""
    from jax.extend import core  # at the first trace: importing nlsq leaves it out

    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for inner in value if isinstance(value, tuple | list) else (value,):
                if isinstance(inner, core.ClosedJaxpr):
                    yield from all_equations(inner.jaxpr)
                elif isinstance(inner, core.Jaxpr):
                    yield from all_equations(inner)
