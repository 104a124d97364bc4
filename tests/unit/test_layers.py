"""The package's layers, and the one direction imports may run between them.

    errors  <-  config  <-  core  <-  state  <-  runtime  <-  ops  <-  commands  <-  cli

A module may import from its own layer and the layers to its left. Kafka
clients are imported only in runtime/, RocksDB only in state/: the pure core
and the configuration can be read, tested and reused without either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "service"
LAYERS = ["errors", "config", "core", "state", "runtime", "ops", "commands", "cli"]
#: Third-party packages only one layer may import.
ONLY_IN = {
    "confluent_kafka": "runtime",
    "rocksdict": "state",
    # The registry extra: the formats live in runtime/formats/, core/ sees decode functions.
    "fastavro": "runtime",
    "google": "runtime",
    "jsonschema": "runtime",
    "proto_schema_parser": "runtime",
}


def layer_of(module: str) -> str | None:
    """``service.core.windows.session`` -> ``core``; the package root and ``__main__`` belong to no layer."""
    parts = module.split(".")
    if parts[0] != "service" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute module a file imports, with its line, wherever the import statement is."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def violations() -> list[str]:
    problems = []
    for module, path in modules():
        layer = layer_of(module)
        if layer is None:
            continue
        rank = LAYERS.index(layer)
        for line, target in imports(path):
            top = target.split(".")[0]
            if top in ONLY_IN and ONLY_IN[top] != layer:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {layer}/ imports {top} (only {ONLY_IN[top]}/ may)")
            target_layer = layer_of(target)
            if target_layer is not None and LAYERS.index(target_layer) > rank:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {layer}/ imports {target} ({target_layer}/ is above it)")
    return problems


def test_every_module_belongs_to_a_layer():
    loose = [module for module, _ in modules() if layer_of(module) is None and module not in ("service", "service.__main__")]
    assert loose == [], "put each module in one of the layer folders: " + ", ".join(loose)


def test_imports_run_one_way_and_clients_stay_in_their_layer():
    assert violations() == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("service.core.processor", "import rocksdict\n", "core/ imports rocksdict"),
        ("service.core.processor", "from confluent_kafka import Consumer\n", "core/ imports confluent_kafka"),
        ("service.config.parse", "def f():\n    from service.runtime.loop import StreamLoop\n", "config/ imports service.runtime.loop"),
        ("service.core.source", "from service.state.store import WindowStore\n", "core/ imports service.state.store"),
    ],
)
def test_the_check_catches_what_it_forbids(tmp_path, monkeypatch, module, source, expected):
    """The checker itself: a forbidden import, even a lazy one inside a function, is reported."""
    fake = tmp_path / "service" / Path(*module.split(".")[1:]).with_suffix(".py")
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    monkeypatch.setattr(__name__ + ".PACKAGE", tmp_path / "service")
    assert any(expected in problem for problem in violations()), violations()
