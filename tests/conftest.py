"""Test-session isolation from the user's own nlsq configuration and disk cache."""

import os
import tempfile

import jax
import pytest

import nlsq
from nlsq import config

# Set before any fit: nlsq reads these lazily, on the first fit of the process.
os.environ["NLSQ_CONFIG"] = os.path.join(tempfile.mkdtemp(prefix="nlsq-test-config-"), "none.json")
os.environ.setdefault("NLSQ_DISK_CACHE_DIR", tempfile.mkdtemp(prefix="nlsq-test-disk-cache-"))

_ISOLATED_ENV = sorted(
    setting.env
    for setting in config.SETTINGS.values()
    if not setting.key.startswith("cache_config.disk_cache")
)


@pytest.fixture(autouse=True)
def _default_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Defaults for every setting: no ``NLSQ_*`` variable, no config file."""
    for name in _ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(config.CONFIG_PATH_ENV, str(tmp_path / "absent-config.json"))


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Each test module starts without the compiled programs of the modules before it.

    XLA:CPU maps the code of every live executable into memory. A whole-suite run kept
    thousands alive, and near the end a compile aborted the interpreter (three CI runs,
    in tests/test_sparse.py, never with that module alone): the kernel's limit on
    memory maps (vm.max_map_count, 65530 here) is the likely wall.
    """
    yield
    nlsq.clear_cache()
    jax.clear_caches()


@pytest.fixture(scope="module")
def x64():
    """64-bit JAX for a whole module of unit tests that call nlsq's helpers directly."""
    with jax.enable_x64(True):
        yield
