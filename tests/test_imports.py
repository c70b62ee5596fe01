"""The import graph of Encore's packages: no cycles, and one way, bots -> flows -> gpu_worker.

The graph is read from the source (`ast`), so it includes the imports inside functions,
which a cycle could otherwise hide behind: every `import` and `from ... import` of a module
of ours, wherever it stands, is an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("bots", "flows", "gpu_worker")  # each may import only the ones after it


def modules(root: Path, packages=LAYERS) -> dict[str, Path]:
    """Every module of `packages` under `root`, by dotted name (a package by its own name)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _ours(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours that importing `name` loads: itself, or the package that holds it."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(name: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """The modules of ours that module `name` imports, each with the line of its first import."""
    found: dict[str, int] = {}
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package `level - 1` above this one
                above = package[: len(package) - (node.level - 1)]
                base = ".".join([*above, base] if base else above)
            # `from flows import chat` imports the module flows.chat; `from flows.db import Job`
            # imports flows.db
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            module = _ours(target, known)
            if module is not None and module != name:
                found.setdefault(module, node.lineno)
    return found


def graph(root: Path = ROOT, packages=LAYERS) -> dict[str, dict[str, int]]:
    known = modules(root, packages)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _describe(group: list[str], edges: dict[str, dict[str, int]]) -> str:
    inside = set(group)
    return "\n".join(
        f"  {a} -> {b} (line {line})"
        for a in group
        for b, line in sorted(edges[a].items())
        if b in inside
    )


def test_no_module_of_ours_is_part_of_an_import_cycle():
    edges = graph()
    assert len(edges) > 50 and "flows.jobs" in edges["flows.submit"]  # the graph is read
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n\n".join(_describe(g, edges) for g in found)


def test_imports_go_one_way_bots_flows_gpu_worker():
    edges = graph()
    layer = {package: i for i, package in enumerate(LAYERS)}
    against = [
        f"{a} -> {b} (line {line})"
        for a, targets in edges.items()
        for b, line in targets.items()
        if layer[b.split(".")[0]] < layer[a.split(".")[0]]
    ]
    assert not against, "imports against bots -> flows -> gpu_worker:\n" + "\n".join(against)


def test_the_flows_job_runner_imports_no_chat_code():
    """A job's lifecycle knows its observers, not the chats they speak to (`flows.chat`)."""
    edges = graph()
    chat = [m for m in edges["flows.jobs"] if m == "flows.chat" or m.startswith("flows.chat.")]
    assert not chat


def test_a_cycle_behind_an_import_in_a_function_is_found(tmp_path):
    """The checks above would pass on a graph that missed imports: this one must not."""
    package = tmp_path / "flows"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from flows.sub import b\n")
    (package / "sub" / "b.py").write_text("def late():\n    from ..c import helper\n")
    (package / "c.py").write_text("import os\n\n\ndef f():\n    from flows import a\n")
    (package / "d.py").write_text("from flows.a import thing\n")
    edges = graph(tmp_path, ("flows",))
    assert edges["flows.sub.b"] == {"flows.c": 2}  # relative, inside a function
    assert edges["flows.d"] == {"flows.a": 1}  # a name from a module: an edge to the module
    assert cycles(edges) == [["flows.a", "flows.c", "flows.sub.b"]]
