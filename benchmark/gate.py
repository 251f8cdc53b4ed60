"""The regression gate: a run compared with a baseline, as nlsq/scipy ratios.

Every time is normalised by scipy's time measured in the same run (hot: in the same
process, fit by fit; cold: fresh processes run back to back), so a slower or busier
machine moves both and leaves the ratio. A metric regresses when its ratio is worse than
the baseline's by more than the threshold (10%) *and* by more than ``z`` times the
measurement noise; a problem that looks regressed is measured again, and only a change
seen in every attempt fails the gate. Memory (absolute peak RSS) only warns.

Ratios still depend on the machine type (cache sizes, vector units, the balance of
compiling against importing), so stored figures are only used on the machine they were
recorded on, recognised by its fingerprint (:func:`benchmark.machine.machine_fingerprint`).
Elsewhere the gate measures the revision the baseline stands for beside the working tree,
interleaved, and judges the working tree against that
(:func:`benchmark.reference.choose_comparison`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import reference, runner
from benchmark.problems import PROBLEMS, Problem
from benchmark.stats import median

#: Load from other processes (in CPUs, see :class:`benchmark.runner.LoadProbe`) above
#: which the machine counts as busy: a suspect problem waits for it to drop before it is
#: measured again, and reports say so.
BUSY_CPUS = 0.5
#: Extra change a measurement must show per CPU of other processes' load. Other processes
#: cannot inflate CPU-time ratios by taking turns on the worker's CPU, but they do by
#: contending for caches, memory bandwidth and the hypervisor: with 1.3 to 1.6 CPUs of
#: others' load on this project's 2-CPU machine, the same code's hot CPU-time ratio for
#: exponential-1e3 ranged from 1.49 to 2.19 (+47%) between runs. On an idle machine the
#: allowance is 0.
LOAD_ALLOWANCE = 0.35

#: Statuses that fail the gate.
FAILING = frozenset({"regression", "error"})
#: Statuses worth a warning: printed, never failing.
WARNING = frozenset({"warning", "noisy"})


class PerformanceWarning(UserWarning):
    """A benchmark figure got worse without failing the gate (memory, noisy timings)."""


@dataclass(frozen=True)
class Thresholds:
    """When a change counts.

    Parameters
    ----------
    cold, hot, memory : float
        Relative worsening that fails (cold, hot) or warns (memory).
    accuracy : float
        Relative growth of the parameter error that warns.
    z : float
        A timing change must also exceed ``z`` standard errors of the two measurements.
    retries : int
        Extra attempts for a problem whose cold or hot ratio looks regressed.
    """

    cold: float = 0.10
    hot: float = 0.10
    memory: float = 0.10
    accuracy: float = 0.10
    z: float = 2.0
    retries: int = 2


@dataclass(frozen=True)
class Finding:
    """The outcome of one metric of one problem.

    ``value`` and ``baseline`` are nlsq/scipy ratios for ``cold`` and ``hot``, MiB for
    ``memory``, the largest parameter error for ``accuracy``, compile counts for
    ``compiles``; ``change`` is ``value / baseline - 1``; ``noise`` the combined relative
    standard error of the two ratios.
    """

    problem: str
    metric: str
    status: str
    value: float | None = None
    baseline: float | None = None
    change: float | None = None
    noise: float | None = None
    attempts: int = 1
    message: str = ""
    load: float | None = None

    @property
    def failing(self) -> bool:
        return self.status in FAILING


# --- baselines -----------------------------------------------------------------------


def update_baseline(baseline: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """``baseline`` with the problems of ``run`` added or replaced; the rest kept.

    For re-recording some problems (new ones, or an intended change of performance)
    without measuring the whole catalogue again. The update is listed in the
    environment block (``updates``: when, which nlsq, which problems, the load).

    Raises
    ------
    ValueError
        If the run is not comparable with the baseline (platform, CPU pinning,
        settings, library versions or CPU differ): then re-record the whole baseline.
    """
    check_comparable(run, baseline)
    notes = environment_notes(run, baseline)
    recorded = baseline["environment"].get("machine")
    if recorded is not None:
        # Figures of two machine types in one file would match neither.
        notes += reference.machine_differences(run["environment"].get("machine", {}), recorded)
    if notes or run["settings"] != baseline["settings"]:
        differences = notes + ([] if run["settings"] == baseline["settings"] else ["settings"])
        raise ValueError(
            "cannot update the baseline in part: " + "; ".join(differences) + " differ; "
            "re-record the whole baseline"
        )
    env = run["environment"]
    merged = {**baseline, "environment": dict(baseline["environment"])}
    merged["environment"]["updates"] = [
        *baseline["environment"].get("updates", []),
        {
            "timestamp_utc": env["timestamp_utc"],
            "nlsq_source": env["nlsq_source"],
            "load_average_start": env.get("load_average_start"),
            "load_average_end": env.get("load_average_end"),
            "problems": list(run["problems"]),
        },
    ]
    merged["problems"] = {**baseline["problems"], **run["problems"]}
    return merged


# --- evaluation (pure) ---------------------------------------------------------------


def merge_cold(attempts: Iterable[Mapping[str, list]]) -> dict[str, list]:
    """All cold samples of several attempts as one attempt."""
    merged: dict[str, list] = {"nlsq": [], "scipy": []}
    for attempt in attempts:
        for lib in merged:
            merged[lib] += attempt[lib]
    return merged


def merge_hot(attempts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """All hot samples of several attempts as one attempt (compiles: the largest count)."""
    attempts = list(attempts)
    merged: dict[str, Any] = {
        key: [t for a in attempts for t in a[key]]
        for key in ("nlsq_s", "scipy_s", "nlsq_cpu_s", "scipy_cpu_s")
    }
    merged["loop_compiles"] = max(a["loop_compiles"] for a in attempts)
    merged["others_cpus"] = median([runner.others_cpus(a) for a in attempts])
    merged["accuracy"] = attempts[-1]["accuracy"]
    return merged


def classify(
    change: float, noise: float, threshold: float, z: float, allowed: float | None = None
) -> str:
    """Status of a relative change of a ratio with relative noise ``noise``.

    ``regression`` above ``allowed`` (the threshold, or more on a busy machine) and the
    noise; ``noisy`` above the threshold otherwise; ``improvement`` below minus
    ``allowed`` and the noise.
    """
    allowed = threshold if allowed is None else allowed
    significant = math.isnan(noise) or abs(math.log1p(change)) > z * noise
    if change > threshold:
        return "regression" if significant and change > allowed else "noisy"
    if change < -threshold and significant and -change > allowed:
        return "improvement"
    return "ok"


def allowed_change(threshold: float, load: float) -> float:
    """The threshold, raised by :data:`LOAD_ALLOWANCE` per CPU of others' load."""
    return threshold + LOAD_ALLOWANCE * max(load, 0.0)


def _combined(a: float, b: float) -> float:
    return math.hypot(a, b) if not (math.isnan(a) or math.isnan(b)) else math.nan


def _references(metric: str, attempts: list, base_attempts: list, paired: bool) -> list:
    """(ratio, noise, load) of the baseline to hold each attempt against.

    Paired: attempt ``i`` of each side was measured back to back, so a change of load
    hit both and is held against its own partner; otherwise the baseline's pooled samples.
    """
    ratio_of = runner.cold_ratio if metric == "cold" else runner.hot_ratio
    if paired and len(base_attempts) == len(attempts):
        return [(*ratio_of(b), runner.others_cpus(b)) for b in base_attempts]
    merge = merge_cold if metric == "cold" else merge_hot
    return [(*ratio_of(merge(base_attempts)), 0.0)] * len(attempts)


def _timing_finding(
    name: str,
    metric: str,
    attempts: list,
    base_attempts: list,
    threshold: float,
    z: float,
    paired: bool = False,
) -> Finding:
    """The best attempt (smallest change) against the baseline (see :func:`_references`).

    Ratios are CPU-time ratios (see :data:`benchmark.runner.BASES`).
    """
    ratio_of = runner.cold_ratio if metric == "cold" else runner.hot_ratio
    best = None
    references = _references(metric, attempts, base_attempts, paired)
    for attempt, (base, base_noise, base_load) in zip(attempts, references, strict=True):
        ratio, noise = ratio_of(attempt)
        change = ratio / base - 1
        load = max(runner.others_cpus(attempt), base_load)
        combined = _combined(noise, base_noise)
        status = classify(change, combined, threshold, z, allowed_change(threshold, load))
        # A regression only if every attempt is one; otherwise the closest to the baseline.
        rank = (status == "regression", change)
        if best is None or rank < best[0]:
            best = (rank, ratio, base, change, combined, load, status)
    _, ratio, base, change, noise, load, status = best
    if status == "noisy" and change <= allowed_change(threshold, load):
        message = f"{100 * change:+.1f}%, measured while other processes used {load:.1f} CPUs"
    elif status == "noisy":
        message = f"{100 * change:+.1f}% but within the noise (+-{100 * noise:.1f}%)"
    elif status in ("regression", "improvement"):
        message = f"nlsq/scipy {metric} CPU-time ratio {100 * change:+.1f}% vs baseline"
    else:
        message = ""
    return Finding(name, metric, status, ratio, base, change, noise, len(attempts), message, load)


def _memory_finding(name: str, cold: list, base_cold: list, threshold: float) -> Finding:
    value = median([s["peak_rss_mb"] for s in merge_cold(cold)["nlsq"]])
    base = median([s["peak_rss_mb"] for s in merge_cold(base_cold)["nlsq"]])
    change = value / base - 1
    status = "ok"
    if change > threshold:
        status = "warning"
    elif change < -threshold:
        status = "improvement"
    message = f"nlsq peak RSS {value:.0f} MiB, {100 * change:+.1f}%" if status != "ok" else ""
    return Finding(name, "memory", status, value, base, change, None, len(cold), message)


def _compile_findings(name: str, entry: Mapping, base: Mapping) -> list[Finding]:
    findings = []
    if entry["hot"] and base["hot"]:
        # Deterministic: a program rebuilt on every call shows here whatever the noise.
        value = min(a["loop_compiles"] for a in entry["hot"])
        ref = merge_hot(base["hot"])["loop_compiles"]
        status = "regression" if value > ref else "ok"
        fits = len(entry["hot"][0]["nlsq_s"])
        message = f"{value} compiles during {fits} hot fits" if status != "ok" else ""
        findings.append(Finding(name, "compiles", status, value, ref, message=message))
    if entry["cold"] and base["cold"]:
        value = median([s.get("compiles", 0) for s in merge_cold(entry["cold"])["nlsq"]])
        ref = median([s.get("compiles", 0) for s in merge_cold(base["cold"])["nlsq"]])
        if value > ref:
            message = f"first call compiles {value:g} programs (baseline {ref:g})"
            findings.append(Finding(name, "compiles", "warning", value, ref, message=message))
    return findings


def _accuracy_finding(name: str, entry: Mapping, base: Mapping, threshold: float) -> Finding:
    accuracy = entry["hot"][-1]["accuracy"]["nlsq"] if entry["hot"] else None
    cold_ok = all(s["accurate"] for s in merge_cold(entry["cold"])["nlsq"])
    if accuracy is None:
        errors = [s["max_error"] for s in merge_cold(entry["cold"])["nlsq"]]
        accuracy = {"accurate": cold_ok, "max_error": median(errors)}
    base_hot = base["hot"][-1]["accuracy"]["nlsq"] if base["hot"] else None
    ref = base_hot["max_error"] if base_hot else None
    value = accuracy["max_error"]
    if not (accuracy["accurate"] and cold_ok):
        message = "nlsq's fit is not within tolerance of the true parameters"
        return Finding(name, "accuracy", "regression", value, ref, message=message)
    change = None if not ref else value / ref - 1
    # Same seeded data every run: the error only moves when the solver's answer does.
    if change is not None and change > threshold and value - ref > 1e-9:
        message = f"parameter error {100 * change:+.1f}% vs baseline"
        return Finding(name, "accuracy", "warning", value, ref, change, message=message)
    return Finding(name, "accuracy", "ok", value, ref, change)


def evaluate(
    run: Mapping[str, Any],
    baseline: Mapping[str, Any],
    thresholds: Thresholds = Thresholds(),
    paired: bool = False,
) -> list[Finding]:
    """Findings for every problem of ``run``, against ``baseline``.

    ``paired``: the two were measured side by side, attempt for attempt (see
    :func:`_references`).
    """
    findings: list[Finding] = []
    for name, entry in run["problems"].items():
        if entry.get("error"):
            findings.append(Finding(name, "run", "error", message=entry["error"]))
            continue
        base = baseline["problems"].get(name)
        if base is None or base.get("error"):
            # Side by side, an older revision may lack what a new problem needs.
            note = "not in the baseline" if base is None else "the baseline's measurement failed"
            findings.append(Finding(name, "run", "new", message=note))
            continue
        if entry["cold"] and base["cold"]:
            findings.append(
                _timing_finding(
                    name, "cold", entry["cold"], base["cold"], thresholds.cold, thresholds.z, paired
                )
            )
        if entry["hot"] and base["hot"]:
            findings.append(
                _timing_finding(
                    name, "hot", entry["hot"], base["hot"], thresholds.hot, thresholds.z, paired
                )
            )
        if entry["cold"] and base["cold"]:
            findings.append(_memory_finding(name, entry["cold"], base["cold"], thresholds.memory))
        findings += _compile_findings(name, entry, base)
        findings.append(_accuracy_finding(name, entry, base, thresholds.accuracy))
    return findings


def verdict(findings: Iterable[Finding]) -> str:
    """``'regression'``, ``'improvement'`` or ``'no significant change'``."""
    statuses = {f.status for f in findings}
    if statuses & FAILING:
        return "regression"
    if "improvement" in statuses:
        return "improvement"
    return "no significant change"


def suspects(findings: Iterable[Finding]) -> list[tuple[str, str]]:
    """(problem, metric) pairs to measure again: timings above the threshold."""
    return [
        (f.problem, f.metric)
        for f in findings
        if f.metric in ("cold", "hot") and f.status in ("regression", "noisy")
    ]


def environment_notes(run: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """Differences between the run's and the baseline's environments worth knowing."""
    env, ref = run["environment"], baseline["environment"]
    notes = [
        f"{key} {ref.get(key)} in the baseline, {env.get(key)} now"
        for key in ("python", "jax", "jaxlib", "numpy", "scipy", "cpu_model")
        if env.get(key) != ref.get(key)
    ]
    return notes


def check_comparable(run: Mapping[str, Any], baseline: Mapping[str, Any]) -> None:
    """Refuse to compare runs whose timings mean different things.

    Raises
    ------
    ValueError
        Different platform, or CPU pinning on in one and off in the other.
    """
    env, ref = run["environment"], baseline["environment"]
    if env["platform"] != ref["platform"]:
        raise ValueError(f"baseline is for {ref['platform']}, this run is {env['platform']}")
    if run["settings"]["pin_cpu"] != baseline["settings"]["pin_cpu"]:
        raise ValueError("baseline and run differ in CPU pinning; timings are not comparable")


# --- the gate (measures) -------------------------------------------------------------


def gate_loop(
    problems: list[Problem],
    baseline: Mapping[str, Any],
    measure: Callable[[Problem], dict],
    remeasure: Callable[[dict, Problem, str], None],
    thresholds: Thresholds = Thresholds(),
    progress: runner.Progress = runner._stderr,
    paired: bool = False,
) -> tuple[dict[str, Any], list[Finding]]:
    """Measure, evaluate, measure the suspects again (up to ``thresholds.retries``).

    ``baseline`` may be filled by ``measure`` as it goes (side by side); it is only read
    once every problem has been measured. ``paired``: see :func:`evaluate`.

    Returns
    -------
    problems : dict
        The run's ``problems`` section, attempts included.
    findings : list of Finding
    """
    entries: dict[str, Any] = {}
    for i, problem in enumerate(problems, 1):
        entries[problem.name] = measure(problem)
        line = runner.describe_progress(problem.name, entries[problem.name])
        progress(f"[{i}/{len(problems)}] {line}")
    shell = {"problems": entries}
    findings = evaluate(shell, baseline, thresholds, paired)
    for attempt in range(thresholds.retries):
        todo = suspects(findings)
        if not todo:
            break
        for name, metric in todo:
            progress(f"re-measuring {name} ({metric}), attempt {attempt + 2}")
            remeasure(entries[name], PROBLEMS.get(name) or _by_name(problems, name), metric)
        findings = evaluate(shell, baseline, thresholds, paired)
    return entries, findings


def _by_name(problems: list[Problem], name: str) -> Problem:
    return next(p for p in problems if p.name == name)


#: ``measure(side, problem, metric)``: a problem entry holding one attempt of ``metric``
#: on side 0 (the baseline's revision) or 1 (the working tree).
MeasureSide = Callable[[int, Problem, str], dict]


class SideBySide:
    """Both revisions measured in one run, interleaved, for :func:`gate_loop`.

    Each metric of each problem is measured once per side, the order alternating
    (problem 1: cold A B, hot B A; problem 2: cold B A, hot A B...) so that a drift of load
    hits both sides alike. A suspect is measured again on *both* sides, after one wait
    for a quiet machine, and each attempt is judged against its partner (``paired``).
    Retries use the same settings as the first round (not the larger
    :meth:`benchmark.runner.Settings.remeasure`): the pairing, not more samples, is what
    makes them conclusive, and a retry of two sides then costs about what a stored-mode
    retry of one does.

    Parameters
    ----------
    measure : MeasureSide
        One attempt of one metric on one side (the workers).
    metrics : tuple of str
        ``'cold'`` and/or ``'hot'``, measured in this order.
    wait : callable
        Called once before each re-measurement of both sides.
    labels : (str, str)
        Names of the sides for the progress lines.
    progress : callable
        Where the reference side's progress lines go (:func:`gate_loop` prints the other's).
    """

    def __init__(
        self,
        measure: MeasureSide,
        metrics: tuple[str, ...],
        wait: Callable[[], object] = lambda: None,
        labels: tuple[str, str] = ("baseline revision", "working tree"),
        progress: runner.Progress = runner._stderr,
    ) -> None:
        self._measure, self.metrics, self._wait = measure, metrics, wait
        self.labels, self._progress = labels, progress
        #: The baseline revision's ``problems`` section, filled as problems are measured.
        self.reference: dict[str, Any] = {"problems": {}}
        self._problems = 0
        self._retries = 0

    def measure(self, problem: Problem) -> dict[str, Any]:
        """Measure both sides; the working tree's entry (the reference's is kept)."""
        entries = [{"problem": problem.describe(), "cold": [], "hot": []} for _ in range(2)]
        for j, metric in enumerate(self.metrics):
            for side in _order(self._problems + j):
                extend_entry(entries[side], self._measure(side, problem, metric))
        self._problems += 1
        self.reference["problems"][problem.name] = entries[0]
        self._progress(f"  {self.labels[0]}: {runner.describe_progress(problem.name, entries[0])}")
        return entries[1]

    def remeasure(self, entry: dict[str, Any], problem: Problem, metric: str) -> None:
        """One more attempt of ``metric`` on both sides (``entry`` is the working tree's)."""
        self._wait()
        into = (self.reference["problems"][problem.name], entry)
        for side in _order(self._retries):
            extend_entry(into[side], self._measure(side, problem, metric))
        self._retries += 1


def _order(turn: int) -> tuple[int, int]:
    return (0, 1) if turn % 2 == 0 else (1, 0)


def extend_entry(into: dict[str, Any], entry: Mapping[str, Any]) -> None:
    """Add ``entry``'s attempts (and error, if any) to the problem entry ``into``."""
    into["cold"] += entry.get("cold", [])
    into["hot"] += entry.get("hot", [])
    if entry.get("error"):
        into["error"] = entry["error"]


def run_gate(
    problems: list[Problem],
    baseline: Mapping[str, Any] | None = None,
    target: runner.Target | None = None,
    settings: runner.Settings | None = None,
    thresholds: Thresholds = Thresholds(),
    metrics: tuple[str, ...] = ("cold", "hot"),
    progress: runner.Progress = runner._stderr,
    mode: str = "auto",
) -> tuple[dict[str, Any], list[Finding]]:
    """Measure ``problems`` and compare them with a baseline (see :mod:`benchmark.reference`).

    Parameters
    ----------
    baseline : dict, optional
        Compare with this instead of the committed baselines of this platform.
    target : Target, optional
        The nlsq under test (default: the working tree); its ``env`` applies to it only,
        never to the baseline's revision measured beside it.
    mode : {'auto', 'stored', 'side-by-side'}

    Returns
    -------
    run : dict
        The run document (all attempts included); ``baseline`` describes the comparison,
        and side by side ``reference`` holds the run of the baseline's revision.
    findings : list of Finding

    Raises
    ------
    benchmark.reference.MissingBaseline
        No baseline for this platform.
    benchmark.reference.MissingRevision
        Side by side, and the baseline's commit is not in this repository.
    """
    target = target or runner.Target()
    settings = settings or runner.PROFILES["quick"]
    with runner.Workspace(target, settings) as ws:
        run = runner.new_run(ws, settings)
        comparison = reference.select_comparison(run["environment"], baseline, mode)
        progress(comparison.describe(run["environment"]["machine"]))
        if comparison.mode == reference.STORED:
            check_comparable(run, comparison.baseline)
            run["problems"], findings = gate_loop(
                problems,
                comparison.baseline,
                lambda p: runner.measure_problem(p, ws, settings, metrics),
                lambda entry, p, metric: runner.remeasure(
                    entry, p, ws, metric, settings, quiet_below_cpus=BUSY_CPUS
                ),
                thresholds,
                progress,
            )
        else:
            from benchmark import compare  # compare imports this module

            commit = reference.reference_commit(comparison.baseline, [p.name for p in problems])
            run["problems"], findings, run["reference"] = compare.gate_side_by_side(
                problems,
                commit,
                ws,
                settings,
                metrics,
                thresholds,
                progress,
                baseline=reference.describe_path(comparison.path),
            )
    run["baseline"] = _comparison_record(comparison)
    if "reference" in run:
        run["baseline"]["measured"] = run["reference"]["environment"]["nlsq_source"]
    return runner.finish_run(run), findings


def _comparison_record(comparison: reference.Comparison) -> dict[str, Any]:
    """The run's ``baseline`` block: which baseline, which mode, why."""
    env = comparison.baseline["environment"]
    record = {key: env[key] for key in ("timestamp_utc", "nlsq_source", "updates") if key in env}
    record.update(
        mode=comparison.mode,
        path=None if comparison.path is None else reference.describe_path(comparison.path),
        reason=comparison.reason,
        machine_differences=list(comparison.differences),
    )
    return record


def save_gate_run(run: Mapping[str, Any], path: Path) -> list[Path]:
    """Write a gate run to ``path``, and its side-by-side reference run next to it.

    The reference goes to ``<stem>-reference.json`` so that ``python -m benchmark report
    --run PATH --baseline <stem>-reference.json`` renders the comparison again; a stored-mode
    run removes an earlier run's, which would not belong to it.
    """
    path = Path(path)
    reference_path = path.with_name(f"{path.stem}-reference.json")
    paths = [runner.save({k: v for k, v in run.items() if k != "reference"}, path)]
    if "reference" in run:
        paths.append(runner.save(run["reference"], reference_path))
    else:
        reference_path.unlink(missing_ok=True)
    return paths


def _fmt(value: float | None, spec: str) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def format_findings(findings: Iterable[Finding], only_notable: bool = False) -> str:
    """A plain-text table of findings (for the terminal and CI logs)."""
    rows = [
        ("problem", "metric", "status", "value", "baseline", "change", "noise", "tries", "note")
    ]
    for f in findings:
        if only_notable and f.status == "ok":
            continue
        rows.append(
            (
                f.problem,
                f.metric,
                f.status.upper() if f.status in FAILING else f.status,
                _fmt(f.value, ".4g"),
                _fmt(f.baseline, ".4g"),
                "" if f.change is None else f"{100 * f.change:+.1f}%",
                "" if f.noise is None or math.isnan(f.noise) else f"{100 * f.noise:.1f}%",
                str(f.attempts),
                f.message,
            )
        )
    if len(rows) == 1:
        return "(no notable findings)" if only_notable else "(no findings)"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1]
        for r in rows
    )
