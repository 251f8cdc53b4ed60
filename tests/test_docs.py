"""The documentation keeps up with the code: every public name, every setting.

Cheap text checks of the Sphinx sources; the build itself (``sphinx-build -W``) runs in CI.
"""

import json
import pathlib
import re

import pytest

import nlsq
from nlsq import config

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def autodoc_targets(text: str) -> set[str]:
    """Objects documented by ``.. autofunction::``, ``.. autoclass::``, ... directives."""
    return set(re.findall(r"^\.\. auto\w+:: (\S+)", text, flags=re.MULTILINE))


def settings_table(text: str) -> dict[str, list[str]]:
    """Rows of the settings list-table: file key -> cells (key, variable, default, meaning)."""
    rows = {}
    for block in re.split(r"^   \* - ", text, flags=re.MULTILINE)[1:]:
        cells = [cell.strip() for cell in re.split(r"^     - ", block, flags=re.MULTILINE)]
        key = cells[0].strip("`")
        rows[key] = cells
    return rows


def test_every_public_name_is_in_the_api_reference():
    documented = autodoc_targets((DOCS / "api.rst").read_text(encoding="utf-8"))
    missing = [name for name in nlsq.__all__ if f"nlsq.{name}" not in documented]
    assert not missing, f"add to docs/api.rst: {missing}"


def test_api_reference_names_exist():
    import importlib

    for target in autodoc_targets((DOCS / "api.rst").read_text(encoding="utf-8")):
        module_name, _, attribute = target.rpartition(".")
        while module_name:
            try:
                owner = importlib.import_module(module_name)
                break
            except ImportError:
                module_name, _, parent = module_name.rpartition(".")
                attribute = f"{parent}.{attribute}"
        for part in attribute.split("."):
            owner = getattr(owner, part)


@pytest.mark.parametrize("setting", config.SETTINGS.values(), ids=lambda s: s.key)
def test_every_setting_is_in_the_configuration_page(setting):
    text = (DOCS / "configuration.rst").read_text(encoding="utf-8")
    rows = settings_table(text)
    assert setting.key in rows, f"add a row for {setting.key} to docs/configuration.rst"
    key, variable, default, _meaning = rows[setting.key][:4]
    assert variable == f"``{setting.env}``"
    # The documented default, read as the config file would read it, is the real one.
    documented = json.loads(default.strip("`"))
    assert (None if documented is None else setting.parse(documented)) == setting.default
    assert config.CONFIG_PATH_ENV in text


def test_configuration_table_has_no_unknown_settings():
    rows = settings_table((DOCS / "configuration.rst").read_text(encoding="utf-8"))
    assert set(rows) - {"Key in the file"} <= set(config.SETTINGS)


def test_every_page_is_in_the_table_of_contents():
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    pages = {path.stem for path in DOCS.glob("*.rst")} - {"index"}
    listed = set(re.findall(r"^   (\w+)$", index, flags=re.MULTILINE))
    assert pages <= listed, f"add to the toctree of docs/index.rst: {sorted(pages - listed)}"
