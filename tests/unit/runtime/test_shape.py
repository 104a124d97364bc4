"""The runtime's shape, kept by checks on its source (``docs/architecture.md``, "Roles").

- Tasks are told apart by their interface, never by their class: no
  ``isinstance`` on a task class outside ``service/runtime/tasks/``.
- Dependencies are passed to constructors: no code assigns a callable to an
  attribute of another object after building it (``x.on_emit = ...``).
- No module-level state set through ``global``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "service"
TASK_CLASSES = {"Task", "SourceTask", "WindowTask", "DirectTask"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_isinstance_on_task_classes_outside_the_task_package():
    found = []
    for path in modules():
        if "runtime/tasks" in str(path):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                kinds = node.args[1]
                names = {n.id for n in ast.walk(kinds) if isinstance(n, ast.Name)}
                if names & TASK_CLASSES:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def test_no_callback_is_wired_into_another_object_after_it_is_built():
    """``a.b = lambda ...`` or ``a.b = self.method`` on an object other than ``self``."""
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                if not isinstance(target, ast.Attribute):
                    continue
                owner = target.value
                if isinstance(owner, ast.Name) and owner.id == "self":
                    continue
                value = node.value
                bound_method = isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and value.value.id == "self"
                if isinstance(value, ast.Lambda) or bound_method:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def test_no_module_state_is_set_through_global():
    found = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Global)
    ]
    assert found == []
