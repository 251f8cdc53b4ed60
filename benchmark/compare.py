"""Measure two git revisions of nlsq with the same harness, interleaved, and compare them.

Each revision is checked out in a temporary ``git worktree`` (``.`` means the working
tree as it is); this checkout's harness measures both, so a revision from before the
suite existed can be measured too. Problems are measured revision A, revision B, B, A...
so that a change of machine load during the run hits both alike.

:func:`gate_side_by_side` is the regression gate's mode for a machine without a baseline
of its own: the baseline's revision and the working tree, one round each.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmark import gate, runner
from benchmark.problems import Problem
from benchmark.reference import MissingRevision

WORKING_TREE = "."


def _git(*args: str, cwd: Path = runner.REPO_ROOT) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def resolve(rev: str) -> str:
    """The commit of ``rev``, or ``'.'`` for the working tree."""
    return (
        WORKING_TREE if rev == WORKING_TREE else _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    )


def require_commit(commit: str | None, baseline: str = "the baseline") -> str:
    """``commit`` resolved, or an error saying how to get it.

    Raises
    ------
    benchmark.reference.MissingRevision
        No commit recorded, or this repository lacks it (a shallow clone).
    """
    fix = (
        "or record a baseline of this machine type with `python -m benchmark baseline "
        "--machine` on a quiet machine and commit it"
    )
    if not commit:
        raise MissingRevision(
            f"{baseline} records no nlsq commit, so its revision cannot be measured beside "
            f"the working tree; re-record it, {fix}"
        )
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    except RuntimeError:
        raise MissingRevision(
            f"{baseline} stands for nlsq commit {commit}, which this repository does not "
            f"have (a shallow clone?); the gate measures that commit beside the working tree "
            f"on a machine without a baseline of its own. Fetch it (`git fetch --unshallow`, "
            f"or `git fetch origin {commit}`; in CI check out the full history), {fix}"
        ) from None


def precompile(root: Path) -> None:
    """Write the bytecode of ``root``'s ``nlsq`` now, so no measured process pays for it.

    A fresh worktree has none, and the first cold process of each side would otherwise
    write it for the modules the first fit imports lazily.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        # Checked-hash bytecode (what SOURCE_DATE_EPOCH asks for) is slower to import
        # than the timestamp-checked kind workers write.
        if k not in ("PYTHONDONTWRITEBYTECODE", "SOURCE_DATE_EPOCH", "PYTHONPYCACHEPREFIX")
    }
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(root) / "nlsq")],
        env=env,
        capture_output=True,
        check=False,
    )


@contextlib.contextmanager
def checkout(commit: str) -> Iterator[Path]:
    """A temporary worktree at ``commit`` (removed afterwards); ``'.'``: the repository."""
    if commit == WORKING_TREE:
        yield runner.REPO_ROOT
        return
    parent = Path(tempfile.mkdtemp(prefix="nlsq-compare-"))
    path = parent / commit[:12]
    _git("worktree", "add", "--detach", str(path), commit)
    try:
        yield path
    finally:
        with contextlib.suppress(RuntimeError):
            _git("worktree", "remove", "--force", str(path))
        shutil.rmtree(parent, ignore_errors=True)
        with contextlib.suppress(RuntimeError):
            _git("worktree", "prune")


def _label(rev: str, commit: str) -> str:
    if commit == WORKING_TREE:
        return "working tree"
    return rev if rev.startswith(commit[:7]) else f"{rev} ({commit[:10]})"


def pooled(run: dict[str, Any]) -> dict[str, Any]:
    """``run`` with each problem's attempts pooled into one (rounds are not retries)."""
    for entry in run["problems"].values():
        if entry["cold"]:
            entry["cold"] = [gate.merge_cold(entry["cold"])]
        if entry["hot"]:
            entry["hot"] = [gate.merge_hot(entry["hot"])]
    return run


def compare_revisions(
    rev_a: str,
    rev_b: str,
    problems: list[Problem],
    settings: runner.Settings,
    rounds: int = 2,
    progress: runner.Progress = runner._stderr,
) -> tuple[dict[str, Any], dict[str, Any], list[gate.Finding], tuple[str, str]]:
    """Runs of both revisions, measured interleaved, and B's findings against A.

    Returns
    -------
    run_a, run_b : dict
        Run documents, each problem's rounds pooled.
    findings : list of Finding
        Revision B evaluated with revision A as the baseline.
    labels : (str, str)
    """
    commit_a, commit_b = resolve(rev_a), resolve(rev_b)
    labels = (_label(rev_a, commit_a), _label(rev_b, commit_b))
    with checkout(commit_a) as root_a, checkout(commit_b) as root_b:
        targets = (
            runner.Target(root_a, label=labels[0]),
            runner.Target(root_b, label=labels[1]),
        )
        with (
            runner.Workspace(targets[0], settings) as ws_a,
            runner.Workspace(targets[1], settings) as ws_b,
        ):
            sides = ((ws_a, runner.new_run(ws_a, settings)), (ws_b, runner.new_run(ws_b, settings)))
            for i, problem in enumerate(problems):
                for r in range(rounds):
                    order = sides if (i + r) % 2 == 0 else sides[::-1]
                    for ws, run in order:
                        entry = runner.measure_problem(problem, ws, settings)
                        _append(run["problems"], problem.name, entry)
                for (_ws, run), label in zip(sides, labels, strict=True):
                    line = runner.describe_progress(problem.name, run["problems"][problem.name])
                    progress(f"[{i + 1}/{len(problems)}] {label}: {line}")
    run_a, run_b = (pooled(runner.finish_run(run)) for _, run in sides)
    return run_a, run_b, gate.evaluate(run_b, run_a), labels


def _append(problems: dict[str, Any], name: str, entry: dict[str, Any]) -> None:
    if name not in problems:
        problems[name] = entry
        return
    gate.extend_entry(problems[name], entry)


def gate_side_by_side(
    problems: list[Problem],
    commit: str | None,
    ws: runner.Workspace,
    settings: runner.Settings,
    metrics: tuple[str, ...] = ("cold", "hot"),
    thresholds: gate.Thresholds | None = None,
    progress: runner.Progress = runner._stderr,
    baseline: str = "the baseline",
) -> tuple[dict[str, Any], list[gate.Finding], dict[str, Any]]:
    """The gate's side-by-side mode: ``commit`` and ``ws``'s nlsq, interleaved.

    One round per side and problem (see :class:`benchmark.gate.SideBySide`); suspects are
    measured again on both sides. ``ws``'s target keeps its ``env`` (an injected slowdown);
    the revision ``commit`` is measured without it.

    Returns
    -------
    problems : dict
        The working tree's ``problems`` section.
    findings : list of Finding
        The working tree against ``commit``, attempt against paired attempt.
    reference : dict
        The run document of ``commit``.

    Raises
    ------
    benchmark.reference.MissingRevision
        See :func:`require_commit`.
    """
    commit = require_commit(commit, baseline)
    thresholds = thresholds or gate.Thresholds()
    progress(
        f"  measuring nlsq {commit[:12]} (the baseline's revision) against "
        f"{ws.target.label!r} ({ws.target.nlsq_root}) side by side, interleaved, one round "
        "each per problem"
    )
    with checkout(commit) as root:
        precompile(root)
        precompile(ws.target.nlsq_root)
        label = f"{commit[:10]} (baseline revision)"
        with runner.Workspace(runner.Target(root, label=label), settings) as ws_ref:
            reference = runner.new_run(ws_ref, settings)
            workspaces = (ws_ref, ws)

            def measure(side: int, problem: Problem, metric: str) -> dict:
                return runner.measure_problem(problem, workspaces[side], settings, (metric,))

            sides = gate.SideBySide(
                measure,
                metrics,
                wait=lambda: runner.wait_for_quiet(gate.BUSY_CPUS, 30.0),
                labels=(label, ws.target.label),
                progress=progress,
            )
            entries, findings = gate.gate_loop(
                problems,
                sides.reference,
                sides.measure,
                sides.remeasure,
                thresholds,
                progress,
                paired=True,
            )
    reference["problems"] = sides.reference["problems"]
    return entries, findings, runner.finish_run(reference)
