"""Golden outputs of nlsq's public API, to prove that a refactor changes none of them.

Before a refactor, ``record`` runs a fixed grid of calls into the public API
(``nlsq.least_squares``, ``nlsq.curve_fit``, ``nlsq.CurveFit``,
``nlsq.curve_fit_batch``, ``nlsq.curve_fit_large`` and the ``FitResult`` and
``BatchResult`` they return) on the unmodified code and writes every output to a
JSON file. After the refactor, ``check`` (or ``record`` and ``compare``) runs the
same grid on the new code, on the same machine, and reports every output that is
not reproduced bit for bit.

Usage::

    python tools/golden.py record OUT.json [--only SUBSTRING] [--jobs N]
    python tools/golden.py compare BASE.json NEW.json [--only SUBSTRING]
    python tools/golden.py check BASE.json [--only SUBSTRING] [--jobs N]

``compare`` and ``check`` print each case whose record differs (its name, the
field, the base and the new value), cases present in one file only, and a summary;
they exit with status 1 if anything differs. To record the pristine code, put its
checkout first on the path: ``PYTHONPATH=/path/to/base python tools/golden.py
record base.json``.

Notes
-----
Every case is one call (or a few) with deterministic data (a seeded
``np.random.default_rng``, float64, 3 to 2000 points). Its record holds:

* ``result``: the returned values, encoded exactly: floats as ``float.hex()``,
  arrays as ``{"dtype", "shape", "hex"}`` (or ``"values"`` for integers and
  booleans), ints, strings and bools as they are, containers with their type.
  A ``FitResult`` or ``BatchResult`` is recorded field by field (each property and
  method output, with an exception recorded in place of a field that raises).
* or ``raised`` and ``message``: the qualified type and the text of the exception.
* ``warnings``: ``[category, message, origin]`` of every warning, with
  ``warnings.simplefilter("always")``; ``origin`` is where the warning points
  (``caller``: this script, i.e. the user's code; ``nlsq``; ``other``).
* ``stdout``: what the call printed (``verbose``).

Timings, compile and cache statistics (``cache_stats``, ``cache_info``) and object
addresses are never recorded. A failing case is recorded and the run goes on. Cases
whose outputs are known to change in the planned refactor are named ``drift/...``.
The ``meta`` block (library versions, ``NLSQ_*``/``XLA_*``/``JAX_*`` variables)
is compared too, as a note only: a bit-for-bit comparison is meaningful on the
same machine and software only.

The cases are split into shards by the first part of their names (``least_squares``,
``curve_fit``, ``CurveFit``, ``curve_fit_batch``, ``curve_fit_large``, ``bad``,
``drift``). Each shard runs in a fresh Python process, ``--jobs`` of them at a time,
with its cases in a fixed order: what a process does once (``NumPyModelWarning`` for
the first fit of each NumPy model, compiled programs) depends only on the shard, so
the records do not depend on ``--jobs``. ``--only`` runs a subset for a quick look;
a case's record may then differ from the full run's only in such once-per-process
outputs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import functools
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy
import scipy.sparse
from scipy.optimize import Bounds
from scipy.sparse.linalg import aslinearoperator

import nlsq
import nlsq.config

FORMAT = 1
Case = tuple[str, Callable[[], Any]]
call = functools.partial

# --- encoding ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Raised:
    """An exception raised where a value was expected (a field of a result)."""

    error: Exception


def qualified_name(kind: type) -> str:
    """``module.QualifiedName`` of a type."""
    return f"{kind.__module__}.{kind.__qualname__}"


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def plain_text(text: str) -> str:
    """``text`` without object addresses (``<function f at 0x7f...>``)."""
    return _ADDRESS.sub(" at 0x?", text)


def exception_record(error: BaseException) -> dict[str, str]:
    return {"raised": qualified_name(type(error)), "message": plain_text(str(error))}


def attempt(function: Callable[[], Any]) -> Any:
    """``function()``, or :class:`Raised` holding what it raised."""
    try:
        return function()
    except Exception as error:  # noqa: BLE001 - the exception is the recorded output
        return Raised(error)


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """An array, exactly: dtype, shape and every element (flattened)."""
    out: dict[str, Any] = {"dtype": str(array.dtype), "shape": list(array.shape)}
    flat = array.ravel()
    if array.dtype.kind == "f":
        out["hex"] = [float(v).hex() for v in flat.tolist()]
    elif array.dtype.kind == "c":
        out["hex"] = [[v.real.hex(), v.imag.hex()] for v in flat.tolist()]
    elif array.dtype.kind in "biuU":
        out["values"] = flat.tolist()
    else:
        out["items"] = [encode(v) for v in flat.tolist()]
    return out


def encode_scalar(value: np.generic) -> dict[str, Any]:
    """A NumPy scalar with its dtype."""
    item = value.item()
    if isinstance(item, float):
        return {"np": value.dtype.name, "hex": item.hex()}
    if isinstance(item, complex):
        return {"np": value.dtype.name, "hex": [item.real.hex(), item.imag.hex()]}
    return {"np": value.dtype.name, "value": item}


def encode_mapping(value: dict) -> dict[str, Any]:
    """A dict (or ``OptimizeResult``) with its type and key order; no cache statistics."""
    items = []
    for key, item in value.items():
        encoded = {"omitted": "cache statistics"} if key == "cache_stats" else encode(item)
        items.append([encode(key), encoded])
    return {"dict": qualified_name(type(value)), "items": items}


def encode(value: Any) -> Any:
    """A JSON value that holds ``value`` exactly (see the module docstring)."""
    if value is None or isinstance(value, bool | str):
        return plain_text(value) if isinstance(value, str) else value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return {"float": value.hex()}
    if isinstance(value, complex):
        return {"complex": [value.real.hex(), value.imag.hex()]}
    if isinstance(value, np.generic):
        return encode_scalar(value)
    if isinstance(value, np.ndarray):
        return encode_array(value)
    if isinstance(value, jax.Array):
        return {"jax_array": encode_array(np.asarray(value))}
    if isinstance(value, Raised):
        return exception_record(value.error)
    if isinstance(value, nlsq.FitResult):
        return encode(describe_fit_result(value))
    if isinstance(value, nlsq.BatchResult):
        return encode(describe_batch_result(value))
    if isinstance(value, list | tuple):
        return {qualified_name(type(value)): [encode(v) for v in value]}
    if isinstance(value, dict):
        return encode_mapping(value)
    if callable(value):
        return {"callable": qualified_name(type(value)), "name": getattr(value, "__name__", "")}
    return {"object": qualified_name(type(value))}


FIT_RESULT_FIELDS = (
    "popt",
    "pcov",
    "status",
    "message",
    "success",
    "nfev",
    "njev",
    "cost",
    "optimality",
    "active_mask",
    "covariance_warning",
    "n_points",
    "absolute_sigma",
    "model",
    "residuals",
    "jac",
    "perr",
    "param_names",
    "dof",
    "chisqr",
    "redchi",
    "rsquared",
    "best_fit",
    "correlation",
)
FIT_DATA_FIELDS = ("xdata", "ydata", "sigma_kind", "transform", "sigma")


def describe_fit_data(data: Any) -> Any:
    if data is None:
        return None
    fields = {name: attempt(lambda name=name: getattr(data, name)) for name in FIT_DATA_FIELDS}
    return {"class": qualified_name(type(data)), **fields}


def describe_fit_result(result: Any) -> dict[str, Any]:
    """Every public field and method output of a ``FitResult`` (no cache statistics)."""
    out: dict[str, Any] = {"class": qualified_name(type(result))}
    for name in FIT_RESULT_FIELDS:
        out[name] = attempt(lambda name=name: getattr(result, name))
    out["data"] = attempt(lambda: describe_fit_data(result.data))
    out["conf_int()"] = attempt(result.conf_int)
    out["conf_int(alpha=0.1)"] = attempt(lambda: result.conf_int(alpha=0.1))
    out["summary()"] = attempt(result.summary)
    out["summary(0.5, 0.1)"] = attempt(lambda: result.summary(0.5, 0.1))
    out["popt, pcov = result"] = attempt(lambda: tuple(result))
    return out


BATCH_RESULT_FIELDS = (
    "popt",
    "pcov",
    "status",
    "success",
    "nfev",
    "njev",
    "cost",
    "optimality",
    "active_mask",
    "n_points",
    "covariance_warning",
    "errors",
    "messages",
    "method",
    "chunks",
    "perr",
    "n_converged",
)


def describe_batch_result(result: Any) -> dict[str, Any]:
    """Every public field and method output of a ``BatchResult`` (no cache statistics)."""
    out: dict[str, Any] = {"class": qualified_name(type(result))}
    for name in BATCH_RESULT_FIELDS:
        out[name] = attempt(lambda name=name: getattr(result, name))
    out["len()"] = attempt(lambda: len(result))
    out["message(i)"] = attempt(lambda: [result.message(i) for i in range(len(result))])
    out["status_counts()"] = attempt(result.status_counts)
    out["summary()"] = attempt(result.summary)
    out["repr()"] = attempt(lambda: repr(result))
    out["popt, pcov = result"] = attempt(lambda: tuple(result))
    return out


# --- running cases -------------------------------------------------------------------


def warning_origin(filename: str) -> str:
    """Where a warning points: this script (the caller), nlsq, or elsewhere."""
    path = os.path.abspath(filename)
    if path == os.path.abspath(__file__):
        return "caller"
    if path.startswith(os.path.dirname(os.path.abspath(nlsq.__file__)) + os.sep):
        return "nlsq"
    return "other"


def run_case(thunk: Callable[[], Any]) -> dict[str, Any]:
    """Run one case; its outputs, or its exception, its warnings and its stdout."""
    stdout = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout):
        warnings.simplefilter("always")
        try:
            record: dict[str, Any] = {"result": encode(thunk())}
        except Exception as error:  # noqa: BLE001 - a failing case is recorded, never fatal
            record = exception_record(error)
    record["warnings"] = [
        [qualified_name(w.category), plain_text(str(w.message)), warning_origin(w.filename)]
        for w in caught
    ]
    record["stdout"] = plain_text(stdout.getvalue())
    return record


def meta() -> dict[str, Any]:
    """The software and settings a bit-for-bit comparison depends on."""
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(("NLSQ_", "XLA_", "JAX_"))}
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "jax": jax.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "devices": [str(d.device_kind) for d in jax.devices()],
        "environment": env,
        "config_file_exists": os.path.exists(nlsq.config.config_path()),
    }


def record_shard(shard: str, only: str | None) -> dict[str, Any]:
    """Run the cases of one shard (those whose name contains ``only``) in this process."""
    return {
        name: run_case(thunk) for name, thunk in shard_cases(shard) if only is None or only in name
    }


def failed_shard(shard: str, only: str | None, status: int) -> dict[str, Any]:
    """The record of every case of a shard whose process died."""
    message = f"the process of shard {shard!r} exited with status {status}"
    return {
        name: {"raised": "golden.ShardFailed", "message": message, "warnings": [], "stdout": ""}
        for name, _ in shard_cases(shard)
        if only is None or only in name
    }


def run_shard(shard: str, only: str | None) -> dict[str, Any]:
    """Run one shard in a fresh Python process (same interpreter and environment)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "shard.json")
        command = [sys.executable, os.path.abspath(__file__), "shard", shard, out]
        status = subprocess.run(
            command + (["--only", only] if only is not None else []),
            stdout=subprocess.DEVNULL,
            check=False,
        ).returncode
        cases = load(out) if status == 0 else failed_shard(shard, only, status)
    elapsed = time.perf_counter() - start
    print(f"shard {shard}: {len(cases)} cases in {elapsed:.1f} s", file=sys.stderr)
    return cases


def record_all(only: str | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run every case (those whose name contains ``only``) and return the records.

    Each shard runs in its own fresh process, ``jobs`` at a time; the records do not
    depend on ``jobs``.
    """
    print(f"nlsq from {os.path.dirname(nlsq.__file__)}", file=sys.stderr)
    start = time.perf_counter()
    shards = [s for s in SHARDS if any(only is None or only in n for n, _ in shard_cases(s))]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda shard: run_shard(shard, only), shards))
    cases = {name: record for result in results for name, record in result.items()}
    elapsed = time.perf_counter() - start
    print(f"recorded {len(cases)} cases in {elapsed:.1f} s", file=sys.stderr)
    return {"format": FORMAT, "meta": meta(), "cases": cases}


# --- comparing -----------------------------------------------------------------------


def is_array(value: Any) -> bool:
    return isinstance(value, dict) and "dtype" in value and "shape" in value


def is_scalar(value: Any) -> bool:
    """Whether ``value`` encodes one number (a float, a complex or a NumPy scalar)."""
    return isinstance(value, dict) and (
        value.keys() in ({"float"}, {"complex"}) or value.keys() in ({"np", "hex"}, {"np", "value"})
    )


def element(values: list, index: int) -> str:
    value = values[index]
    if isinstance(value, str) and value.startswith(("0x", "-0x", "inf", "-inf", "nan")):
        return repr(float.fromhex(value))
    return render(value)


def array_difference(base: dict, new: dict) -> str:
    """One line on how two encoded arrays differ."""
    if (base["dtype"], base["shape"]) != (new["dtype"], new["shape"]):
        return f"{base['dtype']}{tuple(base['shape'])} vs {new['dtype']}{tuple(new['shape'])}"
    key = next(k for k in ("hex", "values", "items") if k in base)
    pairs = list(zip(base[key], new.get(key, []), strict=False))
    differ = [i for i, (b, n) in enumerate(pairs) if b != n]
    if not differ:
        return f"element encoding differs ({key})"
    first = differ[0]
    where = tuple(int(i) for i in np.unravel_index(first, base["shape"])) if base["shape"] else ()
    return (
        f"{len(differ)} of {len(pairs)} elements differ; first at {where}: "
        f"{element(base[key], first)} vs {element(new[key], first)}"
    )


def render(value: Any, width: int = 70) -> str:
    """A short text for an encoded value."""
    if isinstance(value, dict) and "float" in value:
        text = repr(float.fromhex(value["float"]))
    elif isinstance(value, dict) and "np" in value and isinstance(value.get("hex"), str):
        text = f"{value['np']}({float.fromhex(value['hex'])!r})"
    elif is_array(value):
        text = f"array {value['dtype']}{tuple(value['shape'])}"
    else:
        text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def differences(base: Any, new: Any, path: str) -> Iterator[str]:
    """``path: base vs new`` for each leaf where two encoded values differ."""
    if base == new:
        return
    if is_array(base) and is_array(new):
        yield f"{path}: {array_difference(base, new)}"
    elif is_scalar(base) and is_scalar(new):
        yield f"{path}: {render(base)} vs {render(new)}"
    elif isinstance(base, dict) and isinstance(new, dict) and "items" in base and "items" in new:
        yield from item_differences(base, new, path)
    elif isinstance(base, dict) and isinstance(new, dict) and base.keys() == new.keys():
        for key in base:
            yield from differences(base[key], new[key], f"{path}.{key}" if path else key)
    elif isinstance(base, list) and isinstance(new, list) and len(base) == len(new):
        for index, (b, n) in enumerate(zip(base, new, strict=True)):
            yield from differences(b, n, f"{path}[{index}]")
    else:
        yield f"{path}: {render(base)} vs {render(new)}"


def item_differences(base: dict, new: dict, path: str) -> Iterator[str]:
    """Differences of two encoded dicts, by key."""
    if base.get("dict") != new.get("dict"):
        yield f"{path}: type {base.get('dict')} vs {new.get('dict')}"
    base_keys = [key for key, _ in base["items"]]
    new_keys = [key for key, _ in new["items"]]
    if base_keys != new_keys:
        yield f"{path}: keys {render(base_keys)} vs {render(new_keys)}"
        return
    for (key, b), (_, n) in zip(base["items"], new["items"], strict=True):
        yield from differences(b, n, f"{path}[{key if isinstance(key, str) else render(key)}]")


def record_differences(base: dict, new: dict) -> Iterator[str]:
    """Differences of two case records, field by field (``result`` or ``raised``, ...)."""
    for key in {**base, **new}:
        if key not in base or key not in new:
            present = base if key in base else new
            text = render(present[key])
            yield f"{key}: {text} vs (absent)" if key in base else f"{key}: (absent) vs {text}"
        else:
            yield from differences(base[key], new[key], key)


def report(base: dict, new: dict, only: str | None = None, shown: int = 4) -> int:
    """Print how ``new`` differs from ``base``; the number of cases that differ."""
    for line in differences(base.get("meta"), new.get("meta"), "meta"):
        print(f"note: {line}")
    base_cases, new_cases = base["cases"], new["cases"]
    names = [n for n in {**base_cases, **new_cases} if only is None or only in n]
    differing = 0
    for name in names:
        if name not in new_cases or name not in base_cases:
            differing += 1
            print(f"ONLY IN {'BASE' if name in base_cases else 'NEW'}: {name}")
            continue
        lines = list(record_differences(base_cases[name], new_cases[name]))
        if lines:
            differing += 1
            print(f"DIFFERS: {name}")
            for line in lines[:shown]:
                print(f"    {line}")
            if len(lines) > shown:
                print(f"    ... and {len(lines) - shown} more")
    print(f"{differing} of {len(names)} cases differ")
    return differing


# --- models and data -----------------------------------------------------------------

SEED = 20240611


def rng(stream: int) -> np.random.Generator:
    return np.random.default_rng(SEED + stream)


def exp_jax(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def exp_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def exp_jac_jax(x, a, b, c):
    e = jnp.exp(-b * x)
    return jnp.stack([e, -a * x * e, jnp.ones_like(x)], axis=1)


def exp_jac_np(x, a, b, c):
    e = np.exp(-b * x)
    return np.stack([e, -a * x * e, np.ones_like(x)], axis=1)


def exp_jac_t_jax(x, a, b, c):
    """The Jacobian transposed, for ``col_deriv=True``."""
    return exp_jac_jax(x, a, b, c).T


def plane_jax(x, a, b, c):
    return a * x[0] + b * jnp.sin(x[1]) + c


def plane_np(x, a, b, c):
    return a * x[0] + b * np.sin(x[1]) + c


def line(x, a, b):
    return a * x + b


def quadratic(x, a, b):
    return a * x**2 + b * x


def cumulative_jax(x, a, b, c):
    """Not pointwise: each value depends on every earlier point."""
    return a * jnp.cumsum(x) / x.size + b * x + c


def varargs_model(x, *p):
    return p[0] * x


def complex_jax(x, a, b):
    return (a * x + b) * (1 + 1j)


def short_jax(x, a, b):
    return (a * x + b)[:5]


def matrix_jax(x, a, b):
    return jnp.stack([a * x + b, a * x])


def raising_np(x, a, b):
    raise ZeroDivisionError("raised inside the model")


def raising_later_np(x, a, b):
    if a > 1.5:
        raise ArithmeticError(f"the model refuses a = {a}")
    return a * x + b


def raising_jax(x, a, b):
    raise KeyError("a column the model looks up is missing")


def frame_model(x, a, b):
    return a * np.asarray(x) + b


def res_jax(p, x, y):
    return p[0] * jnp.exp(-p[1] * x) + p[2] - y


def res_np(p, x, y):
    return p[0] * np.exp(-p[1] * x) + p[2] - y


def res_jac_jax(p, x, y):
    return exp_jac_jax(x, *p)


def res_jac_np(p, x, y):
    return exp_jac_np(x, *p)


def res_kw_jax(p, x, y, scale=1.0, power=1):
    return scale * (p[0] * jnp.exp(-p[1] * x) ** power + p[2] - y)


def res_kw_np(p, x, y, scale=1.0, power=1):
    return scale * (p[0] * np.exp(-p[1] * x) ** power + p[2] - y)


def res_scalar_jax(p):
    return p[0] * X - 2.0 * X


def res_2d_jax(p, x, y):
    return jnp.stack([p[0] * x - y, p[1] * x])


def res_2d_np(p, x, y):
    return np.stack([p[0] * x - y, p[1] * x])


def res_short_jax(p):
    return jnp.array([p[0] - 1.0])


def res_short_np(p):
    return np.array([p[0] - 1.0])


def res_jac_wrong_jax(p, x, y):
    return jnp.ones((x.size, 2))


def res_jac_wrong_np(p, x, y):
    return np.ones((x.size, 2))


def res_jac_sparse(p, x, y):
    return scipy.sparse.csr_matrix(res_jac_np(p, x, y))


def res_jac_operator(p, x, y):
    return aslinearoperator(res_jac_np(p, x, y))


def res_complex_jax(p, x, y):
    return (p[0] * x + p[1] - y) * (1 + 1j)


def res_complex_np(p, x, y):
    return (p[0] * x + p[1] - y) * (1 + 1j)


def res_raising_np(p, x, y):
    raise ZeroDivisionError("raised inside the residuals")


@jax.custom_vjp
def reverse_only_exp(v):
    return jnp.exp(v)


reverse_only_exp.defvjp(lambda v: (jnp.exp(v), jnp.exp(v)), lambda r, g: (g * r,))


def res_reverse_only(p, x, y):
    return p[0] * reverse_only_exp(-p[1] * x) + p[2] - y


def rho_jax(z):
    """A Cauchy-like loss written with jax.numpy."""
    t = 1 + z
    return jnp.stack([jnp.log1p(z), 1 / t, -1 / t**2])


def rho_np(z):
    t = 1 + z
    return np.stack([np.log1p(z), 1 / t, -1 / t**2])


def rho_wrong_shape(z):
    return jnp.stack([z, z])


T_SQRT = np.linspace(0.0, 1.0, 20)
Y_SQRT = 0.1 * T_SQRT + 0.3


def res_sqrt(p):
    """NaN for ``p[0] < 0``, which the iterations visit."""
    return jnp.sqrt(p[0]) * T_SQRT + p[1] - Y_SQRT


X = np.linspace(0.0, 4.0, 60)
Y = exp_np(X, 2.5, 1.3, 0.5) + 0.05 * rng(0).standard_normal(X.size)
Y_OUT = Y.copy()
Y_OUT[[7, 23, 41]] += [1.5, -1.0, 2.0]
P0 = np.array([1.5, 1.0, 0.2])
LB = np.array([0.0, 0.0, 0.0])
UB = np.array([2.0, 5.0, 5.0])
SIGMA_1D = 0.05 * (1.0 + rng(1).random(X.size))
SIGMA_2D = np.outer(SIGMA_1D, SIGMA_1D) * 0.3 ** np.abs(np.subtract.outer(range(60), range(60)))
Y_NAN = Y.copy()
Y_NAN[[4, 30]] = np.nan
X_NAN = X.copy()
X_NAN[12] = np.nan
X_INF = X.copy()
X_INF[3] = np.inf

X_PLANE = np.vstack([np.linspace(0.0, 1.0, 80), np.linspace(-1.0, 2.0, 80) ** 2])
Y_PLANE = plane_np(X_PLANE, 1.5, -0.7, 0.3) + 0.02 * rng(2).standard_normal(80)

X_LINE = np.linspace(0.0, 1.0, 20)
Y_LINE = 2.0 * X_LINE + 1.0 + 0.01 * np.sin(7 * X_LINE)

X_BROADCAST = np.arange(10.0)
BROADCAST_TARGET = 4.7 * X_BROADCAST**2 + 3.5 * X_BROADCAST + rng(3).random(10)


def broadcast_model(x, a, b):
    """scipy's test_broadcast_y: the model subtracts the data itself."""
    return a * x**2 + b * x - BROADCAST_TARGET


X_BATCH = np.linspace(0.0, 4.0, 50)
P_BATCH = np.column_stack(
    [np.linspace(1.0, 3.0, 6), np.linspace(0.5, 2.0, 6), np.linspace(-0.5, 0.5, 6)]
)
Y_BATCH = np.stack([exp_np(X_BATCH, *p) for p in P_BATCH]) + 0.03 * rng(4).standard_normal((6, 50))
SIGMA_BATCH = 0.03 * (1.0 + rng(5).random((6, 50)))
COV_BATCH = np.diag(SIGMA_BATCH[0] ** 2) + 1e-5
P0_BATCH = P_BATCH * 0.8 + 0.1
LENGTHS = (50, 40, 30, 45, 50, 35)
MASK_BATCH = rng(6).random((6, 50)) > 0.2
Y_BATCH_NAN = Y_BATCH.copy()
Y_BATCH_NAN[2, [5, 17]] = np.nan
X_PLANE_BATCH = X_PLANE[:, :50]
Y_PLANE_BATCH = np.stack([plane_np(X_PLANE_BATCH, *p) for p in P_BATCH[:, [0, 1, 2]]])

X_LARGE = np.linspace(0.0, 10.0, 2000)
Y_LARGE = exp_np(X_LARGE, 3.0, 0.4, 1.0) + 0.05 * rng(7).standard_normal(2000)
Y_LARGE_OUT = Y_LARGE.copy()
Y_LARGE_OUT[::97] += 1.0
SIGMA_LARGE = 0.05 * (1.0 + rng(8).random(2000))
P0_LARGE = np.array([2.0, 0.5, 0.5])
LB_LARGE = np.array([0.0, 0.0, 0.0])
UB_LARGE = np.array([2.5, 5.0, 5.0])
X_PLANE_LARGE = np.vstack([np.linspace(0.0, 1.0, 2000), np.linspace(-1.0, 2.0, 2000) ** 2])
Y_PLANE_LARGE = plane_np(X_PLANE_LARGE, 1.5, -0.7, 0.3) + 0.02 * rng(9).standard_normal(2000)
Y_LARGE_NAN = Y_LARGE.copy()
Y_LARGE_NAN[1234] = np.nan


def chunk_source():
    for start in range(0, 2000, 500):
        yield X_LARGE[start : start + 500], Y_LARGE[start : start + 500]


def chunk_source_sigma():
    for start in range(0, 2000, 500):
        stop = start + 500
        yield X_LARGE[start:stop], Y_LARGE[start:stop], SIGMA_LARGE[start:stop]


def chunk_source_empty():
    return iter(())


def chunk_source_partial_sigma():
    yield X_LARGE[:500], Y_LARGE[:500], SIGMA_LARGE[:500]
    yield X_LARGE[500:1000], Y_LARGE[500:1000]


def chunk_source_bad_item():
    yield [1.0, 2.0, 3.0, 4.0]


class ArrayLike:
    """A minimal pandas-like container: only ``__array__``."""

    def __init__(self, values: Any) -> None:
        self._values = np.asarray(values)

    def __array__(self, dtype=None, copy=None):
        return self._values if dtype is None else self._values.astype(dtype)


# --- least_squares ---------------------------------------------------------------------

LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")
X_SCALES = {"1.0": 1.0, "array": np.array([2.0, 1.0, 0.5]), "jac": "jac"}
BOUNDS = {"none": (-np.inf, np.inf), "box": (LB, UB)}
LS_MODELS = {"jax": (res_jax, res_jac_jax), "numpy": (res_np, res_jac_np)}
METHODS = ("trf", "dogbox", "lm")


def least_squares_grid() -> Iterator[Case]:
    """method x bounds x loss x x_scale, for JAX and NumPy residuals."""
    for model, (fun, _) in LS_MODELS.items():
        for method in METHODS:
            for bounds_name, bounds in BOUNDS.items():
                for loss in LOSSES:
                    if method == "lm" and (bounds_name != "none" or loss != "linear"):
                        continue
                    for scale_name, x_scale in X_SCALES.items():
                        name = (
                            f"least_squares/{method}/bounds={bounds_name}/loss={loss}/"
                            f"x_scale={scale_name}/model={model}"
                        )
                        yield (
                            name,
                            call(
                                nlsq.least_squares,
                                fun,
                                P0,
                                bounds=bounds,
                                method=method,
                                loss=loss,
                                x_scale=x_scale,
                                args=(X, Y_OUT),
                            ),
                        )


def least_squares_options() -> Iterator[Case]:
    """Jacobians, evaluation budgets, argument passing and the other options."""
    ls = nlsq.least_squares
    data = {"args": (X, Y_OUT)}
    for model, (fun, jac) in LS_MODELS.items():
        for method in METHODS:
            prefix = f"least_squares/{method}"
            yield (
                f"{prefix}/jac=callable/model={model}",
                call(ls, fun, P0, jac, method=method, **data),
            )
            yield (
                f"{prefix}/max_nfev=3/model={model}",
                call(ls, fun, P0, method=method, max_nfev=3, **data),
            )
            for scheme in ("2-point", "3-point", "cs"):
                yield (
                    f"{prefix}/jac={scheme}/model={model}",
                    call(ls, fun, P0, scheme, method=method, **data),
                )
        for method in ("trf", "dogbox"):
            prefix = f"least_squares/{method}"
            yield (
                f"{prefix}/loss=huber/f_scale=0.3/model={model}",
                call(ls, fun, P0, method=method, loss="huber", f_scale=0.3, **data),
            )
            yield (
                f"{prefix}/bounds=box/loss=soft_l1/f_scale=2.0/model={model}",
                call(
                    ls, fun, P0, method=method, bounds=(LB, UB), loss="soft_l1", f_scale=2.0, **data
                ),
            )
        yield (
            f"least_squares/trf/jac=2-point/diff_step=1e-4/model={model}",
            call(ls, fun, P0, "2-point", diff_step=1e-4, **data),
        )
        yield (
            f"least_squares/trf/jac=3-point/diff_step=array/model={model}",
            call(ls, fun, P0, "3-point", diff_step=[1e-3, 1e-4, 1e-5], **data),
        )
    kw_models = {"jax": res_kw_jax, "numpy": res_kw_np}
    for model, fun in kw_models.items():
        for method in METHODS:
            yield (
                f"least_squares/{method}/args_kwargs/model={model}",
                call(
                    ls, fun, P0, method=method, args=(X, Y_OUT), kwargs={"scale": 2.0, "power": 2}
                ),
            )
        yield (
            f"least_squares/trf/args=list_kwargs=int/model={model}",
            call(ls, fun, P0, args=[X, Y_OUT], kwargs={"scale": 3, "power": 1}),
        )
    yield "least_squares/trf/jac=callable-numpy/fun=jax", call(ls, res_jax, P0, res_jac_np, **data)
    yield "least_squares/trf/jac=callable-jax/fun=numpy", call(ls, res_np, P0, res_jac_jax, **data)
    yield from least_squares_more()


def least_squares_more() -> Iterator[Case]:
    ls = nlsq.least_squares
    data = {"args": (X, Y_OUT)}
    yield "least_squares/trf/x0=scalar", call(ls, res_scalar_jax, 1.0)
    yield "least_squares/lm/x0=scalar", call(ls, res_scalar_jax, 1.0, method="lm")
    yield "least_squares/trf/bounds=Bounds", call(ls, res_jax, P0, bounds=Bounds(LB, UB), **data)
    yield (
        "least_squares/dogbox/bounds=Bounds",
        call(ls, res_jax, P0, bounds=Bounds(LB, UB), method="dogbox", **data),
    )
    yield (
        "least_squares/trf/bounds=lower-scalar",
        call(ls, res_jax, P0, bounds=(0.0, np.inf), **data),
    )
    yield (
        "least_squares/trf/bounds=x0-on-upper",
        call(ls, res_jax, [2.0, 1.0, 0.2], bounds=(LB, UB), **data),
    )
    yield (
        "least_squares/dogbox/bounds=x0-on-upper",
        call(ls, res_jax, [2.0, 1.0, 0.2], bounds=(LB, UB), method="dogbox", **data),
    )
    for method in ("trf", "dogbox"):
        yield (
            f"least_squares/{method}/loss=callable-jax",
            call(ls, res_jax, P0, method=method, loss=rho_jax, **data),
        )
    yield "least_squares/trf/loss=callable-numpy", call(ls, res_jax, P0, loss=rho_np, **data)
    for method in METHODS:
        for verbose in (1, 2):
            yield (
                f"least_squares/{method}/verbose={verbose}",
                call(ls, res_jax, P0, method=method, verbose=verbose, **data),
            )
        yield (
            f"least_squares/{method}/dtype=float32",
            call(ls, res_jax, P0, method=method, dtype="float32", **data),
        )
        yield (
            f"least_squares/{method}/ftol=1e-20",
            call(ls, res_jax, P0, method=method, ftol=1e-20, **data),
        )
        yield f"least_squares/{method}/nan-region", call(ls, res_sqrt, [1.0, 1.0], method=method)
    yield (
        "least_squares/trf/dtype=float32/model=numpy",
        call(ls, res_np, P0, dtype="float32", **data),
    )
    for mode in ("auto", "fwd", "rev"):
        yield (
            f"least_squares/trf/jacobian_mode={mode}",
            call(ls, res_jax, P0, jacobian_mode=mode, **data),
        )
    yield (
        "least_squares/trf/jacobian_mode=auto/reverse-only",
        call(ls, res_reverse_only, P0, **data),
    )
    yield (
        "least_squares/trf/tr_solver=exact/tr_options/workers",
        call(
            ls, res_jax, P0, tr_solver="exact", tr_options={"regularize": True}, workers=2, **data
        ),
    )
    yield (
        "least_squares/trf/ftol=None/xtol=None",
        call(ls, res_jax, P0, ftol=None, xtol=None, **data),
    )
    yield (
        "least_squares/lm/jac_sparsity-with-callable-jac",
        call(ls, res_jax, P0, res_jac_jax, method="lm", jac_sparsity=np.ones((60, 3)), **data),
    )
    yield (
        "least_squares/lm/callback-warns",
        call(ls, res_jax, P0, method="lm", callback=lambda x: None, **data),
    )
    yield (
        "least_squares/trf/overflowing-cost",
        call(ls, res_jax, [1.0, 1.0, 1.0], res_jac_jax, args=(X, Y * 1e300)),
    )
    yield from least_squares_callbacks()


def ls_with_callback(kind: str, method: str) -> dict[str, Any]:
    """A fit with a callback of ``kind``; the result and what the callback saw."""
    seen: list = []

    def by_x(x):
        seen.append(np.array(x))

    def by_result(intermediate_result):
        seen.append(dict(intermediate_result))

    def stopper(x):
        seen.append(np.array(x))
        return len(seen) >= 2

    def stop_iteration(x):
        seen.append(np.array(x))
        if len(seen) >= 3:
            raise StopIteration

    callbacks = {"x": by_x, "result": by_result, "stop": stopper, "StopIteration": stop_iteration}
    result = nlsq.least_squares(res_jax, P0, method=method, callback=callbacks[kind], args=(X, Y))
    return {"result": result, "callback calls": seen}


def ls_callback_raising(method: str) -> Any:
    def raising(x):
        raise ZeroDivisionError("raised inside the callback")

    return nlsq.least_squares(res_jax, P0, method=method, callback=raising, args=(X, Y))


def least_squares_callbacks() -> Iterator[Case]:
    for method in ("trf", "dogbox"):
        for kind in ("x", "result", "stop", "StopIteration"):
            yield f"least_squares/{method}/callback={kind}", call(ls_with_callback, kind, method)
        yield f"least_squares/{method}/callback=raises", call(ls_callback_raising, method)


# --- curve_fit -----------------------------------------------------------------------

SIGMAS = {"none": None, "1d": SIGMA_1D, "2d": SIGMA_2D, "scalar": 0.05}
CF_METHODS = {"None": None, "trf": "trf", "dogbox": "dogbox", "lm": "lm"}
CF_MODELS = {"jax": exp_jax, "numpy": exp_np}
CF_JACS = {"jax": exp_jac_jax, "numpy": exp_jac_np}
PLANE_MODELS = {"jax": plane_jax, "numpy": plane_np}


def curve_fit_grid() -> Iterator[Case]:
    """method x sigma x absolute_sigma x bounds, for JAX and NumPy models."""
    for model, f in CF_MODELS.items():
        for method_name, method in CF_METHODS.items():
            for sigma_name, sigma in SIGMAS.items():
                for absolute in (False, True):
                    for bounds_name, bounds in BOUNDS.items():
                        name = (
                            f"curve_fit/method={method_name}/sigma={sigma_name}/"
                            f"absolute_sigma={absolute}/bounds={bounds_name}/model={model}"
                        )
                        yield (
                            name,
                            call(
                                nlsq.curve_fit,
                                f,
                                X,
                                Y,
                                p0=P0,
                                sigma=sigma,
                                absolute_sigma=absolute,
                                bounds=bounds,
                                method=method,
                            ),
                        )


def curve_fit_options() -> Iterator[Case]:
    cf = nlsq.curve_fit
    for model, f in CF_MODELS.items():
        for method in METHODS:
            yield (
                f"curve_fit/method={method}/full_output/model={model}",
                call(cf, f, X, Y, p0=P0, method=method, full_output=True),
            )
            yield (
                f"curve_fit/method={method}/jac=callable/model={model}",
                call(cf, f, X, Y, p0=P0, jac=CF_JACS[model], method=method),
            )
            yield (
                f"curve_fit/method={method}/maxfev=2/model={model}",
                call(cf, f, X, Y, p0=P0, method=method, maxfev=2),
            )
            yield (
                f"curve_fit/method={method}/xdata=2d/model={model}",
                call(cf, PLANE_MODELS[model], X_PLANE, Y_PLANE, p0=[1.0, 1.0, 0.0], method=method),
            )
            yield (
                f"curve_fit/method={method}/nan_policy=omit/model={model}",
                call(cf, f, X_NAN, Y_NAN, p0=P0, method=method, nan_policy="omit"),
            )
            yield (
                f"curve_fit/method={method}/covariance-not-estimated/model={model}",
                call(cf, f, X[:3], Y[:3], p0=P0, method=method),
            )
        yield (
            f"curve_fit/method=lm/full_output/jac=callable/model={model}",
            call(cf, f, X, Y, p0=P0, method="lm", jac=CF_JACS[model], full_output=True),
        )
        yield (
            f"curve_fit/method=None/max_nfev=2/model={model}",
            call(cf, f, X, Y, p0=P0, max_nfev=2),
        )
        yield (
            f"curve_fit/nan_policy=omit/sigma=1d/model={model}",
            call(cf, f, X_NAN, Y_NAN, p0=P0, sigma=SIGMA_1D, nan_policy="omit"),
        )
        yield (
            f"curve_fit/nan_policy=omit/sigma=2d/model={model}",
            call(cf, f, X_NAN, Y_NAN, p0=P0, sigma=SIGMA_2D, nan_policy="omit"),
        )
        yield (
            f"curve_fit/nan_policy=raise/finite-data/model={model}",
            call(cf, f, X, Y, p0=P0, nan_policy="raise"),
        )
        yield f"curve_fit/p0=omitted/bounds=none/model={model}", call(cf, f, X, Y)
        yield f"curve_fit/p0=omitted/bounds=box/model={model}", call(cf, f, X, Y, bounds=(LB, UB))
        yield (
            f"curve_fit/p0=omitted/bounds=one-sided/model={model}",
            call(cf, f, X, Y, bounds=([0.0, -np.inf, -np.inf], [np.inf, np.inf, 1.0])),
        )
        yield (
            f"curve_fit/check_finite=False/model={model}",
            call(cf, f, X, Y, p0=P0, check_finite=False),
        )
        yield (
            f"curve_fit/covariance-not-estimated/absolute_sigma/model={model}",
            call(cf, f, X[:3], Y[:3], p0=P0, absolute_sigma=True),
        )
        yield f"curve_fit/data=lists/model={model}", call(cf, f, list(X), list(Y), p0=list(P0))
        yield f"curve_fit/xdata=ArrayLike/model={model}", call(cf, f, ArrayLike(X), Y, p0=P0)
        yield f"curve_fit/ydata=ArrayLike/model={model}", call(cf, f, X, ArrayLike(Y), p0=P0)
        yield f"curve_fit/dtype=float32/model={model}", call(cf, f, X, Y, p0=P0, dtype="float32")
        yield (
            f"curve_fit/method=lm/dtype=float32/model={model}",
            call(cf, f, X, Y, p0=P0, method="lm", dtype="float32"),
        )
    yield from curve_fit_more()


def cf_with_callback() -> dict[str, Any]:
    seen: list = []
    result = nlsq.curve_fit(exp_jax, X, Y, p0=P0, callback=lambda x: seen.append(np.array(x)))
    return {"result": result, "callback calls": seen}


def curve_fit_more() -> Iterator[Case]:
    cf = nlsq.curve_fit
    for scheme in ("2-point", "3-point", "cs"):
        yield f"curve_fit/method=trf/jac={scheme}", call(cf, exp_jax, X, Y, p0=P0, jac=scheme)
    yield (
        "curve_fit/method=lm/jac=2-point",
        call(cf, exp_jax, X, Y, p0=P0, jac="2-point", method="lm"),
    )
    yield (
        "curve_fit/method=lm/col_deriv",
        call(cf, exp_jax, X, Y, p0=P0, jac=exp_jac_t_jax, method="lm", col_deriv=True),
    )
    yield (
        "curve_fit/method=lm/epsfcn/model=numpy",
        call(cf, exp_np, X, Y, p0=P0, method="lm", epsfcn=1e-10),
    )
    yield "curve_fit/method=lm/diag", call(cf, exp_jax, X, Y, p0=P0, method="lm", diag=[1.0, 2, 3])
    yield "curve_fit/method=lm/factor=100", call(cf, exp_jax, X, Y, p0=P0, method="lm", factor=100)
    yield (
        "curve_fit/method=lm/tolerances",
        call(
            cf, exp_jax, X, Y, p0=P0, method="lm", ftol=1e-4, xtol=1e-4, gtol=1e-3, full_output=True
        ),
    )
    yield (
        "curve_fit/method=trf/tolerances",
        call(cf, exp_jax, X, Y, p0=P0, ftol=1e-4, xtol=1e-4, gtol=1e-3, full_output=True),
    )
    yield (
        "curve_fit/method=trf/loss=soft_l1/f_scale=0.1",
        call(cf, exp_jax, X, Y_OUT, p0=P0, loss="soft_l1", f_scale=0.1, full_output=True),
    )
    yield (
        "curve_fit/method=dogbox/loss=huber/x_scale=jac",
        call(cf, exp_jax, X, Y_OUT, p0=P0, method="dogbox", loss="huber", x_scale="jac"),
    )
    yield (
        "curve_fit/method=trf/tr_options/workers-ignored",
        call(cf, exp_jax, X, Y, p0=P0, tr_options={}, workers=None),
    )
    for verbose in (1, 2):
        yield (
            f"curve_fit/method=trf/verbose={verbose}",
            call(cf, exp_jax, X, Y, p0=P0, verbose=verbose),
        )
    yield (
        "curve_fit/method=trf/jacobian_mode=rev",
        call(cf, exp_jax, X, Y, p0=P0, jacobian_mode="rev"),
    )
    yield "curve_fit/method=trf/callback", cf_with_callback
    yield "curve_fit/bounds=Bounds", call(cf, exp_jax, X, Y, p0=P0, bounds=Bounds(LB, UB))
    yield "curve_fit/bounds=lists", call(cf, exp_jax, X, Y, p0=P0, bounds=(list(LB), list(UB)))
    yield (
        "curve_fit/bounds=p0-on-bound",
        call(cf, exp_jax, X, Y, p0=[2.0, 1.0, 0.2], bounds=(LB, UB)),
    )
    yield "curve_fit/sigma=float32", call(cf, exp_jax, X, Y, p0=P0, sigma=SIGMA_1D.astype("f4"))
    yield "curve_fit/sigma=negative", call(cf, line, X_LINE, Y_LINE, sigma=-np.ones(20))
    yield "curve_fit/sigma=list", call(cf, exp_jax, X, Y, p0=P0, sigma=list(SIGMA_1D))
    yield (
        "curve_fit/data=int8",
        call(cf, line, np.arange(10, dtype=np.int8), (2 * np.arange(10) + 1).astype(np.int8)),
    )
    yield (
        "curve_fit/data=huge-int64",
        call(
            cf,
            line,
            np.arange(10, dtype=np.int64) * 10**15,
            np.arange(10) * 2 * 10**15 + 1,
            p0=[1, 1],
        ),
    )
    yield (
        "curve_fit/method=None/m<n/bounds=box",
        call(cf, exp_jax, X[:2], Y[:2], p0=P0, bounds=(LB, UB)),
    )
    yield "curve_fit/method=trf/m<n", call(cf, exp_jax, X[:2], Y[:2], p0=P0, method="trf")
    yield "curve_fit/model=line/p0=omitted", call(cf, line, X_LINE, Y_LINE)
    yield (
        "curve_fit/model=frame_model/xdata=ArrayLike",
        call(cf, frame_model, ArrayLike(X_LINE), Y_LINE),
    )
    yield (
        "curve_fit/xdata=list-of-lists/model=plane",
        call(cf, plane_jax, [list(r) for r in X_PLANE], Y_PLANE, p0=[1.0, 1.0, 0.0]),
    )
    for method in METHODS:
        yield (
            f"curve_fit/broadcast_y/ydata=zeros/method={method}",
            call(cf, broadcast_model, X_BROADCAST, np.zeros_like(X_BROADCAST), method=method),
        )


# --- CurveFit ------------------------------------------------------------------------


def fit_twice(f: Callable) -> dict[str, Any]:
    fitter = nlsq.CurveFit(f, p0=P0)
    return {"first": fitter.fit(X, Y), "second": fitter.fit(X, Y_OUT)}


def curvefit_cases() -> Iterator[Case]:
    for model, f in CF_MODELS.items():
        fitter = nlsq.CurveFit(f, p0=P0)
        prefix = "CurveFit"
        yield f"{prefix}/fit/model={model}", call(fitter.fit, X, Y)
        yield f"{prefix}/fit/twice/model={model}", call(fit_twice, f)
        yield (
            f"{prefix}/fit/sigma=1d/absolute_sigma/model={model}",
            call(fitter.fit, X, Y, sigma=SIGMA_1D, absolute_sigma=True),
        )
        yield f"{prefix}/fit/sigma=2d/model={model}", call(fitter.fit, X, Y, sigma=SIGMA_2D)
        yield f"{prefix}/fit/sigma=scalar/model={model}", call(fitter.fit, X, Y, sigma=0.05)
        yield f"{prefix}/fit/bounds=box/model={model}", call(fitter.fit, X, Y, bounds=(LB, UB))
        for method in METHODS:
            yield (
                f"{prefix}/fit/method={method}/model={model}",
                call(fitter.fit, X, Y, method=method),
            )
        yield (
            f"{prefix}/fit/p0-override/loss=huber/model={model}",
            call(fitter.fit, X, Y_OUT, p0=[2.0, 1.0, 0.0], loss="huber"),
        )
        yield (
            f"{prefix}/fit/nan_policy=omit/model={model}",
            call(fitter.fit, X_NAN, Y_NAN, nan_policy="omit"),
        )
        yield f"{prefix}/fit/ydata=nan/model={model}", call(fitter.fit, X, Y_NAN)
        yield f"{prefix}/fit/max_nfev=2/model={model}", call(fitter.fit, X, Y, max_nfev=2)
        yield f"{prefix}/fit/covariance-not-estimated/model={model}", call(fitter.fit, X[:3], Y[:3])
        yield (
            f"{prefix}/fit/xdata=2d/model={model}",
            call(nlsq.CurveFit(PLANE_MODELS[model], p0=[1.0, 1.0, 0.0]).fit, X_PLANE, Y_PLANE),
        )
    yield from curvefit_more()


def curvefit_more() -> Iterator[Case]:
    options = nlsq.CurveFit(
        exp_jax, p0=P0, sigma=SIGMA_1D, bounds=(LB, UB), method="dogbox", loss="soft_l1"
    )
    yield "CurveFit/fit/constructor-options", call(options.fit, X, Y_OUT)
    yield (
        "CurveFit/fit/constructor-options-overridden",
        call(
            options.fit, X, Y_OUT, sigma=0.1, bounds=(-np.inf, np.inf), method="trf", loss="linear"
        ),
    )
    yield "CurveFit/fit/p0=omitted", call(nlsq.CurveFit(exp_jax).fit, X, Y)
    yield "CurveFit/fit/jac=callable", call(nlsq.CurveFit(exp_jax, jac=exp_jac_jax).fit, X, Y, P0)
    yield (
        "CurveFit/fit/full_output-refused",
        call(nlsq.CurveFit(exp_jax).fit, X, Y, P0, full_output=True),
    )
    yield "CurveFit/f=not-callable", call(nlsq.CurveFit, 3.0)
    fitter = nlsq.CurveFit(exp_jax, p0=P0)
    yield "CurveFit/fit_batch", call(fitter.fit_batch, X_BATCH, Y_BATCH)
    yield "CurveFit/fit_batch/p0=per-fit", call(fitter.fit_batch, X_BATCH, Y_BATCH, p0=P0_BATCH)
    yield (
        "CurveFit/fit_batch/sigma/bounds",
        call(fitter.fit_batch, X_BATCH, Y_BATCH, sigma=SIGMA_BATCH, bounds=(LB, UB + 2)),
    )
    yield "CurveFit/fit_batch/method=lm", call(fitter.fit_batch, X_BATCH, Y_BATCH, method="lm")
    yield (
        "CurveFit/fit_batch/constructor-options",
        call(
            nlsq.CurveFit(exp_jax, p0=P0, loss="huber", method="dogbox").fit_batch, X_BATCH, Y_BATCH
        ),
    )
    yield (
        "CurveFit/fit_batch/model=numpy",
        call(nlsq.CurveFit(exp_np, p0=P0).fit_batch, X_BATCH, Y_BATCH),
    )


# --- curve_fit_batch -------------------------------------------------------------------


def batch_with_progress() -> dict[str, Any]:
    seen: list = []
    result = nlsq.curve_fit_batch(
        exp_jax, X_BATCH, Y_BATCH, p0=P0, fits_per_chunk=4, progress=lambda *a: seen.append(a)
    )
    return {"result": result, "progress calls": seen}


def ragged(values: np.ndarray) -> list[np.ndarray]:
    return [row[:m] for row, m in zip(values, LENGTHS, strict=True)]


def batch_cases() -> Iterator[Case]:
    fb = nlsq.curve_fit_batch
    prefix = "curve_fit_batch"
    yield f"{prefix}/shared-x/p0=shared", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0)
    yield f"{prefix}/p0=per-fit", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0_BATCH)
    yield f"{prefix}/p0=omitted", call(fb, exp_jax, X_BATCH, Y_BATCH)
    yield f"{prefix}/x=per-fit", call(fb, exp_jax, np.tile(X_BATCH, (6, 1)), Y_BATCH, p0=P0)
    yield f"{prefix}/x=list-per-fit", call(fb, exp_jax, [X_BATCH] * 6, Y_BATCH, p0=P0)
    yield f"{prefix}/bounds=shared", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, bounds=(LB, UB))
    per_fit_ub = np.tile(UB + 2, (6, 1))
    per_fit_ub[3, 0] = 1.0
    yield (
        f"{prefix}/bounds=per-fit",
        call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0 * 0.5, bounds=(LB, per_fit_ub)),
    )
    yield (
        f"{prefix}/bounds=Bounds",
        call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, bounds=Bounds(LB, UB + 2)),
    )
    yield (
        f"{prefix}/p0-outside-bounds-one-fit",
        call(
            fb,
            exp_jax,
            X_BATCH,
            Y_BATCH,
            p0=np.where(np.arange(6)[:, None] == 1, 9.0, P0_BATCH),
            bounds=(LB, UB + 2),
        ),
    )
    for absolute in (False, True):
        suffix = f"absolute_sigma={absolute}"
        yield (
            f"{prefix}/sigma=per-fit/{suffix}",
            call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, sigma=SIGMA_BATCH, absolute_sigma=absolute),
        )
        yield (
            f"{prefix}/sigma=shared-1d/{suffix}",
            call(
                fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, sigma=SIGMA_BATCH[0], absolute_sigma=absolute
            ),
        )
    yield f"{prefix}/sigma=scalar", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, sigma=0.03)
    yield (
        f"{prefix}/sigma=shared-covariance",
        call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, sigma=COV_BATCH),
    )
    yield (
        f"{prefix}/sigma=per-fit-covariance",
        call(
            fb,
            exp_jax,
            X_BATCH,
            Y_BATCH,
            p0=P0,
            sigma=np.stack([COV_BATCH * (1 + i) for i in range(6)]),
        ),
    )
    yield from batch_more()


def batch_more() -> Iterator[Case]:
    fb = nlsq.curve_fit_batch
    prefix = "curve_fit_batch"
    yield (
        f"{prefix}/ragged",
        call(fb, exp_jax, ragged(np.tile(X_BATCH, (6, 1))), ragged(Y_BATCH), p0=P0),
    )
    yield f"{prefix}/ragged/shared-x-refused", call(fb, exp_jax, X_BATCH, ragged(Y_BATCH), p0=P0)
    yield (
        f"{prefix}/ragged/sigma",
        call(
            fb,
            exp_jax,
            ragged(np.tile(X_BATCH, (6, 1))),
            ragged(Y_BATCH),
            p0=P0,
            sigma=ragged(SIGMA_BATCH),
        ),
    )
    yield f"{prefix}/mask", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, mask=MASK_BATCH)
    yield f"{prefix}/ydata=nan-one-fit", call(fb, exp_jax, X_BATCH, Y_BATCH_NAN, p0=P0)
    yield (
        f"{prefix}/ydata=nan-one-fit/check_finite=False",
        call(fb, exp_jax, X_BATCH, Y_BATCH_NAN, p0=P0, check_finite=False),
    )
    yield (
        f"{prefix}/ydata=nan-one-fit/nan_policy=omit",
        call(fb, exp_jax, X_BATCH, Y_BATCH_NAN, p0=P0, nan_policy="omit"),
    )
    yield (
        f"{prefix}/ydata=nan-one-fit/nan_policy=raise",
        call(fb, exp_jax, X_BATCH, Y_BATCH_NAN, p0=P0, nan_policy="raise"),
    )
    yield f"{prefix}/ydata=all-nan", call(fb, exp_jax, X_BATCH, np.full((6, 50), np.nan), p0=P0)
    for method in ("dogbox", "lm"):
        yield f"{prefix}/method={method}", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, method=method)
        yield (
            f"{prefix}/method={method}/maxfev=3",
            call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, method=method, maxfev=3),
        )
    yield f"{prefix}/method=trf/max_nfev=3", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, max_nfev=3)
    yield (
        f"{prefix}/loss=huber/f_scale=0.1",
        call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, loss="huber", f_scale=0.1),
    )
    yield f"{prefix}/x_scale=jac", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, x_scale="jac")
    yield f"{prefix}/jac=callable", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, jac=exp_jac_jax)
    yield f"{prefix}/jac=2-point", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, jac="2-point")
    yield f"{prefix}/dtype=float32", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, dtype="float32")
    yield f"{prefix}/fits_per_chunk=4/progress", batch_with_progress
    yield (
        f"{prefix}/memory_budget=small",
        call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, memory_budget=20000),
    )
    yield (
        f"{prefix}/xdata=2d-shared",
        call(fb, plane_jax, X_PLANE_BATCH, Y_PLANE_BATCH, p0=[1.0, 1.0, 0.0]),
    )
    yield (
        f"{prefix}/covariance-not-estimated",
        call(fb, exp_jax, X_BATCH[:3], Y_BATCH[:, :3], p0=P0),
    )
    yield f"{prefix}/verbose=0-accepted", call(fb, exp_jax, X_BATCH, Y_BATCH, p0=P0, verbose=0)


# --- curve_fit_large and chunked curve_fit ---------------------------------------------


def large_cases() -> Iterator[Case]:
    fl = nlsq.curve_fit_large
    cf = nlsq.curve_fit
    prefix = "curve_fit_large"
    chunk = {"chunk_size": 512}
    yield f"{prefix}/basic", call(fl, exp_jax, X_LARGE, Y_LARGE, p0=P0_LARGE, **chunk)
    yield f"{prefix}/default-chunk", call(fl, exp_jax, X_LARGE, Y_LARGE, p0=P0_LARGE)
    yield f"{prefix}/p0=omitted", call(fl, exp_jax, X_LARGE, Y_LARGE, **chunk)
    for absolute in (False, True):
        yield (
            f"{prefix}/sigma=1d/absolute_sigma={absolute}",
            call(fl, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, SIGMA_LARGE, absolute, **chunk),
        )
    yield f"{prefix}/sigma=scalar", call(fl, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, 0.05, **chunk)
    yield (
        f"{prefix}/bounds=box",
        call(fl, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, bounds=(LB_LARGE, UB_LARGE), **chunk),
    )
    yield (
        f"{prefix}/bounds=Bounds/sigma",
        call(
            fl,
            exp_jax,
            X_LARGE,
            Y_LARGE,
            P0_LARGE,
            SIGMA_LARGE,
            bounds=Bounds(LB_LARGE, UB_LARGE),
            **chunk,
        ),
    )
    yield (
        f"{prefix}/loss=huber/x_scale=jac",
        call(fl, exp_jax, X_LARGE, Y_LARGE_OUT, P0_LARGE, loss="huber", x_scale="jac", **chunk),
    )
    yield (
        f"{prefix}/xdata=2d",
        call(fl, plane_jax, X_PLANE_LARGE, Y_PLANE_LARGE, [1.0, 1.0, 0.0], **chunk),
    )
    yield (
        f"{prefix}/stream=True",
        call(fl, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, stream=True, **chunk),
    )
    yield (
        f"{prefix}/memory_budget=small",
        call(fl, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, memory_budget=20000),
    )
    yield f"{prefix}/chunk-source", call(fl, exp_jax, chunk_source, p0=P0_LARGE)
    yield (
        f"{prefix}/chunk-source/sigma/chunk_size=512",
        call(fl, exp_jax, chunk_source_sigma, p0=P0_LARGE, chunk_size=512),
    )
    yield f"{prefix}/max_nfev=2", call(fl, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, max_nfev=2, **chunk)
    yield (
        f"{prefix}/dtype=float32",
        call(fl, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, dtype="float32", **chunk),
    )
    yield f"{prefix}/devices=1", call(fl, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, devices=1, **chunk)
    yield f"{prefix}/callback", large_with_callback
    yield (
        f"{prefix}/ydata=nan/check_finite=False",
        call(fl, exp_jax, X_LARGE, Y_LARGE_NAN, P0_LARGE, check_finite=False, **chunk),
    )
    prefix = "curve_fit_large/curve_fit"
    yield f"{prefix}/chunk_size=512", call(cf, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, **chunk)
    yield (
        f"{prefix}/chunk_size=512/full_output",
        call(cf, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, full_output=True, **chunk),
    )
    for absolute in (False, True):
        yield (
            f"{prefix}/chunk_size=512/sigma=1d/absolute_sigma={absolute}",
            call(cf, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, SIGMA_LARGE, absolute, **chunk),
        )
    yield (
        f"{prefix}/chunk_size=512/bounds=box",
        call(cf, exp_jax, X_LARGE, Y_LARGE, P0_LARGE, bounds=(LB_LARGE, UB_LARGE), **chunk),
    )
    yield (
        f"{prefix}/chunk_size=512/loss=soft_l1",
        call(cf, exp_jax, X_LARGE, Y_LARGE_OUT, P0_LARGE, loss="soft_l1", **chunk),
    )
    yield (
        f"{prefix}/chunk_size=512/nan_policy=omit",
        call(cf, exp_jax, X_LARGE, Y_LARGE_NAN, P0_LARGE, nan_policy="omit", **chunk),
    )
    yield f"{prefix}/in-memory-reference", call(cf, exp_jax, X_LARGE, Y_LARGE, P0_LARGE)
    yield (
        f"{prefix}/chunk_size=512/model=numpy",
        call(cf, exp_np, X_LARGE, Y_LARGE, P0_LARGE, **chunk),
    )


def large_with_callback() -> dict[str, Any]:
    seen: list = []
    result = nlsq.curve_fit_large(
        exp_jax, X_LARGE, Y_LARGE, P0_LARGE, chunk_size=512, callback=lambda x: seen.append(x)
    )
    return {"result": result, "callback calls": seen}


# --- bad input: one case per validation rule -------------------------------------------


def bad_least_squares() -> Iterator[Case]:
    ls = nlsq.least_squares
    data = {"args": (X, Y)}
    rules = {
        "method=foo": {"method": "foo"},
        "jac=4-point": {"jac": "4-point"},
        "jac=5": {"jac": 5},
        "tr_solver=foo": {"tr_solver": "foo"},
        "tr_solver=lsmr": {"tr_solver": "lsmr"},
        "loss=foo": {"loss": "foo"},
        "lm/loss=huber": {"method": "lm", "loss": "huber"},
        "verbose=3": {"verbose": 3},
        "max_nfev=0": {"max_nfev": 0},
        "max_nfev=-1": {"max_nfev": -1},
        "bounds=3-elements": {"bounds": (0, 1, 2)},
        "lm/bounds": {"method": "lm", "bounds": (LB, UB)},
        "bounds=wrong-shape": {"bounds": ([0.0, 0.0], [5.0, 5.0])},
        "bounds=lb>ub": {"bounds": (UB, LB)},
        "bounds=lb==ub": {"bounds": (LB, LB)},
        "bounds=nan": {"bounds": ([np.nan, 0, 0], UB)},
        "x0-infeasible": {"bounds": (LB, [1.0, 5.0, 5.0])},
        "x_scale=negative": {"x_scale": [-1.0, 1.0, 1.0]},
        "x_scale=zero": {"x_scale": 0.0},
        "x_scale=nan": {"x_scale": np.nan},
        "x_scale=foo": {"x_scale": "foo"},
        "x_scale=wrong-shape": {"x_scale": [1.0, 2.0]},
        "ftol=-1": {"ftol": -1.0},
        "lm/ftol=1e-20": {"method": "lm", "ftol": 1e-20},
        "all-tolerances-below-eps": {"ftol": 1e-20, "xtol": 1e-20, "gtol": 1e-20},
        "all-tolerances-None": {"ftol": None, "xtol": None, "gtol": None},
        "lm/jac_sparsity/jac=2-point": {"method": "lm", "jac_sparsity": np.ones((60, 3))},
        "jac_sparsity/tr_solver=exact": {"tr_solver": "exact", "jac_sparsity": np.ones((60, 3))},
        "jac_sparsity": {"jac_sparsity": np.ones((60, 3))},
        "dtype=float16": {"dtype": "float16"},
        "dtype=int32": {"dtype": "int32"},
        "jacobian_mode=foo": {"jacobian_mode": "foo"},
        "unknown-keyword": {"foo": 1},
    }
    for rule, kwargs in rules.items():
        for model, fun in (("jax", res_jax), ("numpy", res_np)):
            yield f"bad/least_squares/{rule}/model={model}", call(ls, fun, P0, **{**data, **kwargs})
    yield from bad_least_squares_models()


def bad_least_squares_models() -> Iterator[Case]:
    ls = nlsq.least_squares
    data = {"args": (X, Y)}
    prefix = "bad/least_squares"
    yield f"{prefix}/x0=complex", call(ls, res_jax, P0 + 1j, **data)
    yield f"{prefix}/x0=2d", call(ls, res_jax, np.ones((3, 1)), **data)
    yield f"{prefix}/x0=empty", call(ls, res_jax, [], **data)
    yield f"{prefix}/x0=nan", call(ls, res_jax, [np.nan, 1.0, 0.0], **data)
    yield f"{prefix}/x0=inf", call(ls, res_jax, [np.inf, 1.0, 0.0], **data)
    for model, fun in (("jax", res_jax), ("numpy", res_np)):
        yield (
            f"{prefix}/residuals-not-finite-at-x0/model={model}",
            call(ls, fun, P0, args=(X, Y_NAN)),
        )
    yield f"{prefix}/fun-2d/model=jax", call(ls, res_2d_jax, [1.0, 1.0], **data)
    yield f"{prefix}/fun-2d/model=numpy", call(ls, res_2d_np, [1.0, 1.0], **data)
    yield f"{prefix}/lm/m<n/model=jax", call(ls, res_short_jax, [1.0, 2.0], method="lm")
    yield f"{prefix}/lm/m<n/model=numpy", call(ls, res_short_np, [1.0, 2.0], method="lm")
    yield f"{prefix}/trf/m<n/model=jax", call(ls, res_short_jax, [1.0, 2.0])
    yield f"{prefix}/jac-wrong-shape/model=jax", call(ls, res_jax, P0, res_jac_wrong_jax, **data)
    yield f"{prefix}/jac-wrong-shape/model=numpy", call(ls, res_np, P0, res_jac_wrong_np, **data)
    yield f"{prefix}/jac=sparse/trf", call(ls, res_np, P0, res_jac_sparse, **data)
    yield f"{prefix}/jac=sparse/lm", call(ls, res_np, P0, res_jac_sparse, method="lm", **data)
    yield (
        f"{prefix}/jac=sparse/tr_solver=exact",
        call(ls, res_np, P0, res_jac_sparse, tr_solver="exact", **data),
    )
    yield f"{prefix}/jac=LinearOperator", call(ls, res_np, P0, res_jac_operator, **data)
    yield (
        f"{prefix}/jac=LinearOperator/x_scale=jac",
        call(ls, res_np, P0, res_jac_operator, x_scale="jac", **data),
    )
    yield f"{prefix}/complex-residuals/model=jax", call(ls, res_complex_jax, [1.0, 1.0], **data)
    yield f"{prefix}/complex-residuals/model=numpy", call(ls, res_complex_np, [1.0, 1.0], **data)
    yield f"{prefix}/loss=callable-wrong-shape", call(ls, res_jax, P0, loss=rho_wrong_shape, **data)
    yield (
        f"{prefix}/jacobian_mode=fwd/reverse-only",
        call(ls, res_reverse_only, P0, jacobian_mode="fwd", **data),
    )
    yield f"{prefix}/fun-raises/model=numpy", call(ls, res_raising_np, P0, **data)
    yield f"{prefix}/args-wrong-count", call(ls, res_jax, P0, args=(X,))
    yield f"{prefix}/diff_step=negative", call(ls, res_jax, P0, "2-point", diff_step=-1e-3, **data)


def bad_curve_fit() -> Iterator[Case]:
    cf = nlsq.curve_fit
    rules = {
        "lm/bounds": {"method": "lm", "bounds": (LB, UB)},
        "ydata=nan": {"ydata": Y_NAN},
        "xdata=nan": {"xdata": X_NAN},
        "xdata=inf": {"xdata": X_INF},
        "nan_policy=propagate": {"nan_policy": "propagate"},
        "nan_policy=foo": {"nan_policy": "foo"},
        "nan_policy=raise/nan": {"ydata": Y_NAN, "nan_policy": "raise"},
        "nan_policy=omit/check_finite=True": {
            "ydata": Y_NAN,
            "nan_policy": "omit",
            "check_finite": True,
        },
        "sigma=wrong-shape": {"sigma": SIGMA_1D[:10]},
        "sigma=not-positive-definite": {"sigma": -SIGMA_2D},
        "sigma=2d-nan": {"sigma": np.where(np.eye(60) > 0, np.nan, SIGMA_2D)},
        "sigma=zero-entry": {"sigma": np.where(np.arange(60) == 2, 0.0, SIGMA_1D)},
        "sigma=nan-entry": {"sigma": np.where(np.arange(60) == 2, np.nan, SIGMA_1D)},
        "args-keyword": {"args": (1,)},
        "m<n/method=None": {"xdata": X[:2], "ydata": Y[:2]},
        "m=1<n/method=None": {"xdata": X[:1], "ydata": Y[:1]},
        "lm/m<n": {"xdata": X[:2], "ydata": Y[:2], "method": "lm"},
        "lm/unknown-keyword": {"method": "lm", "max_nfev": 10},
        "lm/factor=50": {"method": "lm", "factor": 50},
        "lm/diag=wrong-shape": {"method": "lm", "diag": [1.0, 2.0]},
        "lm/diag=negative": {"method": "lm", "diag": [1.0, -2.0, 1.0]},
        "lm/ftol=-1": {"method": "lm", "ftol": -1.0},
        "lm/maxfev=-1": {"method": "lm", "maxfev": -1},
        "unknown-keyword": {"foo": 1},
        "method=foo": {"method": "foo"},
        "loss=foo": {"loss": "foo"},
        "x_scale=negative": {"x_scale": -1.0},
        "max_nfev=0": {"max_nfev": 0},
        "p0-infeasible": {"bounds": (LB, [1.0, 5.0, 5.0])},
        "bounds=lb>ub": {"bounds": (UB, LB)},
        "bounds=wrong-shape": {"bounds": ([0.0, 0.0], [5.0, 5.0])},
        "p0=nan": {"p0": [np.nan, 1.0, 0.0]},
        "p0=inf": {"p0": [np.inf, 1.0, 0.0]},
        "dtype=float16": {"dtype": "float16"},
        "jacobian_mode=foo": {"jacobian_mode": "foo"},
        "chunk_size=0": {"chunk_size": 0},
        "chunk_size=True": {"chunk_size": True},
        "ftol=0/xtol=0/gtol=0": {"ftol": 0.0, "xtol": 0.0, "gtol": 0.0},
        "ftol=1e-20": {"ftol": 1e-20},
    }
    for rule, kwargs in rules.items():
        for model, f in CF_MODELS.items():
            arguments = {"xdata": X, "ydata": Y, "p0": P0, **kwargs}
            yield f"bad/curve_fit/{rule}/model={model}", call(cf, f, **arguments)
    yield from bad_curve_fit_models()


def bad_curve_fit_models() -> Iterator[Case]:
    cf = nlsq.curve_fit
    prefix = "bad/curve_fit"
    yield f"{prefix}/p0=omitted/varargs-model", call(cf, varargs_model, X, Y)
    yield f"{prefix}/p0=omitted/builtin-model", call(cf, max, X, Y)
    yield f"{prefix}/model-complex", call(cf, complex_jax, X_LINE, Y_LINE)
    yield f"{prefix}/model-wrong-length", call(cf, short_jax, X_LINE, Y_LINE)
    yield f"{prefix}/model-2d", call(cf, matrix_jax, X_LINE, Y_LINE)
    yield f"{prefix}/model-raises/model=numpy", call(cf, raising_np, X_LINE, Y_LINE, p0=[1.0, 1.0])
    yield (
        f"{prefix}/model-raises-mid-fit/model=numpy",
        call(cf, raising_later_np, X_LINE, Y_LINE, p0=[1.0, 1.0]),
    )
    yield f"{prefix}/model-raises/model=jax", call(cf, raising_jax, X_LINE, Y_LINE, p0=[1.0, 1.0])
    yield (
        f"{prefix}/int-too-large",
        call(cf, line, [10**400 * i for i in range(10)], list(range(10))),
    )
    yield f"{prefix}/ydata-wrong-length", call(cf, exp_jax, X, Y[:50], p0=P0)
    yield f"{prefix}/ydata-wrong-length/model=numpy", call(cf, exp_np, X, Y[:50], p0=P0)
    yield f"{prefix}/jac-wrong-shape", call(cf, exp_jax, X, Y, p0=P0, jac=lambda x, a, b, c: x)
    yield f"{prefix}/jac=foo", call(cf, exp_jax, X, Y, p0=P0, jac="foo")
    yield f"{prefix}/f=not-callable", call(cf, 3.0, X, Y, p0=P0)
    yield f"{prefix}/p0=complex", call(cf, exp_jax, X, Y, p0=P0 + 1j)


def bad_batch() -> Iterator[Case]:
    fb = nlsq.curve_fit_batch
    prefix = "bad/curve_fit_batch"
    good = {"xdata": X_BATCH, "ydata": Y_BATCH, "p0": P0}
    rules = {
        "ydata=1d": {"ydata": Y_BATCH[0]},
        "ydata=3d": {"ydata": Y_BATCH[None]},
        "ydata=no-fits": {"ydata": Y_BATCH[:0]},
        "xdata=wrong-length": {"xdata": X_BATCH[:40]},
        "xdata=dict": {"xdata": {"x": X_BATCH}},
        "verbose=1": {"verbose": 1},
        "chunk_size": {"chunk_size": 10},
        "callback": {"callback": print},
        "full_output": {"full_output": True},
        "nan_policy=propagate": {"nan_policy": "propagate"},
        "nan_policy=foo": {"nan_policy": "foo"},
        "mask=wrong-shape": {"mask": MASK_BATCH[:, :10]},
        "mask-and-ragged": {"ydata": ragged(Y_BATCH), "mask": MASK_BATCH},
        "sigma=wrong-shape": {"sigma": SIGMA_BATCH[:, :10]},
        "sigma=not-positive-definite": {"sigma": -COV_BATCH},
        "bounds=wrong-shape": {"bounds": ([0.0, 0.0], [5.0, 5.0])},
        "bounds=3-elements": {"bounds": (0, 1, 2)},
        "p0=wrong-shape": {"p0": np.ones((4, 3))},
        "p0=3d": {"p0": np.ones((6, 3, 1))},
        "p0=complex": {"p0": P0 + 1j},
        "fits_per_chunk=0": {"fits_per_chunk": 0},
        "memory_budget=0": {"memory_budget": 0},
        "method=foo": {"method": "foo"},
        "loss=foo": {"loss": "foo"},
        "args-keyword": {"args": (1,)},
        "unknown-keyword": {"foo": 1},
        "lm/bounds": {"method": "lm", "bounds": (LB, UB)},
        "m<n": {"xdata": X_BATCH[:2], "ydata": Y_BATCH[:, :2]},
        "ragged/x-count-mismatch": {"xdata": [X_BATCH] * 5, "ydata": ragged(Y_BATCH)},
        "ragged/x-length-mismatch": {"xdata": [X_BATCH] * 6, "ydata": ragged(Y_BATCH)},
        "ragged/rows-2d": {"ydata": [Y_BATCH[:2], Y_BATCH[0]]},
        "ragged/sigma-count": {
            "xdata": ragged(np.tile(X_BATCH, (6, 1))),
            "ydata": ragged(Y_BATCH),
            "sigma": ragged(SIGMA_BATCH)[:5],
        },
    }
    for rule, kwargs in rules.items():
        yield f"{prefix}/{rule}", call(fb, exp_jax, **{**good, **kwargs})
    yield f"{prefix}/f=not-callable", call(fb, 3.0, **good)
    yield f"{prefix}/model=numpy", call(fb, exp_np, **good)
    yield f"{prefix}/jac=numpy", call(fb, exp_jax, jac=exp_jac_np, **good)
    yield (
        f"{prefix}/ragged/not-pointwise",
        call(fb, cumulative_jax, ragged(np.tile(X_BATCH, (6, 1))), ragged(Y_BATCH), p0=P0),
    )


def bad_large() -> Iterator[Case]:
    fl = nlsq.curve_fit_large
    prefix = "bad/curve_fit_large"
    good = {"xdata": X_LARGE, "ydata": Y_LARGE, "p0": P0_LARGE, "chunk_size": 512}
    rules = {
        "ydata=2d": {"ydata": Y_LARGE.reshape(2, 1000)},
        "xdata=wrong-length": {"xdata": X_LARGE[:1000]},
        "sigma=2d": {"sigma": np.diag(SIGMA_LARGE[:10])},
        "ydata=nan": {"ydata": Y_LARGE_NAN},
        "unknown-keyword": {"foo": 1},
        "method-keyword": {"method": "trf"},
        "chunk_size=0": {"chunk_size": 0},
        "chunk_size=-5": {"chunk_size": -5},
        "bounds=lb>ub": {"bounds": (UB_LARGE, LB_LARGE)},
        "p0-infeasible": {"bounds": (LB_LARGE, [1.0, 5.0, 5.0])},
        "loss=foo": {"loss": "foo"},
        "max_nfev=0": {"max_nfev": 0},
        "memory_budget=abc": {"memory_budget": "abc"},
        "stream=False/chunk-source": {"xdata": chunk_source, "ydata": None, "stream": False},
        "chunk-source/with-ydata": {"xdata": chunk_source},
        "chunk-source/empty": {"xdata": chunk_source_empty, "ydata": None},
        "chunk-source/partial-sigma": {"xdata": chunk_source_partial_sigma, "ydata": None},
        "chunk-source/bad-item": {"xdata": chunk_source_bad_item, "ydata": None},
        "chunk-source/chunk_size-too-small": {
            "xdata": chunk_source,
            "ydata": None,
            "chunk_size": 100,
        },
        "residuals-not-finite-at-p0": {"p0": [np.inf, 0.5, 0.5]},
    }
    for rule, kwargs in rules.items():
        yield f"{prefix}/{rule}", call(fl, exp_jax, **{**good, **kwargs})
    yield f"{prefix}/not-pointwise", call(fl, cumulative_jax, **good)
    cf = nlsq.curve_fit
    prefix = "bad/curve_fit/chunk_size"
    chunked = {"p0": P0_LARGE, "chunk_size": 512}
    yield f"{prefix}/method=dogbox", call(cf, exp_jax, X_LARGE, Y_LARGE, method="dogbox", **chunked)
    yield f"{prefix}/method=lm", call(cf, exp_jax, X_LARGE, Y_LARGE, method="lm", **chunked)
    yield f"{prefix}/jac=callable", call(cf, exp_jax, X_LARGE, Y_LARGE, jac=exp_jac_jax, **chunked)
    yield f"{prefix}/sigma=2d", call(cf, exp_jax, X, Y, p0=P0, sigma=SIGMA_2D, chunk_size=16)
    yield f"{prefix}/verbose=2", call(cf, exp_jax, X_LARGE, Y_LARGE, verbose=2, **chunked)
    yield f"{prefix}/not-pointwise", call(cf, cumulative_jax, X_LARGE, Y_LARGE, **chunked)
    yield (
        f"{prefix}/xdata=list",
        call(cf, exp_jax, list(X_LARGE), Y_LARGE, check_finite=False, **chunked),
    )


# --- known drifts of the planned refactor ----------------------------------------------


def drift_cases() -> Iterator[Case]:
    fl = nlsq.curve_fit_large
    yield (
        "drift/CurveFit(chunk_size=1024).fit",
        call(nlsq.CurveFit(exp_jax, chunk_size=1024).fit, X_LARGE, Y_LARGE, p0=P0_LARGE),
    )
    yield (
        "drift/CurveFit().fit(chunk_size=1024)",
        call(nlsq.CurveFit(exp_jax).fit, X_LARGE, Y_LARGE, p0=P0_LARGE, chunk_size=1024),
    )
    yield (
        "drift/curve_fit_large/model=numpy",
        call(fl, exp_np, X_LARGE, Y_LARGE, P0_LARGE, chunk_size=512),
    )
    yield "drift/curve_fit_large/ydata=empty", call(fl, exp_jax, X[:0], Y[:0], P0)
    yield "drift/curve_fit/ydata=empty", call(nlsq.curve_fit, exp_jax, X[:0], Y[:0], P0)
    yield "drift/curve_fit_large[0]", lambda: fl(exp_jax, X_LARGE, Y_LARGE, P0_LARGE)[0]
    for method in METHODS:
        yield (
            f"drift/curve_fit/broadcast_y/ydata=0/method={method}",
            call(nlsq.curve_fit, broadcast_model, X_BROADCAST, 0, method=method),
        )
    yield "drift/CurveFit()", nlsq.CurveFit


# --- the grid --------------------------------------------------------------------------

#: Shards of the grid, in order; each runs in a fresh process, so what a process does
#: once (a ``NumPyModelWarning`` per model, compiled programs) depends only on its shard.
SHARDS: dict[str, tuple[Callable[[], Iterator[Case]], ...]] = {
    "least_squares": (least_squares_grid, least_squares_options),
    "curve_fit": (curve_fit_grid, curve_fit_options),
    "CurveFit": (curvefit_cases,),
    "curve_fit_batch": (batch_cases,),
    "curve_fit_large": (large_cases,),
    "bad": (bad_least_squares, bad_curve_fit, bad_batch, bad_large),
    "drift": (drift_cases,),
}


def shard_cases(shard: str) -> Iterator[Case]:
    """The cases of one shard, in order; every name starts with the shard's name."""
    for group in SHARDS[shard]:
        for name, thunk in group():
            if not name.startswith(shard + "/"):
                raise ValueError(f"case {name!r} is not in shard {shard!r}")
            yield name, thunk


def all_cases() -> Iterator[Case]:
    """Every case, in a fixed order; names are unique."""
    seen: set[str] = set()
    for shard in SHARDS:
        for name, thunk in shard_cases(shard):
            if name in seen:
                raise ValueError(f"duplicate case name {name!r}")
            seen.add(name)
            yield name, thunk


# --- command line ----------------------------------------------------------------------


def load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    record = commands.add_parser("record", help="run every case and write OUT.json")
    record.add_argument("out")
    compare = commands.add_parser("compare", help="compare two recorded files")
    compare.add_argument("base")
    compare.add_argument("new")
    check = commands.add_parser("check", help="record in memory and compare with BASE.json")
    check.add_argument("base")
    shard = commands.add_parser("shard", help="(internal) record one shard into OUT.json")
    shard.add_argument("name", choices=list(SHARDS))
    shard.add_argument("out")
    for command in (record, compare, check, shard):
        command.add_argument("--only", help="only the cases whose name contains this")
    for command in (record, check):
        command.add_argument(
            "--jobs",
            type=int,
            default=min(2, os.cpu_count() or 1),
            help="shards run at the same time (default: 2, or 1 on one CPU)",
        )
    return parser.parse_args(argv)


def write(path: str, records: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as file:
        json.dump(records, file, indent=1)
        file.write("\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.command == "shard":
        write(args.out, record_shard(args.name, args.only))
        return 0
    if args.command == "record":
        write(args.out, record_all(args.only, args.jobs))
        return 0
    if args.command == "compare":
        return 1 if report(load(args.base), load(args.new), args.only) else 0
    return 1 if report(load(args.base), record_all(args.only, args.jobs), args.only) else 0


if __name__ == "__main__":
    sys.exit(main())
