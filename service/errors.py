"""Every exception sessionizer raises, in one hierarchy rooted at ``SessionizerError``.

The command line maps each kind to an exit code (``exit_code``), so an
operator sees one line and a meaningful status instead of a traceback.
Nothing here imports Kafka or RocksDB: every layer may raise these.
"""

from __future__ import annotations


class SessionizerError(Exception):
    """Base class. ``exit_code`` is what the command line returns for it."""

    exit_code = 1


class ConfigError(SessionizerError):
    """The configuration is invalid; raised with every problem found, one per line."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:  # one problem, one line
            super().__init__(f"invalid configuration: {problems[0]}")
        else:
            super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class UsageError(SessionizerError):
    """A command was called with arguments it cannot use (a missing file, an unknown topic)."""

    exit_code = 2


class BadRecord(SessionizerError):
    """A record that cannot be used: the message says why, and the record goes to the dead-letter topic.

    Not a failure of the service: it is caught per record and never ends a run.
    ``code`` is one of the fixed dead-letter reasons of ``service.core.reasons``
    (``"other"`` when the raiser gives none, as a custom aggregate may).
    """

    def __init__(self, message: str, code: str = "other") -> None:
        super().__init__(message)
        self.code = code


class BrokerError(SessionizerError):
    """The broker or a client reported a fatal error: this process cannot go on, a restart can."""

    exit_code = 3


class RegistryUnavailable(SessionizerError):
    """The schema registry did not answer, or answered with an error that is not "no such schema".

    Not bad input: a record whose schema cannot be fetched now waits (its partition
    paused, retried with a backoff) and is never dead-lettered for it.
    """

    exit_code = 3


class Fenced(SessionizerError):
    """Another live process with this instance id took over its transactional id: this one steps down.

    Two processes with one instance id is a deployment mistake (a pod
    rescheduled while the old one is frozen, not dead). The one whose producer
    is fenced while the other is in the consumer group stops, so the newer one
    is never fenced back.
    """

    exit_code = 4


class ConsumerFenced(SessionizerError):
    """The group coordinator fenced this process's consumer: a member with its ``group.instance.id`` joined.

    Either another process with this instance id (then its producer is
    fenced too, and this one steps down with ``Fenced``), or librdkafka's own
    rejoin after its session timed out through a broker outage (librdkafka
    issue #3437). A fenced consumer cannot be used again: the loop is closed
    and started afresh, in the same process.
    """


class CommitFailed(SessionizerError):
    """A commit did not happen: under exactly-once nothing of its transaction is visible.

    The stream loop aborts, rewinds to the last commit and carries on.
    """


class DeliveryFailed(CommitFailed):
    """At-least-once: records could not be written, so offsets must not be committed."""


class CallTimedOut(CommitFailed):
    """A librdkafka call did not return within its deadline (the producer is then replaced)."""


class RestoreFailed(SessionizerError):
    """A store could not be restored from its changelog."""

    exit_code = 3


class OperationRefused(SessionizerError):
    """A maintenance command (``reset``, ``restore-state``) refused to act; the message says why."""


class ServiceStopping(SessionizerError):
    """The stream loop has stopped and answers no more queries."""


class LayoutChanged(SessionizerError):
    """A source of a direct pipeline gained partitions while the service ran: its keys moved.

    The loop stops before processing a record of a key whose state lives in
    another partition; start-up then plans the pipeline again (through its
    repartition topic, ``service.core.topology``).
    """
