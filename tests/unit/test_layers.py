"""The layers import one way, and no module imports itself back through others.

Every module of `flowforge/` and `api/` is parsed (nothing is imported), and every import in
it counts, the ones inside functions too: a function-level import is still a dependency, only a
later one. Imports under `if TYPE_CHECKING:` count for the layers (a type is a dependency of
the design) but not for cycles (they never run).

    core          the model, validation, templates, gate, names, wire schema
    connectors    SSH connections, server records, Prefect variables as a store
    runtime       what runs in a flow run: job kinds, executors
    controlplane  deploy, triggers, limits, pools, runs, the Prefect client wrapper
    image         the image builder
    stack         `flowforge up`: the processes, their supervision
    cli           the `flowforge` command
    api           the FastAPI service: routes -> services -> tables
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("flowforge", "api")

#: module prefix -> layer; the longest prefix wins.
LAYERS = {
    "flowforge": "core",  # the package itself: only its version
    "flowforge.core": "core",
    "flowforge.connectors": "connectors",
    "flowforge.runtime": "runtime",
    "flowforge.controlplane": "controlplane",
    "flowforge.image": "image",
    "flowforge.offloop_gc": "offloop_gc",
    "flowforge.stack": "stack",
    "flowforge.cli": "cli",
    "api": "api",
}
#: layer -> the layers it may import.
ALLOWED = {
    "core": {"core"},
    "connectors": {"core", "connectors"},
    "runtime": {"core", "connectors", "runtime"},
    "controlplane": {"core", "connectors", "controlplane"},
    "image": {"core", "image"},
    "offloop_gc": {"offloop_gc"},
    "stack": {"core", "connectors", "runtime", "controlplane", "image", "offloop_gc", "stack"},
    "cli": {"core", "connectors", "runtime", "controlplane", "image", "stack", "cli"},
    "api": {"core", "connectors", "controlplane", "api"},
}
_SERVICE = {"fastapi", "starlette", "sqlalchemy", "sqlmodel", "alembic", "uvicorn"}
#: layer -> third-party packages it must not import.
FORBIDDEN = {
    "core": _SERVICE | {"prefect", "prefect_docker", "docker", "asyncssh", "psycopg", "httpx",
                        "apprise"},
    "connectors": _SERVICE | {"docker"},
    "runtime": _SERVICE,
    "controlplane": _SERVICE | {"docker", "psycopg"},
    "image": _SERVICE | {"prefect"},
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module, as precisely as the import says
    line: int
    typing_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue  # Alembic's scripts, run by Alembic
            found[module_name(path)] = path
    return found


def _typing_blocks(tree: ast.AST) -> set[int]:
    """Line numbers of statements under `if TYPE_CHECKING:`."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def imports(name: str, path: Path, known: set[str]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    typing_lines = _typing_blocks(tree)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, node.lineno, node.lineno in typing_lines)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield Import(name, full if full in known else base, node.lineno,
                             node.lineno in typing_lines)


def layer_of(module: str) -> str | None:
    best = None
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best)):
            best = prefix
    return None if best is None else LAYERS[best]


def all_imports() -> list[Import]:
    found = modules()
    known = set(found)
    return [imp for name, path in found.items() for imp in imports(name, path, known)]


def test_every_module_has_a_layer() -> None:
    assert [m for m in modules() if layer_of(m) is None] == []


def test_layers_import_one_way() -> None:
    violations = []
    for imp in all_imports():
        source, target = layer_of(imp.source), layer_of(imp.target)
        assert source is not None
        if target is not None and target not in ALLOWED[source]:
            violations.append(f"{imp.source}:{imp.line} ({source}) imports {imp.target} ({target})")
        top = imp.target.split(".")[0]
        if top in FORBIDDEN.get(source, set()):
            violations.append(f"{imp.source}:{imp.line} ({source}) imports {imp.target}")
    assert violations == [], "\n".join(violations)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_cycles() -> None:
    known = set(modules())
    edges: dict[str, set[str]] = {name: set() for name in known}
    for imp in all_imports():
        if not imp.typing_only and imp.target in known and imp.target != imp.source:
            edges[imp.source].add(imp.target)
    assert cycles(edges) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_generated_flows_import_only_the_runtime() -> None:
    for path in sorted((ROOT / "flows").glob("*.py")):
        targets = {imp.target for imp in imports("flows." + path.stem, path, set())}
        ours = {t for t in targets if t.split(".")[0] in PACKAGES}
        assert ours and all(layer_of(t) == "runtime" for t in ours), (path.name, ours)


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}
