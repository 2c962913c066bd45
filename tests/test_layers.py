"""The layers import each other in one direction only, read from the source with ``ast``.

Every import counts: at the top, inside a function (imported on first use) and
under ``TYPE_CHECKING`` (a loop that only the type checker sees is still a loop
a reader has to untangle). The rules, lowest layer first:

- gateway's shared small modules (errors, clock, readings, ...) import only each other;
- ``drivers/`` speak protocols: from the gateway they import the shared small modules only;
- ``simulators/`` import drivers (for the wire formats) and the shared small modules only;
- ``gateway.config`` describes the site file: no driver, no other gateway package;
- the application (``gateway.runtime``) is imported by the CLI and the demo only;
- no import loop between gateway's packages (each folder one node; each top-level
  module its own node), ``drivers`` and ``simulators``.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPS = ("gateway", "drivers", "simulators")

# Small types every layer shares: they sit below everything else.
SHARED = frozenset({"gateway.errors", "gateway.clock", "gateway.readings", "gateway.cancellation",
                    "gateway.backoff", "gateway.mqtt_tls", "gateway.mqtt_client", "gateway.json_safe",
                    "gateway.device_health", "gateway.device_faults", "gateway.log_limit"})
# Who may import the application (gateway.runtime): what starts a gateway.
RUNTIME_USERS = frozenset({"gateway.runtime", "gateway.cli", "gateway.demo"})
# Package loops left on purpose, each with its reason. Empty: there is none.
ALLOWED_LOOPS: frozenset[frozenset[str]] = frozenset()


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every project module ``path`` imports, with the line, wherever the import stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from gateway import json_safe`` imports the module gateway.json_safe
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.extend((name, node.lineno) for name in names if name.split(".")[0] in TOPS)
    return found


@functools.cache  # read once for all the tests here
def import_graph() -> dict[str, list[tuple[str, int]]]:
    """Module -> the project modules it imports (with line numbers)."""
    graph = {}
    for top in TOPS:
        for path in sorted((ROOT / top).rglob("*.py")):
            graph[_module_name(path)] = _imports(path)
    return graph


def _resolve(name: str, modules: set[str]) -> str:
    """``gateway.clock.SystemClock`` -> ``gateway.clock``: the longest known module."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def layer(module: str) -> str:
    """The node a module belongs to: ``drivers``, ``simulators``, ``gateway.<folder>``, or
    the top-level module itself (``gateway.clock``, ``gateway.cli``)."""
    parts = module.split(".")
    return parts[0] if parts[0] != "gateway" else ".".join(parts[:2])


@functools.cache
def _edges() -> list[tuple[str, str, str]]:
    """(importing module, imported module, "file:line") for every project import."""
    graph = import_graph()
    modules = set(graph)
    out = []
    for module, imports in graph.items():
        file = module.replace(".", "/")
        for name, line in imports:
            out.append((module, _resolve(name, modules), f"{file}.py:{line}"))
    return out


def _breaking(rule) -> list[str]:
    return sorted(f"{where}: {src} imports {dst}" for src, dst, where in _edges()
                  if rule(src, dst))


def test_the_import_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    assert "gateway.runtime.app" in graph and "drivers.modbus.device" in graph
    # gateway.cli imports the application in its ``run`` handler only
    assert "gateway.runtime.app" in {_resolve(n, set(graph)) for n, _ in graph["gateway.cli"]}


def test_shared_modules_import_only_each_other() -> None:
    assert _breaking(lambda src, dst: src in SHARED and dst not in SHARED) == []


def test_drivers_import_only_the_shared_modules_of_the_gateway() -> None:
    assert _breaking(lambda src, dst: layer(src) == "drivers" and dst.startswith("gateway")
                     and dst not in SHARED) == []


def test_simulators_import_drivers_and_the_shared_modules_only() -> None:
    assert _breaking(lambda src, dst: layer(src) == "simulators" and dst.startswith("gateway")
                     and dst not in SHARED) == []


def test_the_config_imports_no_driver_and_no_other_part_of_the_gateway() -> None:
    assert _breaking(lambda src, dst: layer(src) == "gateway.config"
                     and layer(dst) != "gateway.config" and dst not in SHARED) == []


def test_only_what_starts_a_gateway_imports_the_application() -> None:
    assert _breaking(lambda src, dst: layer(dst) == "gateway.runtime"
                     and layer(src) not in RUNTIME_USERS) == []


def test_no_import_loop_between_packages() -> None:
    edges: dict[str, dict[str, str]] = defaultdict(dict)
    for src, dst, where in _edges():
        a, b = layer(src), layer(dst)
        if a != b:
            edges[a].setdefault(b, f"{where}: {src} imports {dst}")
    loops = []
    for a in sorted(edges):
        for b in sorted(edges[a]):
            path = _path(edges, b, a)
            if path is not None and frozenset({a, b}) not in ALLOWED_LOOPS:
                hops = [a, *path]
                loops.append(" -> ".join(hops) + "  (" + "; ".join(
                    edges[x][y] for x, y in zip(hops, hops[1:])) + ")")
    assert loops == []


def _path(edges: dict[str, dict[str, str]], start: str, goal: str) -> list[str] | None:
    """The nodes from ``start`` to ``goal`` following imports (breadth first), or None."""
    came_from: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            if node == goal:
                hops = []
                at: str | None = node
                while at is not None:
                    hops.append(at)
                    at = came_from[at]
                return hops[::-1]
            for b in edges.get(node, {}):
                if b not in came_from:
                    came_from[b] = node
                    nxt.append(b)
        frontier = nxt
    return None
