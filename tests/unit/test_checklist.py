"""The checklist at the end of docs/semantics.md names the tests behind each promise.

A renamed or deleted test would leave a promise pointing at nothing, and the
table would still read as covered; this keeps every name in it real.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEADING = "## Checklist: each promise and the tests that fail without it"
REF = re.compile(r"`((?:unit|integration)/[\w/]+\.py)?(?:::(test_\w+))?`")


def _rows() -> list[tuple[str, str]]:
    text = (REPO / "docs" / "semantics.md").read_text()
    table = text.split(HEADING, 1)[1]
    rows = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) >= 4 and cells[1] and not set(cells[2]) <= set("-: "):
            rows.append((cells[1], cells[2]))
    return rows[1:]  # the header


def test_the_checklist_has_a_row_per_promise():
    assert len(_rows()) >= 40


def test_every_test_the_checklist_names_exists():
    for promise, tests in _rows():
        refs = [m for m in REF.finditer(tests) if m.group(1) or m.group(2)]
        assert refs, f"no test named for: {promise}"
        module: Path | None = None
        for ref in refs:
            path, name = ref.group(1), ref.group(2)
            if path:
                module = REPO / "tests" / path
                assert module.exists(), f"{path} (for: {promise})"
            assert module is not None, f"::{name} with no file before it (for: {promise})"
            if name:
                assert re.search(rf"^(async )?def {name}\(", module.read_text(), re.M), (
                    f"{module.relative_to(REPO)}::{name} (for: {promise})"
                )
