"""The reference a gate run is compared with, and why.

Either a stored baseline of this machine or the baseline's revision measured side by side:
an nlsq/scipy ratio cancels a machine's speed, not its type (cache sizes, vector units,
the balance of compiling against importing), so the figures stored in a baseline are only
used on the machine they were recorded on, recognised by its fingerprint
(:func:`benchmark.machine.machine_fingerprint`). Elsewhere the gate measures the revision
the baseline stands for beside the working tree, interleaved, and judges the working tree
against that (:func:`choose_comparison`).

This module finds the committed baselines (:func:`find_baselines`), chooses among them
(:func:`choose_comparison`, pure) and names the commit to measure side by side
(:func:`reference_commit`); :mod:`benchmark.gate` does the measuring and judging.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import runner
from benchmark.machine import MACHINE_FIELDS

BASELINE_DIR = runner.BENCHMARK_DIR / "baselines"


class MissingBaseline(FileNotFoundError):
    """No baseline recorded for this platform."""


class MissingRevision(RuntimeError):
    """The revision a baseline stands for is not in this repository (a shallow clone)."""


#: Comparison modes: the figures stored in a baseline recorded on this machine, or the
#: baseline's revision measured beside the working tree in the same run.
STORED = "stored"
SIDE_BY_SIDE = "side-by-side"
#: ``auto``: stored where a baseline of this machine exists, side by side otherwise.
MODES = ("auto", STORED, SIDE_BY_SIDE)


# --- baselines -----------------------------------------------------------------------


def baseline_path(platform: str) -> Path:
    """``benchmark/baselines/<platform>.json``."""
    return BASELINE_DIR / f"{platform}.json"


def machine_baseline_path(platform: str, machine_id: str) -> Path:
    """``benchmark/baselines/<platform>/<machine-id>.json``: a baseline of one machine type."""
    return BASELINE_DIR / platform / f"{machine_id}.json"


def load_baseline(platform: str) -> dict[str, Any]:
    """The committed baseline of ``platform``.

    Raises
    ------
    MissingBaseline
        With the command that records one.
    """
    path = baseline_path(platform)
    if not path.exists():
        raise MissingBaseline(
            f"no benchmark baseline for platform {platform!r} ({path}); record one on a quiet "
            f"machine with `python -m benchmark baseline` and commit it"
        )
    return runner.load(path)


# --- which comparison (pure, but for find_baselines) ---------------------------------


def machine_differences(
    current: Mapping[str, Any], recorded: Mapping[str, Any] | None
) -> list[str]:
    """How the machine a baseline was recorded on differs from this one (empty: same).

    A baseline without a fingerprint (recorded before they were kept) matches no machine.
    """
    if not recorded:
        return ["no machine fingerprint in the baseline (recorded before fingerprints)"]
    differences = []
    for key in MACHINE_FIELDS:
        ref, now = recorded.get(key), current.get(key)
        if key == "isa":
            ref, now = set(ref or ()), set(now or ())
            if ref != now:
                missing = ", ".join(sorted(ref - now)) or "none"
                extra = ", ".join(sorted(now - ref)) or "none"
                differences.append(f"isa: missing here {missing}; only here {extra}")
        elif ref != now:
            differences.append(f"{key} {ref!r} in the baseline, {now!r} here")
    return differences


def describe_machine(machine: Mapping[str, Any]) -> str:
    """One line: id, vendor, family/model/stepping, CPU count."""
    return (
        f"{machine.get('id')}: {machine.get('vendor_id')} {machine.get('model_name')!r} "
        f"family {machine.get('cpu_family')} model {machine.get('model')} "
        f"stepping {machine.get('stepping')}, {machine.get('cpus')} CPUs"
    )


@dataclass(frozen=True)
class Comparison:
    """What the gate compares the working tree with, and why.

    Parameters
    ----------
    mode : str
        :data:`STORED` (the figures of ``baseline``) or :data:`SIDE_BY_SIDE` (the revision
        ``baseline`` stands for, measured now).
    baseline : dict
        The baseline document.
    path : Path or None
        Where it was read from (None: given by the caller).
    reason : str
        Why this mode.
    differences : tuple of str
        How ``baseline``'s machine differs from this one.
    """

    mode: str
    baseline: Mapping[str, Any]
    path: Path | None
    reason: str
    differences: tuple[str, ...] = ()

    def describe(self, machine: Mapping[str, Any]) -> str:
        """Lines for the log: the mode, the reason, the fingerprint differences."""
        lines = [
            f"benchmark gate: {self.mode} mode: {self.reason}",
            f"  this machine: {describe_machine(machine)}",
        ]
        lines += [f"  differs from {describe_path(self.path)}: {d}" for d in self.differences]
        return "\n".join(lines)


def describe_path(path: Path | None) -> str:
    """Where a baseline was read from, for messages: relative to the repository if inside."""
    if path is None:
        return "the given baseline"
    with contextlib.suppress(ValueError):
        return str(path.relative_to(runner.REPO_ROOT))
    return str(path)


def _machine_of(baseline: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return baseline["environment"].get("machine")


def choose_comparison(
    machine: Mapping[str, Any],
    reference: tuple[Path | None, Mapping[str, Any]],
    per_machine: Mapping[Path, Mapping[str, Any]] | None = None,
    mode: str = "auto",
) -> Comparison:
    """Stored figures if a baseline was recorded on this machine, else side by side.

    Parameters
    ----------
    machine : dict
        This machine's fingerprint.
    reference : (path, baseline)
        The platform's baseline: compared with when it matches this machine (or in
        :data:`STORED` mode), and whose revision is measured in :data:`SIDE_BY_SIDE`.
    per_machine : mapping of path to baseline, optional
        Per-machine baselines; one that matches this machine is preferred to
        ``reference``, being recorded for it.
    mode : {'auto', 'stored', 'side-by-side'}
        ``stored`` and ``side-by-side`` force the mode.
    """
    if mode not in MODES:
        raise ValueError(f"gate mode {mode!r}; expected one of {', '.join(MODES)}")
    ref_path, ref = reference
    candidates = [*(per_machine or {}).items(), (ref_path, ref)]
    matching = [
        (path, b) for path, b in candidates if not machine_differences(machine, _machine_of(b))
    ]
    differences = tuple(machine_differences(machine, _machine_of(ref)))
    if mode == SIDE_BY_SIDE:
        return Comparison(SIDE_BY_SIDE, ref, ref_path, "requested", differences)
    if matching:
        path, found = matching[0]
        reason = f"{describe_path(path)} was recorded on this machine"
        return Comparison(STORED, found, path, reason)
    if mode == STORED:
        reason = "requested, although no baseline was recorded on this machine"
        return Comparison(STORED, ref, ref_path, reason, differences)
    others = f" (nor any of {len(per_machine)} per-machine baselines)" if per_machine else ""
    reason = (
        f"{describe_path(ref_path)}{others} was not recorded on this machine, so its stored "
        "figures say nothing here; measuring the revision it stands for beside the "
        "working tree instead"
    )
    return Comparison(SIDE_BY_SIDE, ref, ref_path, reason, differences)


def find_baselines(
    platform: str, directory: Path | None = None
) -> tuple[tuple[Path, dict[str, Any]], dict[Path, dict[str, Any]]]:
    """The platform's baseline and its per-machine baselines (``<platform>/*.json``).

    In ``directory`` (default :data:`BASELINE_DIR`). Per-machine files are matched by the
    fingerprint inside, not by their names. Without a platform baseline the newest
    per-machine one stands in for it.

    Raises
    ------
    MissingBaseline
        Neither exists.
    """
    directory = BASELINE_DIR if directory is None else directory
    per_machine = {
        path: runner.load(path) for path in sorted((directory / platform).glob("*.json"))
    }
    path = directory / f"{platform}.json"
    if path.exists():
        return (path, runner.load(path)), per_machine
    if per_machine:
        newest = max(per_machine, key=lambda p: per_machine[p]["environment"]["timestamp_utc"])
        return (newest, per_machine[newest]), per_machine
    raise MissingBaseline(
        f"no benchmark baseline for platform {platform!r} ({path}); record one on a quiet "
        f"machine with `python -m benchmark baseline` (or `--machine` for this machine type) "
        f"and commit it"
    )


def select_comparison(
    environment: Mapping[str, Any],
    baseline: Mapping[str, Any] | None = None,
    mode: str = "auto",
    directory: Path | None = None,
) -> Comparison:
    """:func:`choose_comparison` among the committed baselines, or for ``baseline``."""
    if baseline is not None:
        return choose_comparison(environment["machine"], (None, baseline), mode=mode)
    reference, per_machine = find_baselines(environment["platform"], directory)
    return choose_comparison(environment["machine"], reference, per_machine, mode)


def reference_commit(baseline: Mapping[str, Any], names: Iterable[str]) -> str | None:
    """The nlsq commit whose performance ``baseline`` records for the problems ``names``.

    That of the baseline, unless a partial update re-recorded some of them: then the
    latest such update's (its problems may need code the first recording lacked).
    """
    env, wanted = baseline["environment"], set(names)
    commit = env.get("nlsq_source", {}).get("commit")
    for update in env.get("updates", []):
        if wanted & set(update.get("problems", [])):
            commit = update.get("nlsq_source", {}).get("commit")
    return commit
