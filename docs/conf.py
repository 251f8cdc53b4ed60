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
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
]

autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = True

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "scipy": ("https://docs.scipy.org/doc/scipy", None),
    "jax": ("https://docs.jax.dev/en/latest", None),
}

templates_path: list[str] = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
