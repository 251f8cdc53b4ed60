"""Working precision: float64 by default, float32 on request.

nlsq never flips the global ``jax_enable_x64`` flag: its own calls into JAX run inside
``jax.enable_x64(True)``, a context manager, so 64-bit arrays are available to nlsq
whatever the user's setting and the user's setting is left as it was.
"""

from __future__ import annotations

import numpy as np

SUPPORTED_DTYPES = {"float64": np.float64, "float32": np.float32}


def resolve_dtype(dtype: object) -> type[np.floating]:
    """Map ``None``, ``'float64'``, ``'float32'`` or a NumPy/JAX float dtype to a type.

    Raises
    ------
    ValueError
        For any other dtype.
    """
    if dtype is None:
        return np.float64
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in SUPPORTED_DTYPES:
        raise ValueError(f"`dtype` must be 'float64' or 'float32', got {dtype!r}.")
    return SUPPORTED_DTYPES[name]
