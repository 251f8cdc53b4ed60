"""The persistent (disk) compilation cache, each case in a fresh Python process.

JAX's persistent cache directory is chosen once per process, so every scenario runs a
child interpreter with its own ``NLSQ_DISK_CACHE_DIR`` (and an absent config file), which
prints a JSON report: the fit, its ``cache_stats``, ``cache_info()``, the warnings, and
JAX's own monitoring events for the solver program, to cross-check nlsq's counts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

CHILD = textwrap.dedent(
    """
    import json, warnings

    import jax

    events = {"program_compiles": 0, "disk_hits": 0}

    def on_duration(event, duration, **kwargs):
        if (event == "/jax/core/compile/backend_compile_duration"
                and kwargs.get("fun_name") == "jit(program)"):
            events["program_compiles"] += 1

    def on_event(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            events["disk_hits"] += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)

    import jax.numpy as jnp
    import numpy as np

    import nlsq

    def model(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    x = np.linspace(0.0, 4.0, 200)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.01 * np.sin(7.0 * x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = nlsq.CurveFit(model, p0=[1.0, 1.0, 0.0]).fit(x, y)
    print(json.dumps({
        "popt": result.popt.tolist(),
        "pcov": result.pcov.tolist(),
        "nfev": result.nfev,
        "cache_stats": result.cache_stats,
        "cache_info": nlsq.cache_info(),
        "events": events,
        "warnings": [[w.category.__name__, str(w.message)] for w in caught],
    }))
    """
)

#: Expected fit (scipy-independent sanity check; exact parity is tested elsewhere).
P_TRUE = np.array([2.5, 1.3, 0.5])


def _clean_environment(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NLSQ_") and key != "JAX_COMPILATION_CACHE_DIR"
    }
    env["NLSQ_CONFIG"] = str(tmp_path / "absent-config.json")
    return env


def child_report(script: str, env: dict[str, str]) -> dict:
    """Run ``script`` in a fresh interpreter; its last line of output, a JSON report,
    with its ``stderr`` added."""
    completed = subprocess.run(
        [sys.executable, "-W", "default", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    report["stderr"] = completed.stderr
    return report


def run_child(tmp_path: Path, **variables: str) -> dict:
    """Run :data:`CHILD` with ``variables`` added to a clean environment."""
    report = child_report(CHILD, {**_clean_environment(tmp_path), **variables})
    np.testing.assert_allclose(report["popt"], P_TRUE, rtol=0.02)
    return report


def cache_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """A cache directory filled by a first process and read by a second one."""
    tmp_path = tmp_path_factory.mktemp("disk-cache")
    directory = tmp_path / "cache"
    cold = run_child(tmp_path, NLSQ_DISK_CACHE_DIR=str(directory))
    files_after_cold = [p.name for p in cache_files(directory)]
    cold["files"] = files_after_cold
    second = run_child(tmp_path, NLSQ_DISK_CACHE_DIR=str(directory))
    return directory, cold, second


def test_first_process_compiles_and_writes_cache_files(warm) -> None:
    directory, cold, _ = warm
    stats = cold["cache_stats"]
    assert stats["compiles"] >= 1 and not stats["disk_hit"] and not stats["hit"]
    assert stats["compile_time_ms"] > 0
    assert cold["cache_info"]["disk_cache_dir"] == str(directory)
    assert cold["files"], "no cache file written"
    assert cold["warnings"] == []
    # nlsq's count agrees with JAX's own events for the solver program.
    assert cold["events"] == {"program_compiles": stats["compiles"], "disk_hits": 0}


def test_second_process_loads_from_disk(warm) -> None:
    directory, cold, second = warm
    stats = second["cache_stats"]
    assert stats["disk_hit"] is True
    assert stats["compiles"] == 0
    assert stats["hit"] is False  # loading from disk is not an in-memory hit
    assert second["cache_info"]["total_disk_hits"] == 1
    assert second["cache_info"]["total_compiles"] == 0
    # nlsq loads the whole executable from its own store (nlsq.program.stored): JAX
    # neither compiles the solver program nor reads it from its cache.
    assert second["events"] == {"program_compiles": 0, "disk_hits": 0}
    assert second["popt"] == cold["popt"]
    assert second["pcov"] == cold["pcov"]
    assert second["nfev"] == cold["nfev"]
    assert second["warnings"] == []
    assert [p.name for p in cache_files(directory)] == cold["files"]  # nothing rewritten


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a compiled program" * 64)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("corrupt", [_garbage, _truncate], ids=["garbage", "truncated"])
def test_corrupt_cache_files_still_give_a_correct_fit(warm, tmp_path: Path, corrupt) -> None:
    source, cold, _ = warm
    directory = tmp_path / "cache"
    shutil.copytree(source, directory)
    files = cache_files(directory)
    assert files
    for path in files:
        corrupt(path)
    report = run_child(tmp_path, NLSQ_DISK_CACHE_DIR=str(directory))  # exit code 0
    np.testing.assert_allclose(report["popt"], cold["popt"], rtol=1e-12)
    np.testing.assert_allclose(report["pcov"], cold["pcov"], rtol=1e-10)
    stats = report["cache_stats"]
    assert stats["compiles"] == 1 and not stats["disk_hit"]
    # JAX may say that it could not read the entry: as a warning, never an exception.
    for category, message in report["warnings"]:
        assert category == "UserWarning"
        assert "persistent compilation cache" in message


def test_unwritable_directory_warns_and_fits(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, so nothing can be created below it")
    directory = blocker / "cache"
    report = run_child(tmp_path, NLSQ_DISK_CACHE_DIR=str(directory))
    config_warnings = [m for c, m in report["warnings"] if c == "ConfigWarning"]
    assert len(config_warnings) == 1
    assert str(directory) in config_warnings[0]
    assert [c for c, _ in report["warnings"]] == ["ConfigWarning"]
    assert report["cache_info"]["disk_cache_dir"] is None
    assert report["cache_stats"]["compiles"] >= 1
    assert report["events"]["disk_hits"] == 0
    assert blocker.read_text().startswith("a regular file")


def test_disabled_disk_cache_writes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    report = run_child(tmp_path, NLSQ_DISK_CACHE="0", NLSQ_DISK_CACHE_DIR=str(directory))
    assert cache_files(directory) == []
    assert report["cache_info"]["disk_cache_dir"] is None
    assert report["warnings"] == []
    assert report["cache_stats"]["compiles"] >= 1
    assert report["events"]["disk_hits"] == 0


def test_directory_from_the_config_file(tmp_path: Path) -> None:
    directory = tmp_path / "from-config"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"cache_config": {"disk_cache_dir": str(directory)}}))
    report = run_child(tmp_path, NLSQ_CONFIG=str(config))
    assert report["cache_info"]["disk_cache_dir"] == str(directory)
    assert cache_files(directory)


def test_a_jax_cache_directory_set_by_the_user_is_kept(tmp_path: Path) -> None:
    users, ours = tmp_path / "users-jax-cache", tmp_path / "nlsq-cache"
    report = run_child(
        tmp_path, JAX_COMPILATION_CACHE_DIR=str(users), NLSQ_DISK_CACHE_DIR=str(ours)
    )
    assert report["cache_info"]["disk_cache_dir"] == str(users)
    assert cache_files(users)
    assert not ours.exists()


BATCH_CHILD = textwrap.dedent(
    """
    import json

    import jax.numpy as jnp
    import numpy as np

    import nlsq

    def model(x, a, b):
        return a * jnp.exp(-b * x)

    x = np.linspace(0.0, 3.0, 16)
    y = np.stack([2.0 * np.exp(-0.7 * x), 1.5 * np.exp(-1.2 * x)])
    result = nlsq.curve_fit_batch(model, x, y, p0=[1.0, 1.0])
    print(json.dumps({"popt": result.popt.tolist(), "cache_stats": result.cache_stats}))
    """
)


def test_a_fast_compiling_batch_program_is_kept_on_disk(tmp_path: Path) -> None:
    """JAX keeps only programs that compile for at least a second by default; nlsq's
    threshold (0 s) holds for the programs it compiles through JAX's cache as well."""
    env = {**_clean_environment(tmp_path), "NLSQ_DISK_CACHE_DIR": str(tmp_path / "cache")}
    reports = [child_report(BATCH_CHILD, env) for _ in range(2)]
    cold, second = (report["cache_stats"] for report in reports)
    assert cold["compiles"] >= 1 and not cold["disk_hit"]
    assert second["disk_hit"] is True and second["compiles"] == 0
    np.testing.assert_allclose(reports[1]["popt"], [[2.0, 0.7], [1.5, 1.2]], rtol=1e-8)
    assert reports[1]["popt"] == reports[0]["popt"]
