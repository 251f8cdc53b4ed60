"""The machine fingerprint: what identifies the machine type a run was measured on.

An nlsq/scipy ratio cancels a machine's speed, not its type: cache sizes, vector units
and the balance of compiling against importing differ between CPUs, and so do the ratios.
Every run therefore records a fingerprint (:func:`machine_fingerprint`) in its
``environment.machine``, and stored baseline figures are only compared with runs on a
machine whose fingerprint matches (:func:`benchmark.reference.machine_differences`).

A fingerprint holds the CPU's identity from ``/proc/cpuinfo`` (vendor, model name,
family, model, stepping, cache size), the usable CPU count, the ISA flags that decide
which kernels XLA, OpenBLAS and NumPy run, the environment overrides of those kernels
(``OPENBLAS_CORETYPE``, XLA's ``--xla_cpu_max_isa``), and ``id``, a short hash of all of
them (:func:`machine_id`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


#: CPU features that decide which kernels XLA, OpenBLAS and NumPy pick (vector width,
#: fused multiply-add, bf16/int8 dot products): two machines that differ in one of these
#: run different code, so their nlsq/scipy ratios need not agree. x86 names as
#: ``/proc/cpuinfo`` spells them, then aarch64's.
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi2",
    "avx_vnni",
    "avx512f",
    "avx512dq",
    "avx512cd",
    "avx512bw",
    "avx512vl",
    "avx512ifma",
    "avx512vbmi",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)

#: Fingerprint fields: ``/proc/cpuinfo`` keys, x86 first, then the aarch64 equivalent.
#: The model name is kept but cannot stand alone: virtual machines report as little as
#: "AMD EPYC" for several generations; family, model and stepping tell them apart, and
#: the cache size tells apart parts of one generation with different caches.
_CPUINFO_FIELDS = {
    "vendor_id": ("vendor_id", "CPU implementer"),
    "model_name": ("model name", "Processor"),
    "cpu_family": ("cpu family", "CPU architecture"),
    "model": ("model", "CPU part"),
    "stepping": ("stepping", "CPU revision"),
    "cache_size": ("cache size",),
}

#: Every field of a machine fingerprint but its ``id``; all must agree for a match.
MACHINE_FIELDS = (*_CPUINFO_FIELDS, "cpus", "isa", "openblas_coretype", "xla_cpu_max_isa")


def _xla_max_isa(xla_flags: str) -> str | None:
    """The value of ``--xla_cpu_max_isa`` in ``XLA_FLAGS`` (the last one wins, as in XLA)."""
    found = re.findall(r"--xla_cpu_max_isa=(\S+)", xla_flags)
    return found[-1] if found else None


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The ``key: value`` lines of the first processor block of ``/proc/cpuinfo``."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:  # the first processor's block is over; the others repeat it
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _read_cpuinfo() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/cpuinfo").read_text()
    return ""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity set, which containers narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_id(machine: Mapping[str, Any]) -> str:
    """Short stable hash of a fingerprint's fields (its ``id`` excluded)."""
    fields = {key: machine.get(key) for key in MACHINE_FIELDS}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def machine_fingerprint(
    cpuinfo: str | None = None,
    cpus: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What identifies the machine type a run's ratios belong to.

    Parameters
    ----------
    cpuinfo : str, optional
        Text of ``/proc/cpuinfo`` (read when omitted; empty where there is none, so a
        field the OS does not report is None rather than an error).
    cpus : int, optional
        Usable CPU count (default :func:`usable_cpus`).
    environ : mapping, optional
        Environment to read ``OPENBLAS_CORETYPE`` and ``XLA_FLAGS``'s
        ``--xla_cpu_max_isa`` from (default ``os.environ``): they override the kernels
        OpenBLAS picks and the instructions XLA emits, and workers inherit them.

    Returns
    -------
    dict
        :data:`MACHINE_FIELDS` and ``id`` (:func:`machine_id`).
    """
    info = parse_cpuinfo(_read_cpuinfo() if cpuinfo is None else cpuinfo)
    machine: dict[str, Any] = {
        name: next((info[key] for key in keys if key in info), None)
        for name, keys in _CPUINFO_FIELDS.items()
    }
    if machine["model_name"] is None and cpuinfo is None:
        machine["model_name"] = platform.processor() or None
    flags = set((info.get("flags") or info.get("Features") or "").split())
    machine["cpus"] = usable_cpus() if cpus is None else cpus
    machine["isa"] = [flag for flag in ISA_FLAGS if flag in flags]
    environ = os.environ if environ is None else environ
    machine["openblas_coretype"] = environ.get("OPENBLAS_CORETYPE")
    machine["xla_cpu_max_isa"] = _xla_max_isa(environ.get("XLA_FLAGS", ""))
    machine["id"] = machine_id(machine)
    return machine
