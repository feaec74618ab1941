"""The package's layering, enforced: every wrel import points down, none hides in a function.

Each module of ``src/wrel`` belongs to one layer (:data:`LAYERS`, lowest first; the table and a
picture are in docs/architecture.md). A module may import a module of its own layer or of a
lower one. A ``wrel`` import inside a function is allowed only with a comment on that line (or
the line above it or above its run of consecutive imports) naming the import cycle it breaks:
``# cycle: <module> <-> <module>`` (a cycle is only possible within a layer). There is none
today. Lazy imports for a fast ``wrel --help`` are not needed: building the parser loads torch
anyway, and importing the whole library adds about 0.1 s to that.

No loop of modules imports each other, type-only imports under ``if TYPE_CHECKING:``
included (:func:`import_cycles`).

Third-party imports inside functions (torch, matplotlib, rasterio, ...) are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "wrel"

#: Layers, lowest first: module-name prefixes (a prefix matches itself and its submodules).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("wrel", "wrel.core")),  # "wrel" is the package itself only
    ("data", ("wrel.data",)),
    ("models", ("wrel.models",)),
    ("methods", ("wrel.methods",)),
    ("evaluation", ("wrel.evaluation",)),
    ("theory", ("wrel.theory",)),
    ("engine", ("wrel.engine",)),
    ("inference", ("wrel.inference",)),
    ("studies", ("wrel.studies",)),
    ("web", ("wrel.web",)),
    ("commands", ("wrel.commands",)),
    ("entry", ("wrel.cli", "wrel.__main__")),
]


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest prefix that matches ``module``."""
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            below = prefix != "wrel" and module.startswith(prefix + ".")
            if (module == prefix or below) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} is in no layer; add it to LAYERS in {__file__}")
    return best


def import_block_starts(tree: ast.Module) -> dict[int, int]:
    """Line of an import statement -> first line of its run of consecutive import statements.

    One comment above such a run covers every import of the run.
    """
    starts: dict[int, int] = {}
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody", "handlers"):
            statements = getattr(node, field, None)
            if not isinstance(statements, list):
                continue
            start = None
            for statement in statements:
                if isinstance(statement, ast.Import | ast.ImportFrom):
                    start = statement.lineno if start is None else start
                    starts[statement.lineno] = start
                else:
                    start = None
    return starts


def wrel_imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every wrel import of a module."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "wrel":
                        found.append((alias.name, child.lineno, in_function))
            elif (
                isinstance(child, ast.ImportFrom)
                and child.level == 0
                and (child.module or "").split(".")[0] == "wrel"
            ):
                found.append((child.module, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def _modules(src: Path = SRC) -> list[Path]:
    return sorted((src / "wrel").rglob("*.py"))


def _problems(src: Path = SRC) -> list[str]:
    problems = []
    for path in _modules(src):
        name = module_name(path, src)
        own = layer_of(name)
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text, filename=str(path))
        starts = import_block_starts(tree)
        for target, lineno, in_function in wrel_imports(tree):
            where = f"{path.relative_to(src)}:{lineno}"
            theirs = layer_of(target)
            if theirs > own:
                problems.append(
                    f"{where}: {name} ({LAYERS[own][0]}) imports {target} ({LAYERS[theirs][0]}),"
                    " a higher layer"
                )
            if in_function:
                first = starts.get(lineno, lineno)
                nearby = "".join(lines[max(first - 2, 0) : lineno])
                if "# cycle:" in nearby:
                    continue
                problems.append(
                    f"{where}: {name} imports {target} inside a function; move it to the top "
                    "of the module, or name the import cycle it breaks in a '# cycle: ...' comment"
                )
    return problems


def test_every_module_is_in_a_layer() -> None:
    for path in _modules():
        layer_of(module_name(path))


def test_no_relative_imports() -> None:
    relative = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.level
    ]
    assert not relative, f"use absolute wrel imports: {relative}"


def test_imports_point_down_and_none_hides_in_a_function() -> None:
    problems = _problems()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from wrel.engine.trainer import train\n", [("wrel.engine.trainer", 1, False)]),
        ("def f():\n    import wrel.data.refer\n", [("wrel.data.refer", 2, True)]),
        ("import torch\nfrom collections import abc\n", []),
    ],
)
def test_the_checker_sees_imports(source: str, expected: list[tuple[str, int, bool]]) -> None:
    assert wrel_imports(ast.parse(source)) == expected


def test_the_checker_ranks_layers() -> None:
    assert layer_of("wrel.data.dataset") < layer_of("wrel.methods.lrb") < layer_of("wrel.cli")
    assert layer_of("wrel") == layer_of("wrel.core.config") == 0


def test_architecture_doc_matches_the_tree() -> None:
    """docs/architecture.md names every module of the package, and no module that is gone."""
    import re

    doc = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(?:[\w/]+/)?(\w+\.py)`", doc))
    # commands/<name>.py and data/synth/ are described as a whole
    described_whole = (PACKAGE / "commands", PACKAGE / "data" / "synth")
    modules = {
        p.name
        for p in _modules()
        if p.name not in ("__init__.py", "__main__.py") and p.parent not in described_whole
    }
    missing = sorted(modules - named)
    assert not missing, f"docs/architecture.md does not name {missing}"
    # not in the set above: scripts, the test, the entry point and commands/data_synth.py
    outside = {"compare_records.py", "bench_throughput.py", "test_layering.py", "__main__.py"}
    outside.add("run_folder_size.py")
    outside.add("data_synth.py")
    gone = sorted(named - modules - outside)
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"
    for name, _ in LAYERS:
        assert re.search(rf"^ {name}\s", doc, re.M), f"the layer picture lacks layer {name!r}"


#: Pairs of packages that never meet although the layer order would allow it (docs/architecture.md).
APART = [
    ("wrel.models", "wrel.data"),
    ("wrel.evaluation", "wrel.methods"),
    ("wrel.evaluation", "wrel.models"),
    ("wrel.theory", "wrel.data"),
    ("wrel.theory", "wrel.models"),
    ("wrel.theory", "wrel.methods"),
    ("wrel.theory", "wrel.evaluation"),
    ("wrel.theory", "wrel.core"),
]


def _imports_of(package: str) -> list[tuple[str, str]]:
    """``(module, imported)`` for every import, wrel or not, of the modules of ``package``."""
    out = []
    for path in _modules():
        name = module_name(path)
        if name != package and not name.startswith(package + "."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out += [(name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                out.append((name, node.module))
    return out


def test_packages_that_stay_apart() -> None:
    found = [
        f"{module} imports {target}"
        for lower, other in APART
        for module, target in _imports_of(lower)
        if target == other or target.startswith(other + ".")
    ]
    assert not found, found


def test_theory_is_pure_numpy() -> None:
    third_party = {t.split(".")[0] for _, t in _imports_of("wrel.theory")} - {"wrel"}
    assert third_party <= {"__future__", "math", "collections", "dataclasses", "typing", "numpy"}


def test_the_checker_reports_upward_and_hidden_imports(tmp_path: Path) -> None:
    data = tmp_path / "wrel" / "data"
    data.mkdir(parents=True)
    (data / "up.py").write_text("from wrel.engine.trainer import train\n")
    (data / "hidden.py").write_text("def f():\n    from wrel.data.up import train\n")
    (data / "cycle.py").write_text(
        "def f():\n    # cycle: wrel.data.cycle <-> wrel.data.up\n    from wrel.data import up\n"
    )
    problems = _problems(tmp_path)
    assert len(problems) == 2, problems
    assert "wrel/data/up.py:1" in problems[1] and "a higher layer" in problems[1]
    assert "wrel/data/hidden.py:2" in problems[0] and "inside a function" in problems[0]


def import_cycles(src: Path = SRC) -> list[list[str]]:
    """Loops of wrel modules that import each other, imports under ``if TYPE_CHECKING:`` and
    inside functions included (a type-only loop still ties two files into one unit). A
    ``from wrel.pkg import name`` counts as importing ``wrel.pkg.name`` when that is a module,
    else the package; a package's ``__init__`` is no node (it only hands names on)."""
    modules = {module_name(p, src): p for p in _modules(src) if p.name != "__init__.py"}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            graph[name] |= {t for t in targets if t in modules and t != name}
    cycles, seen = [], set()
    for start in sorted(graph):  # a loop through `start`: depth-first back to it
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    key = frozenset(path)
                    if key not in seen:
                        seen.add(key)
                        cycles.append(path)
                elif nxt not in path and nxt > start:  # each loop once, from its least member
                    stack.append((nxt, [*path, nxt]))
    return cycles


def test_no_module_imports_another_that_imports_it_back() -> None:
    cycles = import_cycles()
    assert not cycles, " | ".join(" -> ".join([*c, c[0]]) for c in cycles)


def test_the_cycle_finder_sees_type_only_loops(tmp_path: Path) -> None:
    models = tmp_path / "wrel" / "models"
    models.mkdir(parents=True)
    (models / "__init__.py").write_text("from wrel.models.a import A\n")
    (models / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from wrel.models.b import B\n"
    )
    (models / "b.py").write_text("from wrel.models import c\n")
    (models / "c.py").write_text("from wrel.models.a import A\n")
    (models / "d.py").write_text("from wrel.models.a import A\n")  # imports into the loop only
    assert import_cycles(tmp_path) == [["wrel.models.a", "wrel.models.b", "wrel.models.c"]]
