"""Run the catalogue: every measurement in a fresh worker process, results as one dict.

A run is a JSON document::

    {"schema": 1, "environment": {...}, "settings": {...},
     "problems": {name: {"problem": {...}, "cold": [attempt, ...], "hot": [attempt, ...]}}}

A *cold attempt* holds interleaved fresh-process samples of both libraries
(``{"nlsq": [...], "scipy": [...]}``); a *hot attempt* holds the per-fit times of one
worker in which nlsq and scipy alternated. A problem measured again (because it looked
regressed) gets a second attempt; nothing is averaged away.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmark.machine import cpu_model, machine_fingerprint
from benchmark.problems import Problem
from benchmark.stats import median, paired_ratio, round_sig
from benchmark.worker import RESULT_PREFIX

SCHEMA = 1
BENCHMARK_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARK_DIR.parent

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Settings:
    """How much to measure; stored with every run and compared with the baseline's.

    Parameters
    ----------
    cold_repeats : int
        Fresh processes per library and problem (interleaved nlsq, scipy, scipy, nlsq...).
    hot_min_repeats, hot_max_repeats : int
        Bounds on the number of hot fit pairs.
    hot_budget_s : float
        Hot pairs continue until the timed fits add up to this many seconds.
    pin_cpu : bool
        Run each worker on one CPU (the idlest when it starts), BLAS single-threaded.
    """

    cold_repeats: int = 3
    hot_min_repeats: int = 7
    hot_max_repeats: int = 200
    hot_budget_s: float = 1.5
    pin_cpu: bool = True

    def remeasure(self) -> Settings:
        """Settings of a second look at a suspect problem: more samples."""
        return replace(self, cold_repeats=self.cold_repeats + 2, hot_budget_s=2 * self.hot_budget_s)


PROFILES: dict[str, Settings] = {
    "quick": Settings(),
    "full": Settings(hot_budget_s=2.0),
    "baseline": Settings(cold_repeats=5, hot_budget_s=3.0, hot_max_repeats=300),
}


@dataclass(frozen=True)
class Target:
    """The nlsq under test: the directory holding its ``nlsq`` package, extra environment.

    ``env`` is how a slowdown is injected (e.g. ``{"NLSQ_CACHE_ENABLE": "0"}``).
    """

    nlsq_root: Path = REPO_ROOT
    env: Mapping[str, str] = field(default_factory=dict)
    label: str = "working tree"


class WorkerError(RuntimeError):
    """A worker process failed or printed no result."""


# --- environment ---------------------------------------------------------------------


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(v, 2) for v in os.getloadavg()]
    return None


def git_revision(root: Path) -> dict[str, Any]:
    """Commit of ``root`` and whether its ``nlsq/`` differs from it."""

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--", "nlsq")),
        }
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def platform_key(environment: Mapping[str, Any]) -> str:
    """Baseline file stem: OS, architecture and JAX backend, e.g. ``linux-x86_64-cpu``."""
    return f"{sys.platform}-{platform.machine().lower()}-{environment['jax_backend']}"


def idlest_cpu(interval_s: float = 0.1) -> int | None:
    """The CPU of this process's affinity set with the most idle time over ``interval_s``.

    None where CPU pinning is not available (not Linux).
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = os.sched_getaffinity(0)

    def idle() -> dict[int, int]:
        times = {}
        with open("/proc/stat") as fh:
            for line in fh:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    times[int(name[3:])] = int(fields[3]) + int(fields[4])  # idle + iowait
        return times

    try:
        before = idle()
        time.sleep(interval_s)
        after = idle()
    except OSError:
        return min(allowed)
    return max(allowed, key=lambda cpu: after.get(cpu, 0) - before.get(cpu, 0))


def _machine_busy_s() -> float | None:
    """CPU seconds all processes have used since boot (``/proc/stat``; None elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy;
    # steal is time the hypervisor gave to other machines.
    busy = sum(fields[:3]) + sum(fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class LoadProbe:
    """How busy the rest of the machine was while one worker ran.

    Started just before the worker; :meth:`others_cpus` after it has been waited for.
    """

    def __init__(self) -> None:
        self._busy = _machine_busy_s()
        self._own = _children_cpu_s()
        self._start = time.perf_counter()

    def others_cpus(self) -> float | None:
        """Average number of CPUs busy with other processes' work (0 on an idle machine)."""
        busy = _machine_busy_s()
        if busy is None or self._busy is None:
            return None
        own = _children_cpu_s() - self._own
        elapsed = time.perf_counter() - self._start
        return round(max(busy - self._busy - own, 0.0) / elapsed, 3)


def machine_load(interval_s: float = 1.0) -> float | None:
    """CPUs' worth of work done by all processes over the next ``interval_s``."""
    before = _machine_busy_s()
    time.sleep(interval_s)
    after = _machine_busy_s()
    return None if before is None or after is None else (after - before) / interval_s


def wait_for_quiet(
    below_cpus: float, max_wait_s: float, progress: Progress = _stderr
) -> float | None:
    """Wait (at most ``max_wait_s``) until other processes use fewer than ``below_cpus``.

    A problem that looked regressed is measured again after this, so that a burst of
    someone else's work is not measured twice. Returns the last load seen.
    """
    deadline = time.monotonic() + max_wait_s
    load = machine_load()
    if load is not None and load >= below_cpus:
        progress(
            f"  machine busy ({load:.1f} CPUs used by others); waiting up to {max_wait_s:.0f} s"
        )
    while load is not None and load >= below_cpus and time.monotonic() < deadline:
        load = machine_load()
    return load


# --- workers -------------------------------------------------------------------------


class Workspace:
    """A scratch directory from which workers import the nlsq under test.

    ``pkgs/`` holds two links, ``nlsq`` (the target's) and ``benchmark`` (this one), and
    is the workers' only ``PYTHONPATH`` entry: a revision checked out elsewhere is
    measured by this harness. Workers run with this directory as their working
    directory, so the repository's own ``nlsq`` is never picked up by accident.
    """

    def __init__(self, target: Target, settings: Settings) -> None:
        self.target = target
        self.settings = settings
        self.root = Path(tempfile.mkdtemp(prefix="nlsq-bench-"))
        pkgs = self.root / "pkgs"
        pkgs.mkdir()
        (pkgs / "nlsq").symlink_to(Path(target.nlsq_root).resolve() / "nlsq")
        (pkgs / "benchmark").symlink_to(BENCHMARK_DIR)
        self._pkgs = pkgs

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def new_cache_dir(self) -> Path:
        """An empty directory for one process's persistent compilation cache."""
        return Path(tempfile.mkdtemp(prefix="disk-cache-", dir=self.root))

    def env(self, cache_dir: Path | None = None) -> dict[str, str]:
        """The environment of a worker: isolated from the user's nlsq configuration."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("NLSQ_")
            and k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "JAX_COMPILATION_CACHE_DIR")
        }
        # Bytecode is cached as for an installed package, whatever the caller's setting,
        # so a checkout run with PYTHONDONTWRITEBYTECODE=1 (CI) measures the same import.
        env["PYTHONPATH"] = str(self._pkgs)
        env["NLSQ_CONFIG"] = str(self.root / "absent-config.json")
        env["NLSQ_DISK_CACHE_DIR"] = str(cache_dir or self.new_cache_dir())
        if self.settings.pin_cpu:
            cpu = idlest_cpu()
            if cpu is not None:
                env["NLSQ_BENCH_CPUS"] = str(cpu)
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[name] = "1"
        env.update(self.target.env)
        return env

    def run(self, args: list[str], cache_dir: Path | None = None, timeout_s: float = 900):
        """Run ``python -m benchmark.worker ARGS`` and return its result dict.

        The result gains ``others_cpus``: how many CPUs' worth of work other processes
        did meanwhile (see :func:`others_cpus`).
        """
        env = self.env(cache_dir)
        load = LoadProbe()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmark.worker", *args],
                cwd=self.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise WorkerError(f"worker {args} timed out after {timeout_s} s") from error
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
        if proc.returncode != 0 or not lines:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise WorkerError(f"worker {args} exited {proc.returncode}:\n{tail}")
        result = json.loads(lines[-1][len(RESULT_PREFIX) :])
        expected = (Path(self.target.nlsq_root).resolve() / "nlsq").resolve()
        if "nlsq_path" in result and Path(result["nlsq_path"]) != expected:
            raise WorkerError(f"worker imported nlsq from {result['nlsq_path']}, not {expected}")
        result["others_cpus"] = load.others_cpus()
        if "NLSQ_BENCH_CPUS" in env:
            result["cpu"] = env["NLSQ_BENCH_CPUS"]
        return result


# --- measurements --------------------------------------------------------------------


def _compact_cold(sample: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "import_s",
        "first_call_s",
        "cold_s",
        "import_cpu_s",
        "first_call_cpu_s",
        "cold_cpu_s",
        "compile_s",
        "peak_rss_mb",
        "rss_after_import_mb",
    )
    out = {k: round_sig(sample[k]) for k in keep if k in sample}
    out.update(
        {
            k: sample[k]
            for k in ("compiles", "disk_hits", "accurate", "others_cpus", "cpu")
            if k in sample
        }
    )
    out["max_error"] = round_sig(sample["max_error"], 3)
    return out


def measure_cold(problem: Problem, ws: Workspace, settings: Settings) -> dict[str, list]:
    """Fresh-process samples of both libraries, interleaved (nlsq, scipy, scipy, nlsq...).

    Each nlsq process gets an empty persistent-cache directory, except for problems
    that measure a warm disk cache: those share one, filled by an untimed first run.
    """
    warm_dir = None
    if problem.warm_disk_cache:
        warm_dir = ws.new_cache_dir()
        ws.run(["cold", "nlsq", problem.name], cache_dir=warm_dir)
    samples: dict[str, list] = {"nlsq": [], "scipy": []}
    for i in range(settings.cold_repeats):
        for lib in ("nlsq", "scipy") if i % 2 == 0 else ("scipy", "nlsq"):
            result = ws.run(["cold", lib, problem.name], cache_dir=warm_dir)
            samples[lib].append(_compact_cold(result))
    return samples


def measure_hot(problem: Problem, ws: Workspace, settings: Settings) -> dict[str, Any]:
    """One worker in which nlsq and scipy fits alternate on fresh data."""
    result = ws.run(
        [
            "hot",
            problem.name,
            f"--min-repeats={settings.hot_min_repeats}",
            f"--max-repeats={settings.hot_max_repeats}",
            f"--budget-s={settings.hot_budget_s}",
        ]
    )
    for key in ("nlsq_s", "scipy_s", "nlsq_cpu_s", "scipy_cpu_s"):
        result[key] = [round_sig(t) for t in result[key]]
    for acc in result["accuracy"].values():
        acc["max_error"] = round_sig(acc["max_error"], 3)
    result.pop("nlsq_path", None)
    return result


#: Time bases: CPU time of the (pinned) worker, which other processes cannot inflate by
#: taking turns on its CPU, and wall-clock time, what a user waits.
BASES = ("cpu", "wall")


def cold_ratio(attempt: Mapping[str, list], basis: str = "cpu") -> tuple[float, float]:
    """nlsq cold time over scipy's (paired in run order), and its relative noise."""
    key = "cold_cpu_s" if basis == "cpu" else "cold_s"
    return paired_ratio([s[key] for s in attempt["nlsq"]], [s[key] for s in attempt["scipy"]])


def hot_ratio(attempt: Mapping[str, Any], basis: str = "cpu") -> tuple[float, float]:
    """nlsq hot time over scipy's (paired fit by fit), and its relative noise."""
    suffix = "_cpu_s" if basis == "cpu" else "_s"
    return paired_ratio(attempt["nlsq" + suffix], attempt["scipy" + suffix])


def others_cpus(attempt: Mapping[str, Any]) -> float:
    """Median load from other processes (in CPUs) over an attempt's workers."""
    if "nlsq" in attempt:  # cold: one value per process
        values = [s.get("others_cpus") for lib in ("nlsq", "scipy") for s in attempt[lib]]
    else:
        values = [attempt.get("others_cpus")]
    values = [v for v in values if v is not None]
    return median(values) if values else 0.0


def describe_progress(name: str, entry: Mapping[str, Any]) -> str:
    """One line: the latest cold and hot figures of a problem (wall-clock medians)."""
    if entry.get("error"):
        return f"{name}: ERROR {entry['error'].splitlines()[0]}"
    parts = [name + ":"]
    if entry.get("cold"):
        cold = entry["cold"][-1]
        ratio, _ = cold_ratio(cold)
        parts.append(
            f"cold nlsq {median([s['cold_s'] for s in cold['nlsq']]):.2f} s, scipy "
            f"{median([s['cold_s'] for s in cold['scipy']]):.2f} s (cpu ratio {ratio:.2f});"
        )
    if entry.get("hot"):
        hot = entry["hot"][-1]
        ratio, noise = hot_ratio(hot)
        parts.append(
            f"hot nlsq {1e3 * median(hot['nlsq_s']):.3g} ms, scipy "
            f"{1e3 * median(hot['scipy_s']):.3g} ms (cpu ratio {ratio:.3f} +-{100 * noise:.1f}%, "
            f"{len(hot['nlsq_s'])} pairs)"
        )
    load = [others_cpus(a) for metric in ("cold", "hot") for a in entry.get(metric, [])[-1:]]
    if load:
        parts.append(f"[others' load {max(load):.1f} CPUs]")
    return " ".join(parts)


def measure_problem(
    problem: Problem,
    ws: Workspace,
    settings: Settings,
    metrics: tuple[str, ...] = ("cold", "hot"),
) -> dict[str, Any]:
    """A problem's entry in a run; a failing worker is recorded, not raised."""
    entry: dict[str, Any] = {"problem": problem.describe(), "cold": [], "hot": []}
    try:
        if "cold" in metrics:
            entry["cold"].append(measure_cold(problem, ws, settings))
        if "hot" in metrics:
            entry["hot"].append(measure_hot(problem, ws, settings))
    except WorkerError as error:
        entry["error"] = str(error)
    return entry


def remeasure(
    entry: dict[str, Any],
    problem: Problem,
    ws: Workspace,
    metric: str,
    settings: Settings,
    quiet_below_cpus: float = 0.5,
    max_wait_s: float = 30.0,
) -> None:
    """Append one more attempt of ``metric`` (``'cold'`` or ``'hot'``) to ``entry``.

    Waits first, up to ``max_wait_s``, for the machine to be quiet.
    """
    wait_for_quiet(quiet_below_cpus, max_wait_s)
    measure = measure_cold if metric == "cold" else measure_hot
    try:
        entry[metric].append(measure(problem, ws, settings.remeasure()))
    except WorkerError as error:
        entry["error"] = str(error)


def environment(ws: Workspace) -> dict[str, Any]:
    """Versions, machine and device of a run (the ``env`` worker also warms the page cache)."""
    env = ws.run(["env"])
    for key in ("nlsq_path", "others_cpus", "cpu"):
        env.pop(key, None)
    return {
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform_key(env),
        "os": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": machine_fingerprint(),
        **env,
        "nlsq_source": {
            "root": str(Path(ws.target.nlsq_root).resolve()),
            "label": ws.target.label,
            **git_revision(Path(ws.target.nlsq_root)),
        },
        "injected_env": dict(ws.target.env),
        "cold_disk_cache": "empty temporary directory per process (unless warm_disk_cache)",
        "load_average_start": load_average(),
    }


def new_run(ws: Workspace, settings: Settings) -> dict[str, Any]:
    """An empty run document with its environment block."""
    return {
        "schema": SCHEMA,
        "environment": environment(ws),
        "settings": asdict(settings),
        "problems": {},
    }


def finish_run(run: dict[str, Any]) -> dict[str, Any]:
    run["environment"]["load_average_end"] = load_average()
    return run


def run_suite(
    problems: list[Problem],
    target: Target | None = None,
    settings: Settings | None = None,
    progress: Progress = _stderr,
    metrics: tuple[str, ...] = ("cold", "hot"),
) -> dict[str, Any]:
    """Measure ``problems`` (``metrics``, memory, accuracy) against scipy in one run."""
    target = target or Target()
    settings = settings or PROFILES["full"]
    with Workspace(target, settings) as ws:
        run = new_run(ws, settings)
        for i, problem in enumerate(problems, 1):
            entry = measure_problem(problem, ws, settings, metrics)
            run["problems"][problem.name] = entry
            progress(f"[{i}/{len(problems)}] {describe_progress(problem.name, entry)}")
    return finish_run(run)


def to_json(run: Mapping[str, Any]) -> str:
    """Indented JSON with each list of numbers and each flat record on one line."""
    text = json.dumps(run, indent=1)
    # Containers without nested containers (no brackets or braces inside) fit on a line;
    # whitespace outside strings is only indentation, and keys and values have no newlines.
    return re.sub(r"[\[{][^\[\]{}]*[\]}]", lambda m: re.sub(r"\s*\n\s*", " ", m.group(0)), text)


def save(run: Mapping[str, Any], path: Path) -> Path:
    """Write a run (or baseline) as JSON (see :func:`to_json`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(run) + "\n")
    return path


def load(path: Path) -> dict[str, Any]:
    """Read a run (or baseline) written by :func:`save`."""
    run = json.loads(Path(path).read_text())
    if run.get("schema") != SCHEMA:
        raise ValueError(f"{path}: benchmark schema {run.get('schema')!r}, expected {SCHEMA}")
    return run
