"""Sphinx configuration for the nlsq documentation."""

import pathlib
import sys

# Document the source tree when the package is not installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

project = "nlsq"
author = "nlsq developers"
copyright = "nlsq developers"
release = "0.1.0"
version = "0.1"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
]

autodoc_typehints = "none"
numpydoc_show_class_members = False
# No intersphinx: the build must not need the network (CI reaches only PyPI), and
# cross-references to other projects' inventories would fail offline.
numpydoc_xref_param_type = False

templates_path: list[str] = []
exclude_patterns = ["_build"]
html_theme = "alabaster"

# Docstrings of the documented objects are checked by numpydoc; with ``-W`` a failed
# check fails the build. Left out: sections we do not require (See Also, Examples,
# Extended Summary), and checks that dataclasses documented by their "Attributes"
# section, or short accessors, cannot pass (PR01, PR04, RT01, SS05).
numpydoc_validation_checks = {
    "all",
    "SA01",
    "EX01",
    "ES01",
    "PR01",
    "PR04",
    "RT01",
    "SS05",
}
