"""adpm_dist/tune/ stays readable: no import cycle between its modules (module-level or lazy imports
alike) and no module over ~300 lines (issue 28: one path plan -> trials -> evaluate)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "adpm_dist" / "tune"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The adpm_dist.tune modules `path` imports, anywhere in the file."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith("adpm_dist.tune.") and n in MODULES}
    return found - {module_name(path)}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_no_import_cycle_in_the_tune_package():
    graph = {m: imports_of(p) for m, p in MODULES.items() if not m.endswith(".__init__")}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in graph.get(m, ()):
            assert state.get(n) != 1, "import cycle: " + " -> ".join(path + [m, n])
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
    assert graph["adpm_dist.tune.evaluator"] >= {"adpm_dist.tune.experiment"}  # the walk sees imports


def test_no_module_over_300_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long
