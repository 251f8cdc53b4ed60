"""The plan of a chunked fit: streamed or resident, devices, chunk layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from jax.sharding import Mesh

from nlsq.plan.budget import checked_chunk_size, default_chunk_size, memory_budget_of
from nlsq.plan.placement import data_mesh, global_points
from nlsq.prepare.options import ValidatedOptions
from nlsq.program.sources import ArrayData, IterableData
from nlsq.program.spec import LargeSpec, Layout


@dataclass(frozen=True)
class ChunkedPlan:
    """A chunked fit's placement and layout (``spec`` is its program's static part)."""

    stream: bool
    mesh: Mesh | None
    layout: Layout
    local_blocks: int
    m_total: int
    spec: LargeSpec


def plan_chunked(
    data: ArrayData | IterableData,
    options: ValidatedOptions,
    *,
    chunk_size: int | None = None,
    devices: Any = None,
    stream: bool | None = None,
    budget: Any = None,
) -> ChunkedPlan:
    """Where and in what layout a chunked fit runs.

    Streamed when the data exceed the memory budget or come from a chunk source,
    else resident and sharded over ``devices``; the chunk size from the budget unless
    given.

    Raises
    ------
    ValueError
        For a chunk size that is not positive or smaller than a source's chunk, or a
        chunk source with ``stream=False``.
    """
    chunk_size = checked_chunk_size(chunk_size)
    dtype = np.dtype(options.dtype)
    n = options.inputs.x0.size
    budget = memory_budget_of(budget)
    if stream is None:
        stream = isinstance(data, IterableData) or data.nbytes > budget
    if isinstance(data, IterableData) and not stream:
        raise ValueError("Data from a chunk source are always streamed (stream=True).")
    mesh = None if stream else data_mesh(devices)
    n_blocks = 1 if mesh is None else mesh.size
    local_blocks = 1 if mesh is None else len(mesh.local_devices)
    if isinstance(data, IterableData):
        S = chunk_size or max(data.sizes)
        if max(data.sizes) > S:
            raise ValueError(
                f"chunk_size={S} is smaller than a chunk of the source ({max(data.sizes)})."
            )
        layout = Layout(1, len(data.sizes), S)
        m_total = data.m
    else:
        m_total, m_most = global_points(data.m)
        S = chunk_size or default_chunk_size(m_most, n, dtype.itemsize, budget, local_blocks)
        per_block = -(-m_most // local_blocks)
        layout = Layout(n_blocks, max(1, -(-per_block // S)), int(S))
    has_sigma = data.has_sigma
    lead = data.lead
    spec = LargeSpec(
        bounded=options.bounded,
        loss=options.loss,
        jac_scale=options.jac_scale,
        dtype=dtype.name,
        streamed=stream,
        has_sigma=has_sigma,
        lead=tuple(lead),
        layout=layout,
    )
    return ChunkedPlan(stream, mesh, layout, local_blocks, m_total, spec)
