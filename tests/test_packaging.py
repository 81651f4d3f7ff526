"""What a fresh install and a new reader rely on: every package adpm_dist imports is declared in
pyproject.toml (scipy and psutil once were not), and every repository path the README and docs name
exists (docs/baselines.md once pointed to a folder that did not)."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATH_IN_BACKTICKS = re.compile(r"`((?:adpm_dist|benchmarks|configs|tune|launch|tests|docs|\.ci)/[\w./-]*)`")


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    return {re.split(r"[\[<>=!~; ]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def _third_party_imports(package: Path) -> dict[str, str]:
    """Top-level module name -> first file importing it, for modules outside the stdlib and the package."""
    found: dict[str, str] = {}
    for file in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != package.name:
                    found.setdefault(top, str(file.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    declared, dists = _declared(), packages_distributions()
    undeclared = {}
    for module, where in _third_party_imports(ROOT / "adpm_dist").items():
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & declared:
            undeclared[module] = where
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", _doc_files(), ids=lambda p: p.name)
def test_paths_named_in_the_docs_exist(doc):
    missing = sorted({m for m in PATH_IN_BACKTICKS.findall(doc.read_text()) if not (ROOT / m.rstrip("/.")).exists()})
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_the_path_check_can_fail(tmp_path):
    text = "see `adpm_dist/baselines/` and `adpm_dist/methods/`"
    assert [m for m in PATH_IN_BACKTICKS.findall(text) if not (ROOT / m.rstrip("/.")).exists()] == ["adpm_dist/baselines/"]


DOTTED_NAME = re.compile(r"\badpm_dist(?:\.[A-Za-z_]\w*)+")


def _resolves(name: str) -> bool:
    """`adpm_dist.a.b.c` is a module, or an attribute of the longest importable module prefix."""
    import importlib

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", _doc_files(), ids=lambda p: p.name)
def test_dotted_names_in_the_docs_import(doc):
    """docs/distributed.md once named adpm_dist.engine.train, which lives in adpm_dist.runtime."""
    names = sorted(set(DOTTED_NAME.findall(doc.read_text())))
    broken = [n for n in names if not _resolves(n)]
    assert not broken, f"{doc.name} names what does not import: {broken}"


def test_the_dotted_name_check_can_fail():
    assert _resolves("adpm_dist.runtime.engine.train") and not _resolves("adpm_dist.engine.train")
    assert not _resolves("adpm_dist.runtime.engine.no_such_function")
