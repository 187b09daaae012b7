"""The tree shows the roles, and the imports keep to them.

Each program lives in its room (agent/daemon, agent/tools, agent/shell, web)
over a shared core (agent/ itself), parsers/ and tracer/; what a room may
import is written down here once. Imports are read from the source (every
`import`, including those inside functions, which is where a circle hides),
and the login shell's entry module is imported for real in a fresh
interpreter to see what it loads.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

PACKAGES = ("agent", "tracer", "parsers", "web")
MAX_MODULE_LINES = 500
ROOMS = ("agent.daemon", "agent.tools", "agent.shell")
# What each part may import from the project, besides itself.
ALLOWED: dict[str, tuple[str, ...]] = {
    "parsers": (),
    "tracer": ("parsers",),
    "agent": ("parsers", "tracer"),  # the shared core
    "agent.daemon": ("agent", "parsers", "tracer"),
    "agent.tools": ("agent", "parsers", "tracer"),
    "agent.shell": ("agent", "parsers", "tracer"),
    "web": ("agent",),
}
# Entry modules that dispatch to rooms; they import them lazily, per command.
ENTRIES = {"agent.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def first_party_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
    }


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """First-party modules `path` imports anywhere in it (a package as itself)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from agent.daemon import store` imports the module agent.daemon.store.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def part_of(module: str) -> str:
    for room in ROOMS:
        if module == room or module.startswith(room + "."):
            return room
    return module.split(".")[0]


def graph() -> dict[str, set[str]]:
    modules = first_party_modules()
    known = set(modules)
    return {name: imports_of(path, name, known) for name, path in modules.items()}


def test_each_part_imports_only_what_its_room_may() -> None:
    wrong = []
    for module, targets in graph().items():
        if module in ENTRIES:
            continue
        mine = part_of(module)
        allowed = (mine, *ALLOWED[mine])
        for target in sorted(targets):
            theirs = part_of(target)
            if theirs not in allowed:
                wrong.append(f"{module} imports {target} ({theirs})")
    assert wrong == []


def test_no_import_circle_among_first_party_modules() -> None:
    edges = graph()
    # The package __init__ of a module's own package runs first anyway; an
    # import of it is no circle (agent/exits.py imports agent for AgentError).
    edges = {
        m: {t for t in targets if not m.startswith(t + ".")}
        for m, targets in edges.items()
    }
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert circles == []


def test_no_module_is_longer_than_the_house_style_allows() -> None:
    long = {
        name: n
        for name, path in first_party_modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def loaded_by(module: str) -> set[str]:
    """Top-level names of every module that importing `module` loads."""
    code = (
        "import json, sys\n"
        f"import {module}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(
    "module", ["agent.shell.main", "agent.shell.login", "agent.shell.token_login"]
)
def test_a_login_loads_neither_the_parser_nor_the_store_writer(module: str) -> None:
    assert loaded_by(module) & {"pyte", "tinydb", "watchdog", "rich", "django"} == set()


def test_the_daemon_never_loads_rich_and_the_status_tool_never_the_daemon() -> None:
    assert "rich" not in loaded_by("agent.daemon.agent")
    assert (
        loaded_by("agent.tools.status_view") & {"tinydb", "watchdog", "pyte"} == set()
    )
