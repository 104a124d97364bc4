"""A missing schema registry skips its tests outside CI and fails the run in CI (tests/integration/expected.py, scripts/test.sh).

scripts/test.sh is run for real, from a copy of scripts/ whose env.sh stops
the run where the installing would begin, with a stand-in ``java`` that
reports the version asked for: it must stop at once in CI when there is no
JDK of 21 or newer, and carry on to the tests everywhere else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.expected import in_ci, missing_registry

REPO = Path(__file__).resolve().parents[2]
#: Exit code of the stand-in env.sh: test.sh got past its registry check.
REACHED_INSTALL = 97


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("", False), ("0", False), ("false", False), ("False", False), ("no", False), ("true", True), ("1", True), ("yes", True)],
)
def test_ci_is_ci_set_to_anything_but_empty_0_false_or_no(value, expected):
    assert in_ci({} if value is None else {"CI": value}) is expected


def never(port: int) -> bool:
    raise AssertionError("the registry is not asked when the reason is known before")


NO_JDK = "REGISTRY_JAVA=/usr/bin/java is Java 17; the registry needs Java 21 or newer"


def test_no_jdk_skips_with_the_reason_outside_ci_and_fails_in_ci():
    environ = {"SESSIONIZER_TEST_REGISTRY_SKIP": NO_JDK, "SESSIONIZER_TEST_REGISTRY_PORT": "19181"}
    skipped = missing_registry({**environ, "CI": "false"}, never)
    assert skipped is not None and not skipped.fail
    assert skipped.message == f"no schema registry: {NO_JDK}"
    failed = missing_registry({**environ, "CI": "true"}, never)
    assert failed is not None and failed.fail
    assert failed.message.startswith(f"no schema registry: {NO_JDK}. In CI (CI=true) the schema registry tests must run, not be skipped")
    assert "JDK of 21 or newer" in failed.message


def test_no_port_and_a_registry_that_does_not_answer_skip_outside_ci_and_fail_in_ci():
    for environ, answers, says in [
        ({}, never, "SESSIONIZER_TEST_REGISTRY_PORT is not set"),
        ({"SESSIONIZER_TEST_REGISTRY_PORT": "19181"}, lambda port: False, "no schema registry on port 19181"),
    ]:
        outside = missing_registry(environ, answers)
        assert outside is not None and not outside.fail and says in outside.message
        inside = missing_registry({**environ, "CI": "1"}, answers)
        assert inside is not None and inside.fail and says in inside.message and "In CI (CI=1)" in inside.message


def test_a_registry_that_answers_is_used_in_ci_and_out():
    asked = []
    for ci in ("true", ""):
        assert missing_registry({"SESSIONIZER_TEST_REGISTRY_PORT": "19181", "CI": ci}, lambda port: asked.append(port) or True) is None
    assert asked == [19181, 19181]


@pytest.fixture
def scripts_copy(tmp_path: Path) -> Path:
    """scripts/test.sh and registry.sh in a copy of the repository whose env.sh exits ``REACHED_INSTALL``."""
    (tmp_path / "scripts" / "lib").mkdir(parents=True)
    for name in ("test.sh", "registry.sh", "lib/process.sh"):
        shutil.copy2(REPO / "scripts" / name, tmp_path / "scripts" / name)
    (tmp_path / "scripts" / "env.sh").write_text(f'echo "env.sh reached" >&2\nexit {REACHED_INSTALL}\n')
    return tmp_path


def run_test_sh(root: Path, java_version: int, ci: str | None) -> subprocess.CompletedProcess[str]:
    java = root / f"java{java_version}"
    java.write_text(f'#!/bin/sh\necho "    java.specification.version = {java_version}" >&2\n')
    java.chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith(("SESSIONIZER_", "REGISTRY_"))}
    environ["REGISTRY_JAVA"] = str(java)
    if ci is not None:
        environ["CI"] = ci
    return subprocess.run(["bash", str(root / "scripts" / "test.sh")], env=environ, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_test_sh_in_ci_without_jdk_21_fails_before_installing_anything(scripts_copy, ci):
    done = run_test_sh(scripts_copy, 17, ci)
    assert done.returncode == 1, done.stderr
    assert "env.sh reached" not in done.stderr
    assert "is Java 17; the registry needs Java 21 or newer" in done.stderr
    assert f"in CI (CI={ci}) the schema registry tests must run, not be skipped" in done.stderr


@pytest.mark.parametrize("ci", [None, "false", "0"])
def test_test_sh_outside_ci_without_jdk_21_goes_on_to_skip_the_registry_tests(scripts_copy, ci):
    done = run_test_sh(scripts_copy, 17, ci)
    assert done.returncode == REACHED_INSTALL, done.stderr
    assert "its tests will be skipped" in done.stderr


def test_test_sh_in_ci_with_jdk_21_goes_on(scripts_copy):
    done = run_test_sh(scripts_copy, 21, "true")
    assert done.returncode == REACHED_INSTALL, done.stderr
    assert "no schema registry" not in done.stderr
