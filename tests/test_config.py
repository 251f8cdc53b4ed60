"""Tests for :mod:`nlsq.config`: argument > ``NLSQ_*`` variable > config file > default.

Every test points ``NLSQ_CONFIG`` at a file under ``tmp_path`` and removes the ``NLSQ_*``
variables, so the user's real ``~/.nlsq/config.json`` and environment are never read.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import nlsq
from nlsq import config
from nlsq.config import ConfigWarning

ENV_VARIABLES = sorted({setting.env for setting in config.SETTINGS.values()})


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The (not yet existing) config file in use, with no ``NLSQ_*`` variable set."""
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.json"
    monkeypatch.setenv(config.CONFIG_PATH_ENV, str(path))
    return path


def write_config(path: Path, content: Any) -> None:
    """Write ``content`` (JSON-encoded unless a str) and make sure the mtime moves on."""
    before = path.stat().st_mtime_ns if path.exists() else None
    text = content if isinstance(content, str) else json.dumps(content)
    path.write_text(text, encoding="utf-8")
    if before is not None and path.stat().st_mtime_ns <= before:
        bumped = before + 1_000_000_000
        os.utime(path, ns=(bumped, bumped))


def nested(key: str, value: Any) -> dict:
    """``{'a': {'b': value}}`` for the dotted key ``'a.b'``, as a user writes the file."""
    *parents, leaf = key.split(".")
    content: dict = {leaf: value}
    for parent in reversed(parents):
        content = {parent: content}
    return content


# --------------------------------------------------------------------------------------
# Precedence of the four levels, for settings of every type
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Values for one setting at each level, raw as given and as parsed."""

    key: str
    argument: Any
    parsed_argument: Any
    env: str
    parsed_env: Any
    file: Any
    parsed_file: Any
    default: Any


CASES = [
    Case("jacobian_mode", "REV", "rev", "fwd", "fwd", "rev", "rev", "auto"),
    Case("cache_config.max_size", 7, 7, " 9 ", 9, 11, 11, 128),
    Case("cache_config.enable", False, False, "off", False, False, False, True),
    Case("cache_config.size_buckets", False, False, "0", False, False, False, True),
    Case("cache_config.disk_cache_enable", False, False, "no", False, False, False, True),
    Case(
        "cache_config.disk_cache_dir",
        Path("/arg/cache"),
        Path("/arg/cache"),
        "/env/cache",
        Path("/env/cache"),
        "/file/cache",
        Path("/file/cache"),
        None,
    ),
    Case("cache_config.disk_cache_min_compile_time_secs", 0.5, 0.5, "1.5", 1.5, 2, 2.0, 0.0),
    Case("large.memory_budget", "2GB", 2 * 10**9, " 1.5 GiB ", 3 * 2**29, 4096, 4096, 2**29),
]


@pytest.fixture(params=CASES, ids=lambda case: case.key)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


def test_every_setting_is_covered() -> None:
    assert {case.key for case in CASES} == set(config.SETTINGS)


def test_default_wins_when_nothing_is_set(config_file: Path, case: Case) -> None:
    assert config.resolve(case.key) == (case.default, "default")
    assert config.get(case.key) == case.default


def test_file_beats_default(config_file: Path, case: Case) -> None:
    write_config(config_file, nested(case.key, case.file))
    value, source = config.resolve(case.key)
    assert (value, source) == (case.parsed_file, f"config file {config_file}")
    assert type(value) is type(case.parsed_file)


def test_file_accepts_dotted_keys(config_file: Path, case: Case) -> None:
    write_config(config_file, {case.key: case.file})
    assert config.resolve(case.key) == (case.parsed_file, f"config file {config_file}")


def test_env_beats_file(config_file: Path, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(config_file, nested(case.key, case.file))
    env = config.SETTINGS[case.key].env
    monkeypatch.setenv(env, case.env)
    value, source = config.resolve(case.key)
    assert (value, source) == (case.parsed_env, f"environment variable {env}")
    assert type(value) is type(case.parsed_env)


def test_argument_beats_env(config_file: Path, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(config_file, nested(case.key, case.file))
    monkeypatch.setenv(config.SETTINGS[case.key].env, case.env)
    value, source = config.resolve(case.key, case.argument)
    assert (value, source) == (case.parsed_argument, "argument")
    assert type(value) is type(case.parsed_argument)


def test_falsy_argument_is_still_an_argument(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NLSQ_CACHE_ENABLE", "true")
    assert config.resolve("cache_config.enable", False) == (False, "argument")
    assert config.resolve("cache_config.disk_cache_min_compile_time_secs", 0) == (0.0, "argument")


def test_none_argument_means_not_given(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLSQ_CACHE_MAX_SIZE", "5")
    assert config.resolve("cache_config.max_size", None) == (
        5,
        "environment variable NLSQ_CACHE_MAX_SIZE",
    )


def test_paths_expand_the_user_directory(config_file: Path) -> None:
    write_config(config_file, {"cache_config": {"disk_cache_dir": "~/nlsq-cache"}})
    value, _ = config.resolve("cache_config.disk_cache_dir")
    assert value == Path.home() / "nlsq-cache"


def test_config_path_default_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.CONFIG_PATH_ENV, raising=False)
    assert config.config_path() == Path.home() / ".nlsq" / "config.json"
    monkeypatch.setenv(config.CONFIG_PATH_ENV, str(tmp_path / "other.json"))
    assert config.config_path() == tmp_path / "other.json"


# --------------------------------------------------------------------------------------
# Invalid values
# --------------------------------------------------------------------------------------

INVALID_ARGUMENTS = [
    ("jacobian_mode", "sideways"),
    ("jacobian_mode", 1),
    ("cache_config.max_size", 0),
    ("cache_config.max_size", -3),
    ("cache_config.max_size", 2.5),
    ("cache_config.max_size", "many"),
    ("cache_config.max_size", True),
    ("cache_config.enable", "maybe"),
    ("cache_config.enable", 2),
    ("cache_config.disk_cache_enable", "sometimes"),
    ("cache_config.disk_cache_dir", ""),
    ("cache_config.disk_cache_dir", 3),
    ("cache_config.disk_cache_min_compile_time_secs", -1.0),
    ("cache_config.disk_cache_min_compile_time_secs", float("nan")),
    ("large.memory_budget", 0),
    ("large.memory_budget", "lots"),
    ("large.memory_budget", "12 parsecs"),
    ("cache_config.disk_cache_min_compile_time_secs", float("inf")),
    ("cache_config.disk_cache_min_compile_time_secs", "soon"),
    ("cache_config.disk_cache_min_compile_time_secs", True),
]


@pytest.mark.parametrize(("value", "expected"), [(1, True), (0, False), ("on", True)])
def test_json_numbers_one_and_zero_are_booleans(config_file: Path, value, expected) -> None:
    write_config(config_file, {"cache_config": {"enable": value}})
    assert config.resolve("cache_config.enable") == (expected, f"config file {config_file}")


@pytest.mark.parametrize(("key", "argument"), INVALID_ARGUMENTS)
def test_invalid_argument_raises(config_file: Path, key: str, argument: Any) -> None:
    name = key.split(".")[-1]
    with pytest.raises(ValueError, match=f"`{name}`") as info:
        config.resolve(key, argument)
    assert repr(argument) in str(info.value)


INVALID_ENV = [
    ("jacobian_mode", "sideways"),
    ("cache_config.max_size", "many"),
    ("cache_config.max_size", "0"),
    ("cache_config.enable", "maybe"),
    ("cache_config.disk_cache_enable", "2"),
    ("cache_config.disk_cache_dir", ""),
    ("cache_config.disk_cache_min_compile_time_secs", "-1"),
    ("large.memory_budget", "-1GB"),
]


@pytest.mark.parametrize(("key", "raw"), INVALID_ENV)
def test_invalid_env_warns_and_falls_back_to_default(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, key: str, raw: str
) -> None:
    env = config.SETTINGS[key].env
    monkeypatch.setenv(env, raw)
    with pytest.warns(ConfigWarning) as record:
        value, source = config.resolve(key)
    assert len(record) == 1
    message = str(record[0].message)
    assert env in message
    assert repr(raw) in message
    assert (value, source) == (config.SETTINGS[key].default, "default")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.key)
def test_invalid_env_warns_and_falls_back_to_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, case: Case
) -> None:
    write_config(config_file, nested(case.key, case.file))
    env = config.SETTINGS[case.key].env
    bad = "" if case.key == "cache_config.disk_cache_dir" else "not-a-valid-value"
    monkeypatch.setenv(env, bad)
    with pytest.warns(ConfigWarning, match=env) as record:
        value, source = config.resolve(case.key)
    assert len(record) == 1
    assert f"{env}={bad!r}" in str(record[0].message)
    assert (value, source) == (case.parsed_file, f"config file {config_file}")


INVALID_FILE_VALUES = [
    ("jacobian_mode", "sideways"),
    ("jacobian_mode", 3),
    ("cache_config.max_size", -5),
    ("cache_config.max_size", 2.5),
    ("cache_config.max_size", True),
    ("cache_config.enable", "maybe"),
    ("cache_config.enable", None),
    ("cache_config.disk_cache_enable", [True]),
    ("cache_config.disk_cache_dir", ""),
    ("cache_config.disk_cache_dir", 42),
    ("cache_config.disk_cache_min_compile_time_secs", -0.5),
    ("cache_config.disk_cache_min_compile_time_secs", "later"),
]


@pytest.mark.parametrize(("key", "bad"), INVALID_FILE_VALUES)
def test_invalid_file_value_warns_and_uses_default(config_file: Path, key: str, bad: Any) -> None:
    write_config(config_file, nested(key, bad))
    with pytest.warns(ConfigWarning) as record:
        value, source = config.resolve(key)
    assert len(record) == 1
    message = str(record[0].message)
    assert str(config_file) in message
    assert repr(bad) in message
    assert (value, source) == (config.SETTINGS[key].default, "default")


def test_invalid_file_value_does_not_spoil_the_other_settings(config_file: Path) -> None:
    write_config(config_file, {"jacobian_mode": "sideways", "cache_config": {"max_size": 3}})
    assert config.resolve("cache_config.max_size") == (3, f"config file {config_file}")
    with pytest.warns(ConfigWarning, match="sideways"):
        assert config.resolve("jacobian_mode") == ("auto", "default")


# --------------------------------------------------------------------------------------
# Broken or missing files
# --------------------------------------------------------------------------------------


def _malformed(path: Path) -> None:
    write_config(path, '{"jacobian_mode": "rev",')


def _array(path: Path) -> None:
    write_config(path, ["jacobian_mode", "rev"])


def _directory(path: Path) -> None:
    path.mkdir()


def _unreadable(path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read a chmod 000 file")
    write_config(path, {"jacobian_mode": "rev"})
    path.chmod(0)


def _not_utf8(path: Path) -> None:
    path.write_bytes(b'{"jacobian_mode": "\xff"}')


@pytest.mark.parametrize(
    "make_broken",
    [_malformed, _array, _directory, _unreadable, _not_utf8],
    ids=["malformed-json", "json-array", "directory", "unreadable", "not-utf8"],
)
def test_broken_file_warns_once_and_uses_defaults(config_file: Path, make_broken) -> None:
    make_broken(config_file)
    try:
        with pytest.warns(ConfigWarning) as record:
            first = config.resolve("jacobian_mode")
            second = config.resolve("jacobian_mode")
            third = config.resolve("cache_config.max_size")
    finally:
        if config_file.is_file():
            config_file.chmod(0o644)
    assert len(record) == 1, [str(w.message) for w in record]
    assert str(config_file) in str(record[0].message)
    assert first == second == ("auto", "default")
    assert third == (128, "default")


def test_read_error_warns_once_and_uses_defaults(config_file: Path, monkeypatch) -> None:
    """A read that fails (as for a chmod 000 file as non-root), simulated so root sees it."""
    write_config(config_file, {"jacobian_mode": "rev"})
    original = Path.read_text

    def refuse(self: Path, *args, **kwargs) -> str:
        if self == config_file:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.warns(ConfigWarning, match="Permission denied") as record:
        assert config.resolve("jacobian_mode") == ("auto", "default")
        assert config.resolve("jacobian_mode") == ("auto", "default")
    assert len(record) == 1
    assert str(config_file) in str(record[0].message)


def test_broken_file_warns_again_after_it_changes(config_file: Path) -> None:
    _malformed(config_file)
    with pytest.warns(ConfigWarning):
        config.resolve("jacobian_mode")
    write_config(config_file, "[1, 2]")
    with pytest.warns(ConfigWarning, match="JSON object") as record:
        config.resolve("jacobian_mode")
        config.resolve("jacobian_mode")
    assert len(record) == 1


def test_broken_file_then_fixed(config_file: Path) -> None:
    _malformed(config_file)
    with pytest.warns(ConfigWarning):
        assert config.resolve("jacobian_mode") == ("auto", "default")
    write_config(config_file, {"jacobian_mode": "rev"})
    assert config.resolve("jacobian_mode") == ("rev", f"config file {config_file}")


def test_missing_file_is_silent_and_uses_defaults(config_file: Path) -> None:
    assert not config_file.exists()
    for key, setting in config.SETTINGS.items():
        assert config.resolve(key) == (setting.default, "default")


def test_file_in_missing_directory_is_silent(
    tmp_path: Path, config_file: Path, monkeypatch
) -> None:
    monkeypatch.setenv(config.CONFIG_PATH_ENV, str(tmp_path / "no" / "such" / "config.json"))
    assert config.resolve("jacobian_mode") == ("auto", "default")


def test_file_removed_after_reading(config_file: Path) -> None:
    write_config(config_file, {"jacobian_mode": "fwd"})
    assert config.resolve("jacobian_mode")[0] == "fwd"
    config_file.unlink()
    assert config.resolve("jacobian_mode") == ("auto", "default")


def test_unknown_keys_are_ignored(config_file: Path) -> None:
    write_config(config_file, {"no_such_setting": 1, "cache_config": {"max_size": 4}})
    assert config.resolve("cache_config.max_size") == (4, f"config file {config_file}")


# --------------------------------------------------------------------------------------
# Caching and re-reading
# --------------------------------------------------------------------------------------


def test_changed_file_is_reread(config_file: Path) -> None:
    write_config(config_file, {"jacobian_mode": "fwd"})
    assert config.resolve("jacobian_mode") == ("fwd", f"config file {config_file}")
    # Same size: only the modification time tells the two apart.
    write_config(config_file, {"jacobian_mode": "rev"})
    assert config.resolve("jacobian_mode") == ("rev", f"config file {config_file}")


def test_size_change_is_detected_with_the_same_mtime(config_file: Path) -> None:
    write_config(config_file, {"jacobian_mode": "fwd"})
    assert config.resolve("jacobian_mode")[0] == "fwd"
    stat = config_file.stat()
    config_file.write_text(json.dumps({"jacobian_mode": "auto"}), encoding="utf-8")
    os.utime(config_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert config.resolve("jacobian_mode") == ("auto", f"config file {config_file}")


def test_unchanged_file_is_not_reparsed(config_file: Path, monkeypatch) -> None:
    calls = []
    original = json.loads

    def counting_loads(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(config.json, "loads", counting_loads)
    write_config(config_file, {"jacobian_mode": "fwd", "cache_config": {"max_size": 5}})
    for _ in range(3):
        assert config.resolve("jacobian_mode")[0] == "fwd"
        assert config.resolve("cache_config.max_size")[0] == 5
    assert len(calls) == 1
    write_config(config_file, {"jacobian_mode": "rev", "cache_config": {"max_size": 5}})
    assert config.resolve("jacobian_mode")[0] == "rev"
    assert config.resolve("cache_config.max_size")[0] == 5
    assert len(calls) == 2


def test_switching_config_path_is_picked_up(tmp_path: Path, config_file: Path, monkeypatch) -> None:
    write_config(config_file, {"jacobian_mode": "fwd"})
    other = tmp_path / "other.json"
    write_config(other, {"jacobian_mode": "rev"})
    assert config.resolve("jacobian_mode")[0] == "fwd"
    monkeypatch.setenv(config.CONFIG_PATH_ENV, str(other))
    assert config.resolve("jacobian_mode") == ("rev", f"config file {other}")


# --------------------------------------------------------------------------------------
# End to end: jacobian_mode through nlsq.least_squares
# --------------------------------------------------------------------------------------


def _residual(x, t, y):
    return x[0] * jnp.exp(-x[1] * t) - y


T = np.linspace(0.0, 3.0, 12)
Y = 2.0 * np.exp(-0.7 * T)


def _fit_and_log(caplog: pytest.LogCaptureFixture, **kwargs) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="nlsq"):
        result = nlsq.least_squares(_residual, [1.0, 1.0], args=(T, Y), **kwargs)
    np.testing.assert_allclose(result.x, [2.0, 0.7], rtol=1e-7)
    return [r.getMessage() for r in caplog.records if r.name == "nlsq"]


def _resolved(messages: list[str]) -> list[str]:
    """The per-call resolution lines, not the trace-time 'auto chose ...' ones."""
    return [m for m in messages if re.match(r"jacobian_mode=\S+ \(from ", m)]


def test_least_squares_uses_default(config_file: Path, caplog) -> None:
    assert _resolved(_fit_and_log(caplog)) == ["jacobian_mode='auto' (from default)"]


def test_least_squares_uses_file(config_file: Path, caplog) -> None:
    write_config(config_file, {"jacobian_mode": "rev"})
    assert _resolved(_fit_and_log(caplog)) == [
        f"jacobian_mode='rev' (from config file {config_file})"
    ]


def test_least_squares_env_beats_file(config_file: Path, caplog, monkeypatch) -> None:
    write_config(config_file, {"jacobian_mode": "rev"})
    monkeypatch.setenv("NLSQ_JACOBIAN_MODE", "fwd")
    assert _resolved(_fit_and_log(caplog)) == [
        "jacobian_mode='fwd' (from environment variable NLSQ_JACOBIAN_MODE)"
    ]


def test_least_squares_argument_beats_env(config_file: Path, caplog, monkeypatch) -> None:
    write_config(config_file, {"jacobian_mode": "fwd"})
    monkeypatch.setenv("NLSQ_JACOBIAN_MODE", "fwd")
    messages = _fit_and_log(caplog, jacobian_mode="rev")
    assert _resolved(messages) == ["jacobian_mode='rev' (from argument)"]


def test_least_squares_invalid_env_warns_and_uses_file(
    config_file: Path, caplog, monkeypatch
) -> None:
    write_config(config_file, {"jacobian_mode": "rev"})
    monkeypatch.setenv("NLSQ_JACOBIAN_MODE", "backwards")
    with pytest.warns(ConfigWarning, match="NLSQ_JACOBIAN_MODE='backwards'"):
        messages = _fit_and_log(caplog)
    assert _resolved(messages) == [f"jacobian_mode='rev' (from config file {config_file})"]


def test_least_squares_invalid_file_value_warns_and_uses_default(config_file: Path, caplog) -> None:
    write_config(config_file, {"jacobian_mode": "backwards"})
    with pytest.warns(ConfigWarning, match=r"'backwards' in config file"):
        messages = _fit_and_log(caplog)
    assert _resolved(messages) == ["jacobian_mode='auto' (from default)"]


def test_least_squares_broken_file_warns_once_across_fits(config_file: Path, caplog) -> None:
    _malformed(config_file)
    with pytest.warns(ConfigWarning) as record:
        _fit_and_log(caplog)
        _fit_and_log(caplog)
    assert len(record) == 1


def test_least_squares_invalid_argument_raises(config_file: Path) -> None:
    with pytest.raises(ValueError, match="jacobian_mode"):
        nlsq.least_squares(_residual, [1.0, 1.0], args=(T, Y), jacobian_mode="sideways")


def _count_config_stats(monkeypatch, config_file: Path) -> list:
    """The ``stat`` calls on ``config_file`` from here on (config's own: str paths)."""
    stats = []
    real_stat = os.stat

    def counted_stat(path, *args, **kwargs):
        if path == str(config_file):
            stats.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counted_stat)
    return stats


def test_one_reading_holds_the_file_for_its_block(config_file: Path, monkeypatch) -> None:
    """Inside :func:`nlsq.config.one_reading` every setting comes from one look at the
    file (one ``stat``), so a fit sees one configuration; the next block sees a change."""
    write_config(config_file, {"large": {"memory_budget": 4096}, "jacobian_mode": "rev"})
    stats = _count_config_stats(monkeypatch, config_file)
    with config.one_reading():
        assert config.get("large.memory_budget") == 4096
        write_config(config_file, {"large": {"memory_budget": 8192}})
        assert config.get("jacobian_mode") == "rev"
        assert config.get("large.memory_budget") == 4096
        with config.one_reading():
            assert config.get("large.memory_budget") == 4096
    assert stats == [str(config_file)]
    assert config.get("large.memory_budget") == 8192
    assert config.get("jacobian_mode") == "auto"


@pytest.mark.parametrize("front_door", ["curve_fit", "least_squares"])
def test_a_fit_reads_the_config_file_once(config_file: Path, monkeypatch, front_door) -> None:
    """Every setting a hot fit reads (cache, buckets, disk cache, memory budget,
    Jacobian mode) comes from one look at the file."""
    write_config(config_file, {"jacobian_mode": "fwd"})

    def fit() -> None:
        if front_door == "curve_fit":
            nlsq.curve_fit(lambda t, a, b: a * jnp.exp(-b * t), T, Y, p0=[1.0, 1.0])
        else:
            nlsq.least_squares(_residual, [1.0, 1.0], args=(T, Y))

    fit()
    stats = _count_config_stats(monkeypatch, config_file)
    fit()
    assert len(stats) == 1
