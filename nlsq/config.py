"""User configuration, resolved by one precedence for every setting.

A setting's value comes from, in order: the argument of the call, the ``NLSQ_*``
environment variable, the JSON config file, the built-in default. The file is
``~/.nlsq/config.json`` unless ``NLSQ_CONFIG`` names another; it is read lazily,
cached, and re-read only when its modification time or size changes; a fit looks at it
once (:func:`one_reading`).

Bad configuration never breaks a fit: an invalid argument raises ``ValueError``; an
invalid environment variable or file value issues a :class:`ConfigWarning` naming
the source and the value, and the next level is used; a malformed, unreadable or
missing file is treated as empty (with one warning per state of the file).

Example file::

    {
      "jacobian_mode": "auto",
      "cache_config": {"enable": true, "max_size": 128, "size_buckets": true,
                       "disk_cache_enable": true, "disk_cache_dir": "/tmp/nlsq-cache",
                       "disk_cache_min_compile_time_secs": 0.0},
      "large": {"memory_budget": "512MiB"}
    }
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("nlsq")

CONFIG_PATH_ENV = "NLSQ_CONFIG"


class ConfigWarning(UserWarning):
    """An environment variable or config file value was invalid and has been ignored."""


def _parse_choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}")
        return value.strip().lower()

    return parse


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    raise ValueError("must be a boolean (true/false, 1/0, yes/no, on/off)")


def _parse_positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a positive integer")
    try:
        number = int(value) if isinstance(value, str) else value
    except ValueError:
        raise ValueError("must be a positive integer") from None
    if not isinstance(number, int) or number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _parse_nonnegative_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a non-negative number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a non-negative number") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError("must be a non-negative number")
    return number


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def _parse_size(value: Any) -> int:
    """Bytes from a positive number or a string with a unit: ``"512MiB"``, ``"2GB"``."""
    message = "must be a positive size in bytes, or a number with a unit (e.g. '512MiB', '2GB')"
    if isinstance(value, bool):
        raise ValueError(message)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits) :]
        if unit not in _SIZE_UNITS:
            raise ValueError(message)
        try:
            value = float(digits) * _SIZE_UNITS[unit]
        except ValueError:
            raise ValueError(message) from None
    if not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ValueError(message)
    return int(value)


def _parse_path(value: Any) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError("must be a non-empty path")
    return Path(value).expanduser()


@dataclass(frozen=True)
class Setting:
    """One configurable value: its file key, environment variable, default and parser."""

    key: str
    env: str
    default: Any
    parse: Callable[[Any], Any]


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("jacobian_mode", "NLSQ_JACOBIAN_MODE", "auto", _parse_choice("auto", "fwd", "rev")),
        Setting("cache_config.enable", "NLSQ_CACHE_ENABLE", True, _parse_bool),
        Setting("cache_config.max_size", "NLSQ_CACHE_MAX_SIZE", 128, _parse_positive_int),
        Setting("cache_config.size_buckets", "NLSQ_SIZE_BUCKETS", True, _parse_bool),
        Setting("cache_config.disk_cache_enable", "NLSQ_DISK_CACHE", True, _parse_bool),
        Setting("cache_config.disk_cache_dir", "NLSQ_DISK_CACHE_DIR", None, _parse_path),
        Setting(
            "cache_config.disk_cache_min_compile_time_secs",
            "NLSQ_DISK_CACHE_MIN_COMPILE_TIME",
            0.0,
            _parse_nonnegative_float,
        ),
        Setting("large.memory_budget", "NLSQ_MEMORY_BUDGET", 512 * 2**20, _parse_size),
    )
}


@functools.lru_cache(maxsize=8)
def _default_location(home: str | None) -> str:
    """``~/.nlsq/config.json`` for the home directory ``$HOME`` (None: unset)."""
    return os.path.join(os.path.expanduser("~"), ".nlsq", "config.json")


def _config_location() -> str:
    # Strings, not Path objects, and the default path cached by $HOME: this runs
    # several times on every fit.
    override = os.environ.get(CONFIG_PATH_ENV)
    if override:
        return os.path.expanduser(override)
    return _default_location(os.environ.get("HOME"))


def config_path() -> Path:
    """The config file in use: ``$NLSQ_CONFIG`` or ``~/.nlsq/config.json``."""
    return Path(_config_location())


class _ConfigFile:
    """The parsed config file, re-read only when the file changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._values: dict[str, Any] = {}
        self._warned: set[tuple] = set()

    def values(self) -> dict[str, Any]:
        path = _config_location()
        try:
            stat = os.stat(path)
            signature = (
                path,
                stat.st_ino,
                stat.st_mtime_ns,
                stat.st_ctime_ns,
                stat.st_size,
                stat.st_mode,
            )
        except FileNotFoundError:
            self._forget()
            return {}
        except OSError as error:
            self._forget()
            self._warn_once((path, "stat"), f"cannot read config file {path}: {error}")
            return {}
        with self._lock:
            if signature != self._signature:
                self._values = self._read(path, signature)
                self._signature = signature
            return self._values

    def _forget(self) -> None:
        with self._lock:
            self._signature, self._values = None, {}

    def signature(self) -> tuple | None:
        """The identity of the file last read (None: none read yet, or none there)."""
        with self._lock:
            return self._signature

    def _read(self, path: str, signature: tuple) -> dict[str, Any]:
        try:
            content = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            self._warn_once(signature, f"cannot read config file {path}: {error}; using defaults")
            return {}
        except json.JSONDecodeError as error:
            self._warn_once(
                signature, f"config file {path} is not valid JSON ({error}); using defaults"
            )
            return {}
        if not isinstance(content, dict):
            self._warn_once(signature, f"config file {path} must hold a JSON object; ignored")
            return {}
        return _flatten(content)

    def _warn_once(self, signature: tuple, message: str) -> None:
        if signature not in self._warned:
            self._warned.add(signature)
            warnings.warn(message, ConfigWarning, stacklevel=4)


def _flatten(content: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in content.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


_config_file = _ConfigFile()

#: Every environment variable a setting is read from, and the config file's path.
_ENVIRONMENT_NAMES = (CONFIG_PATH_ENV, *(setting.env for setting in SETTINGS.values()))


def settings_token() -> tuple:
    """What the settings are read from now: their environment variables and the config
    file's identity (path, inode, times, size; None without a file). Equal tokens give
    equal settings, so a decision made under one token holds under an equal one."""
    if getattr(_held, "values", None) is None:
        _config_file.values()
    return tuple(map(os.environ.get, _ENVIRONMENT_NAMES)), _config_file.signature()


#: The config file's values held by :func:`one_reading` (per thread).
_held = threading.local()


@contextlib.contextmanager
def one_reading() -> Iterator[None]:
    """Look at the config file once for every setting read in this block (this thread).

    A fit reads several settings; outside this block each read checks whether the file
    changed (a ``stat``). A change during the block applies from the next block on.
    Blocks may nest; the outermost one's reading holds.
    """
    if getattr(_held, "values", None) is not None:
        yield
        return
    _held.values = _config_file.values()
    try:
        yield
    finally:
        _held.values = None


def resolve(key: str, argument: Any = None) -> tuple[Any, str]:
    """Value of setting ``key`` and where it came from.

    Parameters
    ----------
    key : str
        Setting name, e.g. ``'jacobian_mode'`` or ``'cache_config.max_size'``.
    argument : optional
        The value passed by the caller; ``None`` means not given.

    Returns
    -------
    value : Any
        The parsed value.
    source : str
        ``'argument'``, ``'environment variable NAME'``, ``'config file PATH'`` or
        ``'default'``.

    Raises
    ------
    ValueError
        If ``argument`` is given and invalid.
    """
    setting = SETTINGS[key]
    if argument is not None:
        try:
            return setting.parse(argument), "argument"
        except ValueError as error:
            raise ValueError(f"`{key.split('.')[-1]}` {error}, got {argument!r}.") from None

    raw = os.environ.get(setting.env)
    if raw is not None:
        try:
            return setting.parse(raw), f"environment variable {setting.env}"
        except ValueError as error:
            warnings.warn(
                f"ignoring environment variable {setting.env}={raw!r}: {error}",
                ConfigWarning,
                stacklevel=2,
            )

    values = getattr(_held, "values", None)
    if values is None:
        values = _config_file.values()
    if key in values:
        try:
            return setting.parse(values[key]), f"config file {config_path()}"
        except ValueError as error:
            warnings.warn(
                f"ignoring {key}={values[key]!r} in config file {config_path()}: {error}",
                ConfigWarning,
                stacklevel=2,
            )
    return setting.default, "default"


def get(key: str, argument: Any = None) -> Any:
    """Value of setting ``key`` by precedence (see :func:`resolve`)."""
    return resolve(key, argument)[0]
