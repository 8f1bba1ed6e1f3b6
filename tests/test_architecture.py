"""The shape of the package: imports go one way, and nothing imports itself back through a loop.

Reads every module under atelier/ with `ast` (nothing is imported, so this takes well under a second) and builds
the graph of `import` / `from ... import` statements, those inside functions included: a deferred import is still
a dependency, and today's only cycle hid in one (the node registry importing the teaching nodes that import it).

Two rules, the ones docs/ARCHITECTURE.md draws:
1. Layers: each top-level part of Atelier has a rank; a module may import its own part or a part of lower rank,
   never a higher one (the engine knows nothing of nodes, nodes nothing of the server, nothing of the CLI).
2. No cycles between modules, inside a part too.

Run by hand: `python -m pytest tests/test_architecture.py -q`; on failure the message names the offending edge or
the modules of the cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "atelier"

# Lower rank = closer to the ground. Equal ranks do not import each other (they are siblings).
RANKS = {
    "errors": 0,  # the one exception type users see
    "limits": 1,  # what one request may cost
    "device": 1,  # where tensors live
    "imaging": 1,  # image tensors by layout and range: PIL, (B,H,W,C) in [0,1], (B,C,H,W) in [-1,1]
    "images": 2,  # PNG files that carry their parameters
    "plots": 1,  # line charts for lessons and training curves
    "sampling": 2,  # schedules, samplers, guidance: plain functions on tensors
    "models": 3,  # tokenizer, text encoders, UNet, VAE, checkpoint loading
    "pipeline": 4,  # txt2img / img2img / inpaint from the pieces above
    "world": 5,  # the procedural world, training and evaluation of the embedded model
    "batching": 5,  # several people's txt2img in one sampling call, each image as its job makes it alone
    "generation": 6,  # one generation's parameters, its API graph, its PNG metadata
    "lessons": 6,  # what the lab and the teaching nodes show, computed once
    "graph": 7,  # nodes, catalog, validation, execution
    "server": 8,  # HTTP + WebSocket
    "cli": 9,  # the command line
    "__main__": 9,
}


def module_name(path: Path) -> tuple[str, bool]:
    """('atelier.graph.kit', False) for atelier/graph/kit.py; ('atelier.graph', True) for its __init__.py."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def import_graph() -> dict[str, set[str]]:
    """Module -> the Atelier modules it imports (an imported name that is itself a module counts as that module)."""
    modules = {module_name(p)[0]: p for p in PACKAGE.rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        name, is_package = module_name(path)
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: `from . import x`, `from ..models import y`
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            for target in targets:
                if target.split(".")[0] == "atelier" and (found := known(target)) and found != name:
                    edges[name].add(found)
    return edges


def part(module: str) -> str:
    """The top-level part of Atelier a module belongs to: 'graph' for atelier.graph.kit."""
    return module.split(".")[1] if "." in module else "atelier"


def test_every_part_has_a_rank():
    parts = {part(module_name(p)[0]) for p in PACKAGE.rglob("*.py")} - {"atelier"}
    missing = sorted(parts - set(RANKS))
    assert not missing, f"give {missing} a rank in RANKS (and a line in docs/ARCHITECTURE.md)"


def test_imports_go_down_the_layers():
    upward = [
        f"{a} -> {b}"
        for a, targets in import_graph().items()
        for b in targets
        if part(a) != part(b) and part(b) != "atelier" and RANKS.get(part(b), 99) >= RANKS.get(part(a), -1)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (1972), iterative: the groups of modules that import each other round a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def test_no_import_cycles():
    cycles = strongly_connected(import_graph())
    assert not cycles, "modules that import each other round a loop:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_cycle_finder_finds_cycles(edges, expected):
    assert strongly_connected(edges) == expected
