"""The package layering, read from the source with ast: `spinegrade.data` imports nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "spinegrade"
# What spinegrade.data may import from spinegrade (its own modules and the shared leaves).
DATA_MAY_IMPORT = ("spinegrade.data", "spinegrade.errors", "spinegrade.vocab", "spinegrade.fileio")


def spinegrade_imports(file: Path) -> set[str]:
    """Every spinegrade module `file` imports, anywhere in it (top level, functions, TYPE_CHECKING)."""
    imported = set()
    for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "spinegrade":  # `from spinegrade import x`: x is a module or a name of it
                imported.update(f"spinegrade.{alias.name}" for alias in node.names)
            else:
                imported.add(node.module)
    return {name for name in imported if name == "spinegrade" or name.startswith("spinegrade.")}


def allowed(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_import_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import os\nimport spinegrade.crops.extract\nfrom spinegrade import evaluation\n"
        "def f():\n    from spinegrade.prediction.grade import Ensemble\nfrom . import sibling\n"
    )
    assert spinegrade_imports(source) == {
        "spinegrade.crops.extract",
        "spinegrade.evaluation",
        "spinegrade.prediction.grade",
    }


def test_data_imports_nothing_above_it() -> None:
    files = sorted((SRC / "data").rglob("*.py"))
    assert len(files) >= 10  # the reader package, tables, inspect, intensity...
    above = {
        f"{file.relative_to(SRC.parent)}: {module}"
        for file in files
        for module in spinegrade_imports(file)
        if not allowed(module, DATA_MAY_IMPORT)
    }
    assert not above, f"spinegrade.data imports from above it: {sorted(above)}"


def test_the_phantom_sits_above_data() -> None:
    assert not list((SRC / "data").glob("phantom/*.py"))
    imported = set().union(*(spinegrade_imports(f) for f in (SRC / "phantom").rglob("*.py")))
    assert {"spinegrade.crops.extract", "spinegrade.evaluation.score"} <= imported
