"""A standby task: a warm copy of another instance's store, kept by tailing its changelog.

It is not a ``Task``: it processes no records, commits nothing and writes
nothing to Kafka. Its one input is the changelog, which the changelog reader
applies to its store (``ChangelogReader.follow``), read committed, so the copy
only ever holds committed state, checkpointed with each batch like a
restoring store. When its partition is assigned here, the task creator takes
its open store for the new active task, which then restores only the tail
after the copy's checkpoint (Kafka Streams' ``StandbyTask``).
"""

from __future__ import annotations

from service.runtime.ids import TaskId
from service.runtime.state_manager import StateManager


class StandbyTask:
    def __init__(self, state: StateManager) -> None:
        self.state_manager = state
        self.task_id = TaskId(state.pipeline.name, state.partition)
        self.closed = False

    def hand_over(self) -> StateManager:
        """Give the open store to the active task that takes this partition; this copy ends."""
        self.closed = True
        return self.state_manager

    def close(self) -> None:
        """Close the copy's store; its files stay, checkpointed, for a later tail restore."""
        if not self.closed:
            self.closed = True
            self.state_manager.close()
