"""A copy of this checkout with its hot modules compiled by mypyc, for timing the lever against the pure-Python service.

    python bench/compiled.py /tmp/compiled             # copy, compile, check the copy imports compiled modules
    python bench/compiled.py /tmp/compiled --test      # and run the unit tests against the compiled modules
    python bench/stages.py --repo /tmp/compiled
    python bench/bench.py --repo . /tmp/compiled

The service itself stays pure Python (the README's Performance section has
the figures, and why). The copy holds the checkout's files as they
are on disk (tracked and untracked, not ignored), with a C extension next to
each compiled module's source; Python imports the extension first. It needs
the dev extra's mypy (which brings mypyc), a C compiler and the Python
headers.

``MODULES`` are the ones that compile and pass the unit tests as they are: the
pure core's per-event path, the store, frames, the source stage and the
collector. Not in it: ``core/aggregates.py`` (a mixin is multiple inheritance,
which mypyc refuses, and it mishandles the dataclass's ``ClassVar``) and the
runtime tasks (``tasks/base.py`` subclasses ``RuntimeError`` and its
``NamedTuple`` fails to import compiled); nor anything a test subclasses or
patches: mypyc's classes take no interpreted subclasses and no new attributes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODULES = [
    "service/core/closing.py",
    "service/core/extract.py",
    "service/core/processor.py",
    "service/core/source.py",
    "service/core/watermarks.py",
    "service/core/windows/base.py",
    "service/core/windows/fixed.py",
    "service/core/windows/session.py",
    "service/core/windows/with_rules.py",
    "service/runtime/collector.py",
    "service/runtime/frames.py",
    "service/state/memory.py",
    "service/state/store.py",
]

#: Run in the copy as ``python -c SETUP build_ext --inplace MODULE...``.
SETUP = """
import sys
from mypyc.build import mypycify
from setuptools import setup
modules = sys.argv[3:]
del sys.argv[3:]
# pyproject.toml's mypy settings apply; its overrides for optional libraries are unused here.
setup(name="sessionizer-compiled", ext_modules=mypycify(["--no-warn-unused-configs", *modules], opt_level="3"))
"""


def files(repo: Path) -> list[str]:
    """The checkout's files as on disk: tracked ones and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=repo, check=True, capture_output=True
    ).stdout
    return [name for name in listed.decode().split("\0") if name and (repo / name).is_file()]


def copy(repo: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    for name in files(repo):
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)


def compile_modules(out: Path, modules: list[str]) -> None:
    try:
        import mypyc  # noqa: F401
    except ImportError:
        raise SystemExit("compiled.py: mypyc is missing: install the dev extra (pip install -e '.[dev]'), which brings mypy") from None
    done = subprocess.run(
        [sys.executable, "-c", SETUP, "build_ext", "--inplace", *modules], cwd=out, capture_output=True, text=True
    )
    if done.returncode != 0:
        errors = [line for line in (done.stdout + done.stderr).splitlines() if "error" in line.lower()]
        raise SystemExit("compiled.py: mypyc failed:\n" + "\n".join(errors[-20:] or (done.stdout + done.stderr).splitlines()[-20:]))


def check_compiled(out: Path, modules: list[str]) -> None:
    """Each module imports from its extension in the copy, not from source."""
    names = [module.removesuffix(".py").replace("/", ".") for module in modules]
    probe = "import importlib, sys\nfor name in sys.argv[1:]:\n    print(name, importlib.import_module(name).__file__)"
    found = subprocess.run([sys.executable, "-c", probe, *names], cwd=out, check=True, capture_output=True, text=True).stdout
    pure = [line for line in found.splitlines() if not line.endswith(".so")]
    if pure:
        raise SystemExit("compiled.py: imported from source, not compiled:\n" + "\n".join(pure))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="where the compiled copy goes (replaced if it exists)")
    parser.add_argument("--test", action="store_true", help="run the unit tests in the copy, against the compiled modules")
    args = parser.parse_args()
    out = args.out.resolve()
    if out == REPO or REPO in out.parents:
        raise SystemExit("compiled.py: the copy must go outside the checkout")
    copy(REPO, out)
    compile_modules(out, MODULES)
    check_compiled(out, MODULES)
    print(f"{len(MODULES)} modules compiled in {out}")
    print(f"  {sys.executable} bench/stages.py --repo {out}")
    print(f"  {sys.executable} bench/bench.py --repo {REPO} {out}")
    if args.test:
        tests = subprocess.run([sys.executable, "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider"], cwd=out)
        raise SystemExit(tests.returncode)


if __name__ == "__main__":
    main()
