"""The package's dependencies run one way: a test that fails when an import breaks it.

Layers, lowest first; a module may import from its own layer and the layers below,
never from above, never a private (``_name``) from another module, and the imports
between nlsq's modules form no circle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nlsq"

#: (layer, module prefixes) from the bottom up; see docs/architecture.rst.
LAYERS = (
    ("base", ("nlsq.errors", "nlsq.config", "nlsq.precision", "nlsq.transfer", "nlsq.scipy_types")),
    (
        "numerics",
        (
            "nlsq.jaxprs",
            "nlsq.bounds",
            "nlsq.loss",
            "nlsq.finite_diff",
            "nlsq.jacobian",
            "nlsq.small_linalg",
            "nlsq.covariance",
            "nlsq.implicit",
            "nlsq.sparsity",
            "nlsq.structure",
        ),
    ),
    ("solvers", ("nlsq.solvers",)),
    ("program", ("nlsq.program", "nlsq.cache", "nlsq.identity", "nlsq.host", "nlsq.pointwise")),
    ("prepare", ("nlsq.prepare",)),
    ("plan", ("nlsq.plan",)),
    ("execute", ("nlsq.execute",)),
    ("finish", ("nlsq.finish", "nlsq.result", "nlsq.batch_result")),
    ("api", ("nlsq.api", "nlsq.plotting")),
)


def layer_of(module: str) -> int:
    """Index of ``module``'s layer (the package itself sits on top)."""
    if module == "nlsq":
        return len(LAYERS)
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise LookupError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def nlsq_imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(imported module, imported names, line)`` of every nlsq import in ``path``,
    including those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nlsq"):
            names = [alias.name for alias in node.names]
            for name in names:
                # `from nlsq.pkg import module` imports a module, not a name.
                candidate = f"{node.module}.{name}"
                if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists():
                    found.append((candidate, [], node.lineno))
                    names = [n for n in names if n != name]
            if names:
                found.append((node.module, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("nlsq")]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_run_downwards(path: Path) -> None:
    importer = module_name(path)
    for imported, _, line in nlsq_imports(path):
        assert layer_of(imported) <= layer_of(importer), (
            f"{importer} imports {imported}, a higher layer, at line {line}"
        )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_private_name_crosses_a_module(path: Path) -> None:
    importer = module_name(path)
    for imported, names, line in nlsq_imports(path):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{importer} imports private {private} from {imported} (line {line})"


def test_no_import_circle() -> None:
    graph = {module_name(p): set() for p in MODULES}
    for path in MODULES:
        for imported, _, _ in nlsq_imports(path):
            if imported in graph and imported != module_name(path):
                graph[module_name(path)].add(imported)
    graphlib.TopologicalSorter(graph).prepare()


def test_the_checks_catch_a_violation(tmp_path: Path) -> None:
    """An upward import, a private import and an unclassified module are caught."""
    assert layer_of("nlsq.solvers.trf") < layer_of("nlsq.api.curve_fit")
    with pytest.raises(LookupError):
        layer_of("nlsq.newmodule")
    bad = tmp_path / "bad.py"
    bad.write_text("from nlsq.api.curve_fit import curve_fit\nfrom nlsq.host import _verdicts\n")
    imports = nlsq_imports(bad)
    assert ("nlsq.api.curve_fit", ["curve_fit"], 1) in imports
    assert any("_verdicts" in names for _, names, _ in imports)
    circle = {"a": {"b"}, "b": {"a"}}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(circle).prepare()
