"""scipy's classes in nlsq's results and checks, imported when first needed.

Importing ``scipy.optimize`` takes about a quarter of a second, several times what the
rest of ``import nlsq`` costs, and a plain ``curve_fit`` needs none of it. An object
can only be an instance of a scipy class when the module defining that class has been
imported, so the type checks here look the module up in ``sys.modules`` and never
import it themselves.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


def _loaded_class(module: str, name: str) -> type | None:
    """``module.name`` when ``module`` is already imported, else None."""
    loaded = sys.modules.get(module)
    return None if loaded is None else getattr(loaded, name, None)


def _is_instance(obj: Any, module: str, name: str) -> bool:
    cls = _loaded_class(module, name)
    return cls is not None and isinstance(obj, cls)


def is_bounds(obj: Any) -> bool:
    """Whether ``obj`` is a ``scipy.optimize.Bounds``."""
    return _is_instance(obj, "scipy.optimize", "Bounds")


def is_sparse_matrix(obj: Any) -> bool:
    """Whether ``obj`` is a scipy sparse matrix or array."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and bool(sparse.issparse(obj))


def is_linear_operator(obj: Any) -> bool:
    """Whether ``obj`` is a ``scipy.sparse.linalg.LinearOperator``."""
    return _is_instance(obj, "scipy.sparse.linalg", "LinearOperator")


def optimize_result(**fields: Any) -> Any:
    """A ``scipy.optimize.OptimizeResult`` holding ``fields``."""
    return importlib.import_module("scipy.optimize").OptimizeResult(**fields)


def optimize_warning() -> type[Warning]:
    """The class ``scipy.optimize.OptimizeWarning``."""
    return importlib.import_module("scipy.optimize").OptimizeWarning
