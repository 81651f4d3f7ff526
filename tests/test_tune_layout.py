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


ROOT = PACKAGE.parents[1]
# The noise grid's own modules: the only ones where a trial has an alpha and a beta.
GRID_MODULES = {"grid.py", "consolidate.py", "grid_report.py", "cells.py", "fit_law.py", "fit_summary.py"}
NOISE_FIELDS = {"alpha", "beta", "alpha_label", "beta_label", "alphas", "betas"}


def noise_fields_in(path: Path) -> list[str]:
    """Where `path` writes a grid field: a dict key, a `dict(alpha=...)` keyword, or a class field `alpha: float`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = set()
        if isinstance(node, ast.Dict):
            names = {k.value for k in node.keys if isinstance(k, ast.Constant)}
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            names = {k.arg for k in node.keywords}
        elif isinstance(node, ast.ClassDef):
            names = {f.target.id for f in node.body if isinstance(f, ast.AnnAssign) and isinstance(f.target, ast.Name)}
        found += [f"{path.relative_to(ROOT)}:{node.lineno} {k!r}" for k in sorted(names & NOISE_FIELDS)]
    return found


def test_no_kind_of_trial_fakes_the_grids_alpha_and_beta():
    """contract.TrialRecord is what the runner reads: it has no alpha or beta, and a study, --fit or batch trial
    never writes grid fields (dict keys, dict() keywords, dataclass fields); only the grid's modules do."""
    import dataclasses

    from adpm_dist.tune.contract import TrialRecord

    assert not {f.name for f in dataclasses.fields(TrialRecord)} & NOISE_FIELDS
    faked = [hit for path in PACKAGE.rglob("*.py") if not (path.name in GRID_MODULES and path.parent == PACKAGE)
             for hit in noise_fields_in(path)]
    assert not faked, faked


def test_the_noise_grid_is_planned_by_the_study_planner():
    """grid.py has no expansion of its own: its trials come from study/trials.py `expand` (issue 33)."""
    grid = ast.parse((PACKAGE / "grid.py").read_text())
    calls = [n for n in ast.walk(grid) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "expand" in {n.func.id for n in calls}
    over_folds = [n.lineno for n in calls if n.func.id == "range" and not all(isinstance(a, ast.Constant) for a in n.args)]
    assert not over_folds, f"grid.py:{over_folds}: points x folds belong to study/trials.py `expand`"


def sys_path_changes(path: Path) -> list[int]:
    """Lines that change sys.path: sys.path.insert/append/extend(...), sys.path[...] = ..., sys.path += ...,
    sys.path = ..., site.addsitedir(...)."""
    def is_sys_path(node) -> bool:
        node = node.value if isinstance(node, ast.Subscript) else node
        return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys")

    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if is_sys_path(node.func.value) or (node.func.attr == "addsitedir" and isinstance(node.func.value, ast.Name)
                                                and node.func.value.id == "site"):
                lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            lines += [node.lineno for t in targets if is_sys_path(t)]
    return lines


def test_entry_points_take_one_style():
    """No sys.path inserts in the package, tune/ or benchmarks/ (benchmarks run as `python -m benchmarks.NAME`),
    and no command line imports another: tune/*.py are thin wrappers of adpm_dist.tune.cli."""
    inserts = [f"{p.relative_to(ROOT)}:{line}" for folder in (PACKAGE, ROOT / "tune", ROOT / "benchmarks")
               for p in folder.rglob("*.py") for line in sys_path_changes(p)]
    assert not inserts, inserts
    for wrapper in (ROOT / "tune").glob("*.py"):
        imported = {node.module for node in ast.walk(ast.parse(wrapper.read_text())) if isinstance(node, ast.ImportFrom)}
        assert imported <= {"adpm_dist.tune.cli.study", "adpm_dist.tune.cli.search_noise", "adpm_dist.tune.cli.common"}, \
            (wrapper.name, imported)
        assert len(wrapper.read_text().splitlines()) < 40, f"{wrapper.name}: the CLI's logic belongs in adpm_dist/tune/cli"
