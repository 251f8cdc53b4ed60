"""Command line of the benchmark suite: ``python -m benchmark COMMAND``.

Commands::

    run       measure problems, write the run as JSON
    gate      measure and compare with the committed baseline (its stored figures on the
              machine it was recorded on, else its revision measured side by side);
              exit 1 on a regression
    baseline  measure (the whole catalogue by default) and write the platform's baseline,
              or with --machine (the quick problems by default) this machine type's
    report    a Markdown report with plots, of a saved run or of a fresh one
    compare   measure two git revisions interleaved and report the difference

See benchmark/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from benchmark import gate, reference, report, runner
from benchmark.problems import select

RESULTS_DIR = runner.BENCHMARK_DIR / "results"
REPORTS_DIR = runner.BENCHMARK_DIR / "reports"


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def _report_name(run: dict) -> str:
    """``<date>-<commit>`` of the measured nlsq, e.g. ``2026-11-21-2d2568c``."""
    env = run["environment"]
    commit = (env.get("nlsq_source", {}).get("commit") or "unknown")[:7]
    return f"{env['timestamp_utc'][:10]}-{commit}"


def _env_pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--inject wants NAME=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def _add_measure_options(
    parser: argparse.ArgumentParser, problems: str | None, profile: str
) -> None:
    """``--problems`` (None: the command picks), ``--profile``, ``--no-pin``."""
    default = problems or "all; with --machine, quick"
    parser.add_argument(
        "--problems",
        default=problems,
        help=f"'all', 'quick', a tag, a family, or comma-separated names (default {default})",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(runner.PROFILES),
        default=profile,
        help=f"repeats and time budgets (default {profile})",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let workers use every CPU (not comparable with pinned baselines)",
    )


def _settings(args: argparse.Namespace) -> runner.Settings:
    settings = runner.PROFILES[args.profile]
    if args.no_pin:
        from dataclasses import replace

        settings = replace(settings, pin_cpu=False)
    return settings


def _target(args: argparse.Namespace) -> runner.Target:
    injected = _env_pairs(args.inject)
    root = Path(args.nlsq_root).resolve()
    label = "this checkout" if root == runner.REPO_ROOT else f"nlsq of {root}"
    label += f", injected {injected}" if injected else ""
    return runner.Target(root, injected, label)


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nlsq-root",
        default=str(runner.REPO_ROOT),
        help="directory holding the nlsq package to measure (default: this checkout)",
    )
    parser.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the measured processes, e.g. NLSQ_CACHE_ENABLE=0",
    )


def cmd_run(args: argparse.Namespace) -> int:
    run = runner.run_suite(select(args.problems), _target(args), _settings(args))
    path = runner.save(run, Path(args.output or RESULTS_DIR / f"run-{_stamp()}.json"))
    print(f"run written to {path}")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    baseline = runner.load(Path(args.baseline)) if args.baseline else None
    run, findings = gate.run_gate(
        select(args.problems), baseline, _target(args), _settings(args), mode=args.mode
    )
    paths = gate.save_gate_run(run, Path(args.output or RESULTS_DIR / "gate-latest.json"))
    print(gate.format_findings(findings, only_notable=not args.verbose))
    written = " and ".join(str(p) for p in paths)
    print(f"\nverdict: {gate.verdict(findings)} ({run['baseline']['mode']}; written to {written})")
    return 1 if gate.verdict(findings) == "regression" else 0


def _baseline_output(args: argparse.Namespace, run: dict) -> Path:
    """``--output``, else this machine's per-machine path (``--machine``) or the platform's."""
    if args.output:
        return Path(args.output)
    env = run["environment"]
    if args.machine:
        return reference.machine_baseline_path(env["platform"], env["machine"]["id"])
    return reference.baseline_path(env["platform"])


def cmd_baseline(args: argparse.Namespace) -> int:
    problems = args.problems or ("quick" if args.machine else "all")
    run = runner.run_suite(select(problems), _target(args), _settings(args))
    errors = [n for n, e in run["problems"].items() if e.get("error")]
    if errors:
        print(f"not writing a baseline: problems failed: {', '.join(errors)}", file=sys.stderr)
        return 1
    path = _baseline_output(args, run)
    if args.update:
        run = gate.update_baseline(runner.load(path), run)
    runner.save(run, path)
    print(f"baseline written to {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.run:
        run = runner.load(Path(args.run))
    else:
        run = runner.run_suite(select(args.problems), _target(args), _settings(args))
    baseline = None
    if not args.no_baseline:
        path = Path(args.baseline) if args.baseline else None
        try:
            baseline = (
                runner.load(path)
                if path
                else reference.load_baseline(run["environment"]["platform"])
            )
        except reference.MissingBaseline as error:
            print(f"{error}; the report has no change columns", file=sys.stderr)
    out = Path(args.out or REPORTS_DIR / _report_name(run))
    try:
        path = report.write_report(run, out, baseline, with_plots=not args.no_plots)
    except RuntimeError as error:  # MissingMatplotlib
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from benchmark import compare

    run_a, run_b, findings, labels = compare.compare_revisions(
        args.rev_a, args.rev_b, select(args.problems), _settings(args), rounds=args.rounds
    )
    out = Path(args.out or RESULTS_DIR / f"compare-{_stamp()}")
    # Both runs first: a report can always be rendered again from them.
    runner.save(run_a, out / "run_a.json")
    runner.save(run_b, out / "run.json")
    try:
        path = report.write_report(
            run_b,
            out,
            baseline=run_a,
            findings=findings,
            with_plots=not args.no_plots,
            title=f"nlsq performance: {labels[1]} against {labels[0]}",
            baseline_label=labels[0],
        )
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(gate.format_findings(findings, only_notable=True))
    print(f"\n{labels[1]} against {labels[0]}: {gate.verdict(findings)} (report: {path})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="measure problems, write the run as JSON")
    _add_measure_options(p, "all", "full")
    _add_target_options(p)
    p.add_argument("--output", help="JSON path (default benchmark/results/run-<time>.json)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("gate", help="compare a fresh run with the baseline; exit 1 if regressed")
    _add_measure_options(p, "quick", "quick")
    _add_target_options(p)
    p.add_argument("--baseline", help="baseline JSON (default: benchmark/baselines/<platform>)")
    p.add_argument(
        "--mode",
        choices=reference.MODES,
        default="auto",
        help="'stored': the baseline's figures; 'side-by-side': measure its revision now; "
        "'auto' (default): stored if the baseline was recorded on this machine type",
    )
    p.add_argument("--output", help="run JSON (default benchmark/results/gate-latest.json)")
    p.add_argument("--verbose", action="store_true", help="list every finding, not the notable")
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser("baseline", help="record benchmark/baselines/<platform>.json")
    _add_measure_options(p, None, "baseline")
    _add_target_options(p)
    p.add_argument(
        "--machine",
        action="store_true",
        help="record this machine type's baseline, benchmark/baselines/<platform>/"
        "<machine-id>.json, of the quick problems unless --problems says otherwise",
    )
    p.add_argument(
        "--output",
        help="path (default benchmark/baselines/<platform>.json, or with --machine "
        "benchmark/baselines/<platform>/<machine-id>.json)",
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="re-record only --problems in the existing baseline, keeping the others",
    )
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("report", help="write a Markdown performance report with plots")
    _add_measure_options(p, "all", "full")
    _add_target_options(p)
    p.add_argument("--run", help="report on this saved run instead of measuring now")
    p.add_argument("--baseline", help="compare with this run (default: the platform baseline)")
    p.add_argument("--no-baseline", action="store_true", help="no comparison columns")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (no matplotlib)")
    p.add_argument("--out", help="output directory (default benchmark/reports/<date>-<commit>)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="compare two git revisions ('.' = working tree)")
    p.add_argument("rev_a")
    p.add_argument("rev_b")
    _add_measure_options(p, "quick", "quick")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (no matplotlib)")
    p.add_argument("--out", help="output directory (default benchmark/results/compare-<time>)")
    p.set_defaults(func=cmd_compare)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, reference.MissingBaseline, reference.MissingRevision) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
