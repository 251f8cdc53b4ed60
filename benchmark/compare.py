"""Measure two git revisions of nlsq with the same harness, interleaved, and compare them.

Each revision is checked out in a temporary ``git worktree`` (``.`` means the working
tree as it is); this checkout's harness measures both, so a revision from before the
suite existed can be measured too. Problems are measured revision A, revision B, B, A...
so that a change of machine load during the run hits both alike.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmark import gate, runner
from benchmark.problems import Problem

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
    into = problems[name]
    into["cold"] += entry["cold"]
    into["hot"] += entry["hot"]
    if entry.get("error"):
        into["error"] = entry["error"]
