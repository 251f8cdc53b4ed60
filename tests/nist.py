"""NIST StRD nonlinear regression problems: a parser for the ``.dat`` files and the models.

The 27 data files in ``tests/data/nist`` are the unmodified NIST Statistical Reference
Datasets for nonlinear least squares (https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml).
Each file holds the data, two starting points, the certified parameter values with their
standard deviations and the certified residual sum of squares.

The model functions are written by hand from the formula in each file header, using
``jax.numpy`` so that they can be traced by JAX.  They also accept NumPy arrays; evaluate
them with ``jax.enable_x64(True)`` (or with x64 enabled globally) to get float64 results.

Notes
-----
*Nelson* is the only problem with two predictors; its ``x`` has shape ``(2, m)``.  Its
model is stated for ``log(y)``, so :attr:`NistProblem.y` holds the logarithm of the
observed response for that problem (the certified values refer to ``log(y)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jax.numpy as jnp
import numpy as np

DATA_DIR = Path(__file__).parent / "data" / "nist"

#: The 27 problems, in NIST's order (by level of difficulty: lower, average, higher).
NAMES: tuple[str, ...] = (
    "Misra1a", "Chwirut2", "Chwirut1", "Lanczos3", "Gauss1", "Gauss2", "DanWood", "Misra1b",
    "Kirby2", "Hahn1", "Nelson", "MGH17", "Lanczos1", "Lanczos2", "Gauss3", "Misra1c",
    "Misra1d", "Roszman1", "ENSO",
    "MGH09", "Thurber", "BoxBOD", "Rat42", "MGH10", "Eckerle4", "Rat43", "Bennett5",
)  # fmt: skip

# Problems whose model describes log(y) rather than y.
_LOG_RESPONSE = frozenset({"Nelson"})


# --------------------------------------------------------------------------------------
# Models, transcribed from the "Model:" section of each file.
# --------------------------------------------------------------------------------------


def _misra1a(x, b1, b2):
    # y = b1*(1-exp[-b2*x])
    return b1 * (1 - jnp.exp(-b2 * x))


def _chwirut(x, b1, b2, b3):
    # y = exp[-b1*x]/(b2+b3*x)
    return jnp.exp(-b1 * x) / (b2 + b3 * x)


def _lanczos(x, b1, b2, b3, b4, b5, b6):
    # y = b1*exp(-b2*x) + b3*exp(-b4*x) + b5*exp(-b6*x)
    return b1 * jnp.exp(-b2 * x) + b3 * jnp.exp(-b4 * x) + b5 * jnp.exp(-b6 * x)


def _gauss(x, b1, b2, b3, b4, b5, b6, b7, b8):
    # y = b1*exp( -b2*x ) + b3*exp( -(x-b4)**2 / b5**2 ) + b6*exp( -(x-b7)**2 / b8**2 )
    return (
        b1 * jnp.exp(-b2 * x)
        + b3 * jnp.exp(-((x - b4) ** 2) / b5**2)
        + b6 * jnp.exp(-((x - b7) ** 2) / b8**2)
    )


def _danwood(x, b1, b2):
    # y = b1*x**b2
    return b1 * x**b2


def _misra1b(x, b1, b2):
    # y = b1 * (1-(1+b2*x/2)**(-2))
    return b1 * (1 - (1 + b2 * x / 2) ** (-2))


def _kirby2(x, b1, b2, b3, b4, b5):
    # y = (b1 + b2*x + b3*x**2) / (1 + b4*x + b5*x**2)
    return (b1 + b2 * x + b3 * x**2) / (1 + b4 * x + b5 * x**2)


def _cubic_ratio(x, b1, b2, b3, b4, b5, b6, b7):
    # Hahn1, Thurber: y = (b1+b2*x+b3*x**2+b4*x**3) / (1+b5*x+b6*x**2+b7*x**3)
    return (b1 + b2 * x + b3 * x**2 + b4 * x**3) / (1 + b5 * x + b6 * x**2 + b7 * x**3)


def _nelson(x, b1, b2, b3):
    # log[y] = b1 - b2*x1 * exp[-b3*x2]
    return b1 - b2 * x[0] * jnp.exp(-b3 * x[1])


def _mgh17(x, b1, b2, b3, b4, b5):
    # y = b1 + b2*exp[-x*b4] + b3*exp[-x*b5]
    return b1 + b2 * jnp.exp(-x * b4) + b3 * jnp.exp(-x * b5)


def _misra1c(x, b1, b2):
    # y = b1 * (1-(1+2*b2*x)**(-.5))
    return b1 * (1 - (1 + 2 * b2 * x) ** (-0.5))


def _misra1d(x, b1, b2):
    # y = b1*b2*x*((1+b2*x)**(-1))
    return b1 * b2 * x * ((1 + b2 * x) ** (-1))


def _roszman1(x, b1, b2, b3, b4):
    # y = b1 - b2*x - arctan[b3/(x-b4)]/pi
    return b1 - b2 * x - jnp.arctan(b3 / (x - b4)) / jnp.pi


def _enso(x, b1, b2, b3, b4, b5, b6, b7, b8, b9):
    # y = b1 + b2*cos( 2*pi*x/12 ) + b3*sin( 2*pi*x/12 )
    #        + b5*cos( 2*pi*x/b4 ) + b6*sin( 2*pi*x/b4 )
    #        + b8*cos( 2*pi*x/b7 ) + b9*sin( 2*pi*x/b7 )
    w = 2 * jnp.pi * x
    return (
        b1
        + b2 * jnp.cos(w / 12)
        + b3 * jnp.sin(w / 12)
        + b5 * jnp.cos(w / b4)
        + b6 * jnp.sin(w / b4)
        + b8 * jnp.cos(w / b7)
        + b9 * jnp.sin(w / b7)
    )


def _mgh09(x, b1, b2, b3, b4):
    # y = b1*(x**2+x*b2) / (x**2+x*b3+b4)
    return b1 * (x**2 + x * b2) / (x**2 + x * b3 + b4)


def _boxbod(x, b1, b2):
    # y = b1*(1-exp[-b2*x])
    return b1 * (1 - jnp.exp(-b2 * x))


def _rat42(x, b1, b2, b3):
    # y = b1 / (1+exp[b2-b3*x])
    return b1 / (1 + jnp.exp(b2 - b3 * x))


def _mgh10(x, b1, b2, b3):
    # y = b1 * exp[b2/(x+b3)]
    return b1 * jnp.exp(b2 / (x + b3))


def _eckerle4(x, b1, b2, b3):
    # y = (b1/b2) * exp[-0.5*((x-b3)/b2)**2]
    return (b1 / b2) * jnp.exp(-0.5 * ((x - b3) / b2) ** 2)


def _rat43(x, b1, b2, b3, b4):
    # y = b1 / ((1+exp[b2-b3*x])**(1/b4))
    return b1 / ((1 + jnp.exp(b2 - b3 * x)) ** (1 / b4))


def _bennett5(x, b1, b2, b3):
    # y = b1 * (b2+x)**(-1/b3)
    return b1 * (b2 + x) ** (-1 / b3)


MODELS: dict[str, Callable[..., jnp.ndarray]] = {
    "Misra1a": _misra1a,
    "Chwirut2": _chwirut,
    "Chwirut1": _chwirut,
    "Lanczos3": _lanczos,
    "Gauss1": _gauss,
    "Gauss2": _gauss,
    "DanWood": _danwood,
    "Misra1b": _misra1b,
    "Kirby2": _kirby2,
    "Hahn1": _cubic_ratio,
    "Nelson": _nelson,
    "MGH17": _mgh17,
    "Lanczos1": _lanczos,
    "Lanczos2": _lanczos,
    "Gauss3": _gauss,
    "Misra1c": _misra1c,
    "Misra1d": _misra1d,
    "Roszman1": _roszman1,
    "ENSO": _enso,
    "MGH09": _mgh09,
    "Thurber": _cubic_ratio,
    "BoxBOD": _boxbod,
    "Rat42": _rat42,
    "MGH10": _mgh10,
    "Eckerle4": _eckerle4,
    "Rat43": _rat43,
    "Bennett5": _bennett5,
}


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NistProblem:
    """One NIST StRD nonlinear regression problem.

    Attributes
    ----------
    name : str
        Dataset name, e.g. ``"Misra1a"``.
    x : numpy.ndarray
        Predictor values, float64, shape ``(m,)`` for one predictor, ``(k, m)`` for ``k > 1``.
    y : numpy.ndarray
        Response values, float64, shape ``(m,)``.  For Nelson this is ``log`` of the
        observed response, as the model is stated for ``log(y)``.
    start1, start2 : numpy.ndarray
        The two NIST starting points, shape ``(n,)``.
    certified_params : numpy.ndarray
        Certified parameter values, shape ``(n,)``.
    certified_stderr : numpy.ndarray
        Certified standard deviations of the parameters, shape ``(n,)``.
    certified_rss : float
        Certified residual sum of squares.
    difficulty : str
        NIST level of difficulty: ``"Lower"``, ``"Average"`` or ``"Higher"``.
    model : callable
        ``model(x, b1, ..., bn)``, written with ``jax.numpy``.
    formula : str
        The model formula as printed in the file header, for reference.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    start1: np.ndarray
    start2: np.ndarray
    certified_params: np.ndarray
    certified_stderr: np.ndarray
    certified_rss: float
    difficulty: str
    model: Callable[..., jnp.ndarray]
    formula: str

    @property
    def n_params(self) -> int:
        """Number of model parameters."""
        return self.certified_params.size

    @property
    def n_obs(self) -> int:
        """Number of observations."""
        return self.y.size


def _line_range(header: str, label: str) -> tuple[int, int]:
    """Return the 0-based, end-exclusive line range stated in the ``File Format`` block."""
    match = re.search(rf"{label}\s*\(lines\s+(\d+)\s+to\s+(\d+)\)", header)
    if match is None:
        raise ValueError(f"no line range for {label!r}")
    return int(match.group(1)) - 1, int(match.group(2))


def _search(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    match = re.search(pattern, text, flags)
    if match is None:
        raise ValueError(f"pattern {pattern!r} not found")
    return match


def parse(path: str | Path) -> NistProblem:
    """Parse one NIST StRD nonlinear regression ``.dat`` file.

    Parameters
    ----------
    path : str or pathlib.Path
        Path of the ``.dat`` file; the file stem is the dataset name and selects the model.

    Returns
    -------
    NistProblem
        The parsed problem.

    Raises
    ------
    ValueError
        If the file is malformed or inconsistent with its own header (parameter count,
        observation count, predictor count, degrees of freedom).
    """
    path = Path(path)
    name = path.stem
    lines = path.read_text().splitlines()
    header = "\n".join(lines[:60])

    # Starting values and certified values: "b1 = start1 start2 certified stderr".
    p_lo, p_hi = _line_range(header, "Certified Values")
    rows = []
    for line in lines[p_lo:p_hi]:
        match = re.match(r"\s*b(\d+)\s*=(.*)", line)
        if match:
            if int(match.group(1)) != len(rows) + 1:
                raise ValueError(f"{name}: parameters out of order at {line!r}")
            rows.append([float(tok) for tok in match.group(2).split()])
    params = np.array(rows, dtype=np.float64)
    n = int(_search(r"(\d+)\s+Parameters", header).group(1))
    if params.shape != (n, 4):
        raise ValueError(f"{name}: expected {n} parameter rows of 4 numbers, got {params.shape}")

    def number_after(label: str) -> float:
        return float(_search(rf"{label}:\s*(\S+)", header).group(1))

    certified_rss = number_after("Residual Sum of Squares")

    # Data block.
    d_lo, d_hi = _line_range(header, "Data")
    data = np.array([[float(tok) for tok in line.split()] for line in lines[d_lo:d_hi]])
    m = int(number_after("Number of Observations"))
    k = int(_search(r"(\d+)\s+Predictor", header).group(1))
    if data.shape != (m, k + 1):
        raise ValueError(f"{name}: expected data of shape {(m, k + 1)}, got {data.shape}")
    # Rat43.dat states 9 degrees of freedom where m - n = 11 (a typo in the NIST file: its
    # residual standard deviation is sqrt(rss / 11)), so check the standard deviation instead.
    residual_sd = number_after("Residual Standard Deviation")
    if not np.isclose(np.sqrt(certified_rss / (m - n)), residual_sd, rtol=1e-9, atol=0):
        raise ValueError(f"{name}: residual standard deviation does not match rss / (m - n)")
    y = data[:, 0]
    x = data[:, 1] if k == 1 else np.ascontiguousarray(data[:, 1:].T)
    if name in _LOG_RESPONSE:
        y = np.log(y)

    difficulty = _search(r"(Lower|Average|Higher) Level of Difficulty", header).group(1)

    # The formula: the lines of the "Model:" block after the class and parameter-count lines.
    model_block = _search(r"\nModel:(.*?)Starting Values", header, re.DOTALL | re.IGNORECASE)
    formula_lines = [ln.strip() for ln in model_block.group(1).splitlines()[2:] if ln.strip()]
    formula = " ".join(formula_lines)

    start1, start2, certified_params, certified_stderr = (
        np.ascontiguousarray(col) for col in params.T
    )
    for array in (x, y, start1, start2, certified_params, certified_stderr):
        array.setflags(write=False)  # problems are cached and shared between tests

    return NistProblem(
        name=name,
        x=x,
        y=y,
        start1=start1,
        start2=start2,
        certified_params=certified_params,
        certified_stderr=certified_stderr,
        certified_rss=certified_rss,
        difficulty=difficulty,
        model=MODELS[name],
        formula=formula,
    )


@cache
def load(name: str) -> NistProblem:
    """Load one problem by name (e.g. ``"Misra1a"``) from ``tests/data/nist``.

    Parameters
    ----------
    name : str
        Dataset name, one of :data:`NAMES`.

    Returns
    -------
    NistProblem
        The parsed problem (cached; treat the arrays as read-only).
    """
    if name not in MODELS:
        raise KeyError(f"unknown NIST problem {name!r}")
    return parse(DATA_DIR / f"{name}.dat")


def load_all() -> list[NistProblem]:
    """Load all 27 problems, in NIST's order of difficulty.

    Returns
    -------
    list of NistProblem
        One entry per name in :data:`NAMES`.
    """
    return [load(name) for name in NAMES]
