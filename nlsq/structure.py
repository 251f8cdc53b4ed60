"""The sparsity pattern of a JAX function's Jacobian, read from its jaxpr.

``jac_sparsity='auto'`` asks for it. Every variable of the traced program gets the set
of inputs its elements depend on (a sparse boolean matrix, one row per element), and
each primitive maps its operands' sets to its results': elementwise operations take the
union, data movement (reshape, slicing, gathers with known indices, padding ...)
follows the elements, reductions and products with known matrices combine the rows
they read. The pattern is structural: it holds for every ``x``, so it is exact where a
probe at a few points would only be likely right. A primitive without a rule raises
:class:`StructureError`: nlsq then asks for the pattern instead of guessing one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core
from scipy.sparse import csr_matrix, identity, vstack


class StructureError(ValueError):
    """The Jacobian's pattern cannot be read from the function's jaxpr."""


#: Elementwise primitives with a derivative: each result element depends on the same
#: element of every operand.
ELEMENTWISE = {
    "add", "sub", "mul", "div", "neg", "exp", "exp2", "log", "log1p", "expm1", "sin",
    "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh",
    "acosh", "atanh", "sqrt", "rsqrt", "cbrt", "pow", "integer_pow", "abs", "max", "min",
    "logistic", "erf", "erfc", "erf_inv", "lgamma", "digamma", "square", "rem",
    "convert_element_type", "copy", "copy_p", "reduce_precision", "real", "imag",
    "complex", "conj", "nextafter", "add_any", "clamp", "custom_lin",
}  # fmt: skip
#: Results without a derivative (comparisons, rounding, integer results).
NO_DERIVATIVE = {
    "lt", "le", "gt", "ge", "eq", "ne", "floor", "ceil", "round", "sign", "is_finite",
    "stop_gradient", "and", "or", "not", "xor", "iota", "argmax", "argmin",
    "shift_left", "shift_right_logical", "shift_right_arithmetic", "population_count",
}  # fmt: skip
#: Data movement with one data operand (the first) and known other operands.
MOVEMENT = {
    "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims", "slice", "rev",
    "dynamic_slice", "gather",
}  # fmt: skip
REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod"}
CALLS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
#: Primitives that call a jaxpr once with their operands (the pattern flows through).
CALL_PRIMITIVES = {
    "pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "checkpoint", "remat", "remat2",
}  # fmt: skip
#: Largest dense coefficient pattern formed for a product with a known matrix.
DENSE_LIMIT = 50_000_000


class _Dep:
    """Dependency sets of an array's elements: ``rows`` (size, n), boolean."""

    def __init__(self, rows: csr_matrix, shape: tuple[int, ...]) -> None:
        self.rows = rows
        self.shape = shape


def _bool(matrix: Any) -> csr_matrix:
    matrix = csr_matrix(matrix, dtype=bool)
    matrix.eliminate_zeros()
    return matrix


def _empty(shape: tuple[int, ...], n: int) -> _Dep:
    return _Dep(csr_matrix((int(np.prod(shape, dtype=int)), n), dtype=bool), tuple(shape))


def _take(dep: _Dep, ids: np.ndarray) -> _Dep:
    """Rows of ``dep`` at flat ``ids`` (``-1``: no dependency), shaped as ``ids``."""
    flat = np.asarray(ids).ravel()
    valid = flat >= 0
    picked = dep.rows[np.where(valid, flat, 0)]
    picked = picked.multiply(valid[:, None]) if not valid.all() else picked
    return _Dep(_bool(picked), tuple(np.shape(ids)))


def _union(deps: list[_Dep], shape: tuple[int, ...], n: int) -> _Dep:
    """Elementwise union, operands broadcast to ``shape``."""
    size = int(np.prod(shape, dtype=int))
    total = csr_matrix((size, n), dtype=bool)
    for dep in deps:
        ids = np.broadcast_to(np.arange(dep.rows.shape[0]).reshape(dep.shape), shape)
        total = total + _take(dep, ids).rows
    return _Dep(_bool(total), tuple(shape))


def _ids(shape: tuple[int, ...], offset: int = 0) -> jax.Array:
    return jnp.arange(offset, offset + int(np.prod(shape, dtype=int))).reshape(shape)


def _aval_shape(var: Any) -> tuple[int, ...]:
    return tuple(var.aval.shape)


class _Analysis:
    def __init__(self, n: int) -> None:
        self.n = n

    def run(self, jaxpr: core.Jaxpr, consts: list, args: list) -> list:
        env: dict = {}

        def read(var: Any) -> Any:
            if isinstance(var, core.Literal):
                return np.asarray(var.val)
            return env[var]

        for var, value in zip(jaxpr.constvars, consts, strict=True):
            env[var] = value
        for var, value in zip(jaxpr.invars, args, strict=True):
            env[var] = value
        for eqn in jaxpr.eqns:
            values = [read(v) for v in eqn.invars]
            outs = self.equation(eqn, values)
            for var, value in zip(eqn.outvars, outs, strict=True):
                env[var] = value
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn: Any, values: list) -> list:
        name = eqn.primitive.name
        out_shapes = [_aval_shape(v) for v in eqn.outvars]
        if not any(isinstance(v, _Dep) for v in values):
            result = eqn.primitive.bind(*values, **eqn.params)
            result = result if eqn.primitive.multiple_results else [result]
            return [np.asarray(r) for r in result]
        for key in CALLS:
            inner = eqn.params.get(key)
            # Only calls: a loop's body ("scan", "while") also sits under "jaxpr".
            if inner is not None and name in CALL_PRIMITIVES:
                closed = inner if hasattr(inner, "consts") else None
                jaxpr = closed.jaxpr if closed is not None else inner
                consts = list(closed.consts) if closed is not None else []
                return self.run(jaxpr, consts, values)
        n = self.n
        if name in NO_DERIVATIVE:
            return [_empty(shape, n) for shape in out_shapes]
        if name in ELEMENTWISE or name == "select_n":
            operands = values[1:] if name == "select_n" else values
            deps = [v for v in operands if isinstance(v, _Dep)]
            return [_union(deps, out_shapes[0], n)]
        if name in MOVEMENT:
            return [self.movement(eqn, values)]
        if name in REDUCTIONS:
            return [self.reduction(values[0], eqn.params["axes"], out_shapes[0])]
        if name == "concatenate":
            return [self.concatenate(eqn, values)]
        if name == "pad":
            return [self.pad(eqn, values)]
        if name in ("scatter-add", "scatter_add", "scatter"):
            return [self.scatter(eqn, values)]
        if name == "dot_general":
            return [self.dot_general(eqn, values)]
        if name == "bcoo_dot_general":
            return [self.bcoo_dot_general(eqn, values)]
        raise StructureError(
            f"jac_sparsity='auto' cannot read the Jacobian's pattern through the "
            f"primitive {name!r}; pass the pattern as `jac_sparsity`."
        )

    def movement(self, eqn: Any, values: list) -> _Dep:
        data = values[0]
        if any(isinstance(v, _Dep) for v in values[1:]):
            raise StructureError(
                f"jac_sparsity='auto': {eqn.primitive.name} with indices that depend on x."
            )
        ids = eqn.primitive.bind(_ids(data.shape), *values[1:], **eqn.params)
        return _take(data, np.asarray(ids))

    def reduction(self, dep: _Dep, axes: tuple[int, ...], shape: tuple[int, ...]) -> _Dep:
        kept = [a for a in range(len(dep.shape)) if a not in axes]
        ids = np.arange(dep.rows.shape[0]).reshape(dep.shape)
        ids = np.transpose(ids, kept + list(axes)).reshape(int(np.prod(shape, dtype=int)), -1)
        size, width = ids.shape
        gather = csr_matrix(
            (np.ones(ids.size, bool), (np.repeat(np.arange(size), width), ids.ravel())),
            shape=(size, dep.rows.shape[0]),
        )
        return _Dep(_bool(gather @ dep.rows), shape)

    def _stack(self, values: list) -> tuple[csr_matrix, list]:
        """All operands' rows stacked, and id arrays offset into the stack."""
        blocks, ids, offset = [], [], 0
        for value in values:
            dep = value if isinstance(value, _Dep) else _empty(np.shape(value), self.n)
            blocks.append(dep.rows)
            ids.append(_ids(dep.shape, offset))
            offset += dep.rows.shape[0]
        return vstack(blocks).tocsr(), ids

    def concatenate(self, eqn: Any, values: list) -> _Dep:
        rows, ids = self._stack(values)
        out = eqn.primitive.bind(*ids, **eqn.params)
        return _take(_Dep(rows, (rows.shape[0],)), np.asarray(out))

    def pad(self, eqn: Any, values: list) -> _Dep:
        operand, padding = values
        if isinstance(padding, _Dep) and padding.rows.nnz:
            raise StructureError("jac_sparsity='auto': padding with a value that depends on x.")
        out = eqn.primitive.bind(_ids(operand.shape), jnp.asarray(-1), **eqn.params)
        return _take(operand, np.asarray(out))

    def scatter(self, eqn: Any, values: list) -> _Dep:
        operand, indices, updates = values
        if isinstance(indices, _Dep):
            raise StructureError("jac_sparsity='auto': scatter indices that depend on x.")
        operand = operand if isinstance(operand, _Dep) else _empty(np.shape(operand), self.n)
        updates = updates if isinstance(updates, _Dep) else _empty(np.shape(updates), self.n)
        options = {
            key: eqn.params[key]
            for key in ("dimension_numbers", "indices_are_sorted", "unique_indices", "mode")
            if key in eqn.params
        }
        index_array = jnp.asarray(indices)

        def scatter_add(operand: jax.Array, updates: jax.Array) -> jax.Array:
            return jax.lax.scatter_add(operand, index_array, updates, **options)

        # Where each update lands: add its id (+1) to -1; count collisions first.
        counts = scatter_add(
            jnp.zeros(operand.shape, jnp.int32), jnp.ones(updates.shape, jnp.int32)
        )
        if int(jnp.max(counts, initial=0)) > 1:
            raise StructureError("jac_sparsity='auto': a scatter with repeated indices.")
        landed = scatter_add(jnp.full(operand.shape, -1, jnp.int64), _ids(updates.shape) + 1)
        landed = np.asarray(landed)
        from_updates = _take(updates, landed)
        # Scatter-add keeps the operand; a plain scatter overwrites, where the union
        # with the operand is a superset: still a valid pattern.
        return _Dep(_bool(operand.rows + from_updates.rows), operand.shape)

    def dot_general(self, eqn: Any, values: list) -> _Dep:
        lhs, rhs = values
        if isinstance(lhs, _Dep) and isinstance(rhs, _Dep):
            raise StructureError("jac_sparsity='auto': a product of two x-dependent arrays.")
        dep, position = (lhs, 0) if isinstance(lhs, _Dep) else (rhs, 1)
        known = np.asarray(values[1 - position]) != 0
        out_size = int(np.prod(_aval_shape(eqn.outvars[0]), dtype=int))
        if out_size * dep.rows.shape[0] > DENSE_LIMIT:
            raise StructureError("jac_sparsity='auto': a product too large to analyse.")

        def linear(d: jax.Array) -> jax.Array:
            operands = [d, jnp.asarray(known, d.dtype)]
            if position == 1:
                operands.reverse()
            return jax.lax.dot_general_p.bind(*operands, **eqn.params)

        basis = jnp.zeros(dep.shape, jnp.float64)
        coefficients = jax.jacfwd(linear)(basis)
        coefficients = np.asarray(coefficients).reshape(out_size, -1) != 0
        return _Dep(_bool(csr_matrix(coefficients) @ dep.rows), _aval_shape(eqn.outvars[0]))

    def bcoo_dot_general(self, eqn: Any, values: list) -> _Dep:
        data, indices, rhs = values
        spinfo = eqn.params["lhs_spinfo"]
        (contract_l, contract_r), (batch_l, batch_r) = eqn.params["dimension_numbers"]
        if (
            isinstance(data, _Dep)
            or isinstance(indices, _Dep)
            or len(spinfo.shape) != 2
            or batch_l
            or tuple(contract_l) != (1,)
            or tuple(contract_r) != (0,)
            or np.ndim(indices) != 2
        ):
            raise StructureError("jac_sparsity='auto': a sparse product of this form.")
        indices = np.asarray(indices)
        nonzero = np.asarray(data) != 0
        rows, cols = indices[nonzero, 0], indices[nonzero, 1]
        matrix = csr_matrix((np.ones(rows.size, bool), (rows, cols)), shape=spinfo.shape)
        rhs_ids = np.arange(rhs.rows.shape[0]).reshape(rhs.shape)
        out_shape = _aval_shape(eqn.outvars[0])
        if rhs_ids.ndim == 1:
            return _Dep(_bool(matrix @ rhs.rows), out_shape)
        blocks = [matrix @ _take(rhs, rhs_ids[:, j]).rows for j in range(rhs_ids.shape[1])]
        stacked = vstack(blocks).tocsr()
        order = np.arange(stacked.shape[0]).reshape(rhs_ids.shape[1], -1).T.ravel()
        return _Dep(_bool(stacked[order]), out_shape)


def jacobian_sparsity(fun: Callable[[jax.Array], jax.Array], x0: np.ndarray) -> csr_matrix:
    """The structural pattern of ``fun``'s Jacobian, shape (m, n), as a CSR matrix.

    Raises
    ------
    StructureError
        If the jaxpr holds a primitive without a rule here (loops, conditionals,
        products of two x-dependent arrays, ...).
    """
    x0 = np.asarray(x0)
    n = x0.size
    with jax.enable_x64(True):
        closed = jax.make_jaxpr(lambda x: jnp.atleast_1d(fun(x)))(jnp.asarray(x0))
        start = _Dep(_bool(identity(n, dtype=bool, format="csr")), (n,))
        (out,) = _Analysis(n).run(closed.jaxpr, list(closed.consts), [start])
    if not isinstance(out, _Dep):
        m = int(np.size(out))
        return csr_matrix((m, n), dtype=bool)
    return out.rows.astype(np.int8).tocsr()
