"""Instructions per event of the window stage, counted by valgrind: a measure that does not move between runs.

    python bench/instructions.py                      # this checkout
    python bench/instructions.py --repo OTHER         # another checkout (a worktree of an older commit)
    python bench/instructions.py --commit-every 40000 # commits further apart (the catch-up pace)

``bench/stages.py`` times the window stage to a few percent at best on a
shared machine, which hides a change of 1 or 2%. This runs the same stage
(the same events, pipeline and commits) in a child process under
``valgrind --tool=callgrind`` twice, once stopping before the stage, with
hash randomization off, and prints the difference in the main thread's
instructions per event. Instructions are not time (cache misses and
RocksDB's background threads are not in them), so confirm a change that
counts fewer with the timings too. Needs valgrind; about a minute.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import stages  # noqa: E402


def child(repo: Path, count: int, commit_every: int, stage: bool) -> None:
    """Build the stage's input; with ``stage``, run it."""
    sys.path.insert(0, str(repo))
    import orjson

    config_module = stages.module("service.config")
    pipeline_module = stages.module("service.core.pipeline", "service.pipeline")
    processor_module = stages.module("service.core.processor", "service.processor")
    store_module = stages.module("service.state.store", "service.store")
    problems: list[str] = []
    pipeline = pipeline_module.Pipeline(config_module.parse_config(tomllib.loads(stages.PIPELINE), problems).pipelines[0])
    raws = stages.events(count)
    keyed = [(pipeline.extract(event, None), event, raw) for event, raw in ((orjson.loads(raw), raw) for raw in raws)]
    if stage:
        stages.run_window_stage(store_module, processor_module, pipeline, keyed, commit_every)


def count(args: argparse.Namespace, stage: bool) -> int:
    """The main thread's instructions in a child that builds the input (and runs the stage)."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "callgrind.out"
        command = [
            "valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}.%p",
            sys.executable, __file__, "--child", "stage" if stage else "setup",
            "--repo", str(args.repo), "--events", str(args.events), "--commit-every", str(args.commit_every),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        [main_thread] = Path(directory).glob("callgrind.out.*-01")
        for line in main_thread.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no summary")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=HERE.parent, help="the checkout whose service/ is counted")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--commit-every", type=int, default=stages.COMMIT_EVERY, help="events between commits")
    parser.add_argument("--child", choices=["setup", "stage"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.repo.resolve(), args.events, args.commit_every, args.child == "stage")
        return
    args.repo = args.repo.resolve()
    per_event = (count(args, stage=True) - count(args, stage=False)) / args.events
    print(f"window stage, {args.events:,} events, a commit every {args.commit_every:,}, {args.repo}: {per_event:,.0f} instructions/event")


if __name__ == "__main__":
    main()
