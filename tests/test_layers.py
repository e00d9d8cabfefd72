"""The arena's layers point one way: no module imports a later layer, and no imports go round in a cycle.

Every module under ``src/optarena/arena`` is parsed with ``ast`` — imports inside functions included —
and each import of another arena module is resolved to that module (a name imported from a package
is the submodule of that name when there is one, else the package itself). The first part of a
module's name below ``optarena.arena`` is its layer; :data:`LAYERS` is their order. ``cli.py`` is the
last layer; the package's own ``__init__`` imports nothing of the arena.
"""

from __future__ import annotations

import ast
from pathlib import Path

ARENA = Path(__file__).resolve().parents[1] / "src" / "optarena" / "arena"
ROOT = "optarena.arena"
LAYERS = ("tasks", "spec", "run", "study", "analysis", "render", "evidence", "cli")
MAX_LINES = 400

Sources = dict[str, tuple[str, bool]]  # module name -> (source, is a package's __init__)


def arena_sources(folder: Path = ARENA) -> Sources:
    sources = {}
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(ARENA.parents[1]).with_suffix("").parts  # from src/: optarena.arena....
        package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if package else parts)
        sources[name] = (path.read_text(encoding="utf-8"), package)
    return sources


def imports_of(name: str, source: str, package: bool, known: set[str], root: str = ROOT) -> set[str]:
    """The modules under ``root`` (the arena) that module ``name`` imports, anywhere in its code."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one step up per extra dot
                anchor = name if package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import optarena.arena.x.y` names module x.y
                target = target.rpartition(".")[0]
            if target.startswith(root) and target != name:
                found.add(target)
    return found


def import_graph(sources: Sources, root: str = ROOT) -> dict[str, set[str]]:
    known = set(sources)
    return {name: imports_of(name, source, package, known, root) for name, (source, package) in sources.items()}


def layer(name: str) -> int | None:
    """The index in :data:`LAYERS` of module ``name``'s layer; None for the arena package itself."""
    parts = name.removeprefix(ROOT).strip(".").split(".")
    return None if parts == [""] else LAYERS.index(parts[0]) if parts[0] in LAYERS else -1


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that points at a later layer (or, from the arena package itself, at any layer)."""
    wrong = []
    for name, imported in sorted(graph.items()):
        for target in sorted(imported):
            mine, theirs = layer(name), layer(target)
            if mine is None or (theirs is not None and theirs > mine):
                wrong.append(f"{name} imports {target}")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# --- the arena as it is ------------------------------------------------------------------------------------


def test_every_arena_module_is_in_a_layer() -> None:
    sources = arena_sources()
    assert f"{ROOT}.cli" in sources and f"{ROOT}.study.records" in sources
    assert [name for name in sources if layer(name) == -1] == []


def test_no_arena_module_imports_a_later_layer() -> None:
    assert upward_imports(import_graph(arena_sources())) == []


def test_no_import_cycle_between_arena_modules() -> None:
    assert cycles(import_graph(arena_sources())) == []


def test_arena_modules_stay_short() -> None:
    lengths = {name: source.count("\n") for name, (source, _) in arena_sources().items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


# --- the library around the arena ---------------------------------------------------------------------------

# The neutral modules (the version, validation, the burst clock) import nothing of optarena; the optimizers and
# the schedules use them and not each other; the arena and the framework integrations use them and not each other;
# the package re-exports the first layers.
LIBRARY_LAYERS = {"version": 0, "validation": 0, "burst": 0, "optim": 1, "schedules": 1, "arena": 2, "integrations": 2}


def library_layer(name: str) -> int:
    part = name.removeprefix("optarena").strip(".").split(".")[0]
    return 3 if part in ("", "__main__") else LIBRARY_LAYERS.get(part, -1)


def test_the_library_layers_point_one_way_with_no_cycle() -> None:
    sources = arena_sources(ARENA.parent)  # every module of the optarena package
    graph = import_graph(sources, root="optarena")
    assert [name for name in sources if library_layer(name) == -1] == []
    wrong = [
        f"{name} imports {target}"
        for name, imported in sorted(graph.items())
        for target in sorted(imported)
        if library_layer(target) > library_layer(name)
        or (library_layer(target) == library_layer(name) in (1, 2) and target.split(".")[1] != name.split(".")[1])
    ]
    assert wrong == []
    assert cycles(graph) == []


# --- the checks themselves ----------------------------------------------------------------------------------


def _fake(**modules: str) -> Sources:
    """Arena modules from sources, named relative to the arena (``study.records``); packages end in ``/``."""
    out = {}
    for key, source in modules.items():
        name = key.replace("__", ".").rstrip(".")
        out[f"{ROOT}.{name}" if name else ROOT] = (source, key.endswith("__"))
    return out


def test_the_checks_find_upward_imports_in_any_form() -> None:
    sources = _fake(
        study__="",
        study__records="",
        render__report="",
        spec__search="def f():\n    from optarena.arena.study import records\n",  # inside a function
        run__runner="import optarena.arena.render.report\n",
        analysis__views="from ..render import report\n",  # relative
        tasks__="from optarena.arena.study.records import load_results\n",  # from a package's __init__
    )
    graph = import_graph(sources)
    assert graph[f"{ROOT}.spec.search"] == {f"{ROOT}.study.records"}
    assert graph[f"{ROOT}.analysis.views"] == {f"{ROOT}.render.report"}
    assert upward_imports(graph) == [
        f"{ROOT}.analysis.views imports {ROOT}.render.report",
        f"{ROOT}.run.runner imports {ROOT}.render.report",
        f"{ROOT}.spec.search imports {ROOT}.study.records",
        f"{ROOT}.tasks imports {ROOT}.study.records",
    ]
    downward = _fake(study__protocol="from optarena.arena.spec import search\nimport optarena.arena.tasks\n")
    assert upward_imports(import_graph({**downward, **_fake(spec__="", spec__search="", tasks__="")})) == []


def test_the_checks_find_a_cycle_within_a_layer() -> None:
    sources = _fake(
        study__protocol="from optarena.arena.study import workers\n",
        study__workers="def work():\n    from optarena.arena.study.protocol import compare\n",
        study__store="",
        study__="",
    )
    graph = import_graph(sources)
    assert upward_imports(graph) == []  # the same layer: only the cycle is wrong
    assert cycles(graph) == [[f"{ROOT}.study.protocol", f"{ROOT}.study.workers"]]
    del sources[f"{ROOT}.study.workers"]
    assert cycles(import_graph(sources)) == []


def test_the_arena_package_itself_imports_no_layer() -> None:
    assert upward_imports({ROOT: {f"{ROOT}.tasks"}}) == [f"{ROOT} imports {ROOT}.tasks"]
    assert layer(f"{ROOT}.nowhere.thing") == -1  # a folder that is no layer: test_every_arena_module_is_in_a_layer
