"""Whether the schema registry's absence skips its tests or fails the run.

Outside CI, a run without a registry (no JDK of 21 or newer to run it, or a
bare ``pytest``) skips the tests that need one, each with the reason. In CI
(``CI=true bash .ci/run``) a skip would make them vanish from a green run, so
the same absence fails it, with the reason and what to fix. scripts/test.sh
makes the same decision before it installs anything; this one also covers
pytest run by hand in CI, and a registry that is not there when the tests start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: Values of ``CI`` that mean "not in CI" (compared lower-cased), as scripts/test.sh's ``in_ci`` reads them.
NOT_CI = ("", "0", "false", "no")


def in_ci(environ: Mapping[str, str]) -> bool:
    """Whether the run is CI's: ``CI`` set to anything but empty, 0, false or no (CI services set ``CI=true``)."""
    return environ.get("CI", "").lower() not in NOT_CI


@dataclass(frozen=True)
class Missing:
    """Why there is no registry to test against, and whether that fails the run (in CI) or skips its tests."""

    message: str
    fail: bool


def missing_registry(environ: Mapping[str, str], answers: Callable[[int], bool]) -> Missing | None:
    """``None`` when the registry at ``SESSIONIZER_TEST_REGISTRY_PORT`` answers (``answers(port)``), else why not.

    ``SESSIONIZER_TEST_REGISTRY_SKIP`` is the reason scripts/test.sh gives when
    ``registry.sh java`` found no JDK of 21 or newer.
    """
    skip = environ.get("SESSIONIZER_TEST_REGISTRY_SKIP", "")
    port = int(environ.get("SESSIONIZER_TEST_REGISTRY_PORT", "0") or 0)
    if skip:
        message = f"no schema registry: {skip}"
        fix = "give the CI machine a JDK of 21 or newer (on PATH, under /usr/lib/jvm, or named by REGISTRY_JAVA)"
    elif not port:
        message = "no schema registry: SESSIONIZER_TEST_REGISTRY_PORT is not set (run the suite with: bash scripts/test.sh)"
        fix = "run the suite with scripts/test.sh, which starts one"
    elif not answers(port):
        message = f"no schema registry on port {port}; start one with: REGISTRY_PORT={port} bash scripts/registry.sh start"
        fix = "see scripts/registry.sh's log for why it is not answering"
    else:
        return None
    if not in_ci(environ):
        return Missing(message, fail=False)
    return Missing(f"{message}. In CI (CI={environ['CI']}) the schema registry tests must run, not be skipped: {fix}", fail=True)
