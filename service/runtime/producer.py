"""The transactional producer: one per process, owning the transaction and its failures.

As Kafka Streams' ``StreamsProducer``, this is the only code that calls
librdkafka's transactional API. Under exactly-once it keeps one transaction
open between commits, commits it with the consumed offsets, aborts it, and
replaces a producer that can no longer do either (fenced, hung in a call, an
abort that keeps timing out), unless another live process with this instance
id fenced it: then this process steps down. Under at-least-once it flushes and
checks every delivery instead.

What goes into the transaction is the ``RecordCollector``'s business
(``service.runtime.collector``); both produce through ``produce``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from service.errors import CallTimedOut, CommitFailed, DeliveryFailed, Fenced

log = structlog.get_logger("sessionizer.producer")

#: What a producer reports when a newer one with its transactional id (or the
#: coordinator, on a transaction that outlived ``transaction.timeout.ms``) bumped the epoch.
FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


def _within(call: Callable[[], None], deadline: float) -> None:
    """Run a blocking librdkafka call in a worker thread, giving up after ``deadline`` seconds.

    librdkafka's send_offsets_to_transaction can ignore its timeout and block
    for good when the group coordinator drops out of the metadata, as during a
    broker restart (librdkafka issues #5456 and #5511). The poll loop must not
    hang with it: on ``CallTimedOut`` the producer is abandoned and replaced.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, name="sessionizer-commit", daemon=True)
    worker.start()
    worker.join(deadline)
    if not outcome:
        raise CallTimedOut()
    if outcome[0] is not None:
        raise outcome[0]


#: An abort that times out this many times in a row is given up with its producer.
ABORT_TIMEOUTS = 2


def _retrying(call: Callable[[], object], attempts: int = 6) -> None:
    """Run a transactional call, again after a pause while it fails with a retriable error."""
    for attempt in range(attempts):
        try:
            call()
            return
        except KafkaException as exc:
            error = exc.args[0]
            if attempt == attempts - 1 or not error.retriable() or error.fatal() or error.txn_requires_abort():
                raise
            log.warning("transactional call failed, retrying", error=str(error))
            time.sleep(min(2.0, 0.1 * 2**attempt))


#: A delivery report callback, as librdkafka calls it.
OnDelivery = Callable[[KafkaError | None, Message], None]


class TransactionalProducer:
    """One producer and its transaction (exactly-once), or its flushes (at-least-once).

    ``make_producer`` makes a librdkafka producer (again, to replace one).
    ``successor`` says which other live process holds this instance id, if
    any ("" or None: none): asked when the producer is fenced.
    """

    def __init__(
        self,
        make_producer: Callable[[], Producer],
        exactly_once: bool,
        successor: Callable[[], str | None] | None = None,
    ) -> None:
        self._make_producer = make_producer
        self.producer = make_producer()
        self.exactly_once = exactly_once
        self._successor = successor
        self._errors: list[KafkaError] = []
        #: Under at-least-once, the callback that checks each record's delivery; under
        #: exactly-once a failed record fails the commit itself, so none is needed.
        self.checked: OnDelivery | None = None if exactly_once else self._checked
        self._stuck = False
        #: The last commit failed in a way that leaves its outcome unknown (a call
        #: that hung or timed out): once the producer is fenced it is decided, and
        #: state must be read back from the changelogs, not assumed rolled back.
        self.uncertain = False
        #: The fatal error the last commit met: the producer cannot even abort, it is replaced.
        self._fatal: KafkaError | None = None
        #: True once this process stepped down: its producer is never used again.
        self.stepped_down = False

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int = -1,
        on_delivery: OnDelivery | None = None,
        headers: Any = None,
    ) -> None:
        """Produce one record, waiting for queue space when librdkafka's buffer is full."""
        while True:
            try:
                if headers:
                    self.producer.produce(topic, value, key, partition, on_delivery, headers=list(headers))
                else:
                    self.producer.produce(topic, value, key, partition, on_delivery)
                return
            except BufferError:
                self.producer.poll(0.05)

    def poll(self) -> None:
        self.producer.poll(0)

    def failed(self, error: KafkaError) -> None:
        """A record was not delivered: the next at-least-once commit fails."""
        self._errors.append(error)

    # -- transactions ---------------------------------------------------------

    def init(self, timeout: float = 60.0) -> None:
        """Under exactly-once: fence any previous incarnation of this instance, open a transaction."""
        if self.exactly_once:
            _retrying(lambda: self.producer.init_transactions(timeout))
            self.producer.begin_transaction()

    def commit(self, offsets: list[TopicPartition], group_metadata: Any, timeout: float = 10.0) -> None:
        """Make everything sent since the last commit visible, with the consumed offsets.

        Raises ``CommitFailed`` when the transaction did not commit (the caller
        then calls ``abort`` and rewinds) and ``DeliveryFailed`` when an
        at-least-once record was lost.

        Offsets are sent once, with a short timeout, and a failure gives up the
        transaction: the group coordinator refuses offsets while the group
        rebalances, and the rebalance cannot finish while this thread waits
        instead of polling. ``commit_transaction`` is retried on retriable
        errors, as librdkafka requires.
        """
        if self.stepped_down:
            raise CommitFailed("this process was fenced by another with its instance id")
        if not self.exactly_once:
            # librdkafka retries until message.timeout.ms, then reports the
            # record as failed: either way flush returns in the end.
            while self.producer.flush(5.0):
                log.warning("waiting for records to be delivered", queued=len(self.producer))
            self._raise_delivery_errors()
            return
        producer = self.producer

        def commit_transaction() -> None:
            if offsets:
                producer.send_offsets_to_transaction(offsets, group_metadata, timeout)
            _retrying(lambda: producer.commit_transaction(timeout))

        try:
            _within(commit_transaction, deadline=3 * timeout)
        except KafkaException as exc:
            error = exc.args[0]
            # Retries ran out on a timeout: the broker may have committed it all the same.
            self.uncertain = error.retriable()
            if error.fatal():
                # Aborting would fail too, or conflict with the commit still in progress.
                self._fatal = error
            raise CommitFailed(str(error)) from None
        except CallTimedOut:
            self._stuck = True
            self.uncertain = True
            raise CommitFailed("transactional call overran its timeout") from None
        self.producer.begin_transaction()

    def abort(self, timeout: float = 30.0) -> None:
        """Drop everything sent since the last commit and open a new transaction.

        A producer in a fatal state cannot abort: it is replaced, and the new
        one's ``init_transactions`` aborts what the old one left open. Except
        when it was fenced by another live process with this instance id:
        replacing it would fence that one in turn, and the two would take the
        transactional id from each other at every commit. Then ``Fenced`` is
        raised and this process stops.
        """
        self._errors.clear()
        if not self.exactly_once or self.stepped_down:
            return
        if self._stuck:
            self._replace_producer(KafkaError(KafkaError._TIMED_OUT, "a transactional call hung"))
            return
        if self._fatal is not None:
            error, self._fatal = self._fatal, None
            self._replace_or_step_down(error)
            return
        deadline = time.monotonic() + 300
        timeouts = 0
        while True:
            try:
                _within(partial(self.producer.abort_transaction, timeout), deadline=timeout + 5)
                break
            except CallTimedOut:
                self._replace_producer(KafkaError(KafkaError._TIMED_OUT, "abort_transaction hung"))
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal():
                    self._replace_or_step_down(error)
                    return
                if error.code() == KafkaError._TIMED_OUT:
                    timeouts += 1
                    if timeouts >= ABORT_TIMEOUTS:
                        # After a broker restart librdkafka can keep the abort queued for
                        # a coordinator connection it never makes again (seen for minutes
                        # here; librdkafka issue #3779 reports ten).
                        # A new producer looks the coordinator up afresh, and its
                        # init_transactions aborts what this one left open.
                        self._replace_producer(error)
                        return
                if not error.retriable() or time.monotonic() > deadline:
                    raise
                log.warning("abort failed, retrying", error=str(error))
                time.sleep(1.0)
        self.producer.begin_transaction()

    def _replace_or_step_down(self, error: KafkaError) -> None:
        """Replace a producer that hit a fatal error, unless another live process with this instance id fenced it."""
        if error.code() in FENCED_CODES and self._successor is not None:
            other = self._successor()
            if other:
                self.stepped_down = True
                log.error("fenced by another process with this instance id; stepping down", other=other, error=str(error))
                raise Fenced(
                    f"another process with this instance id ({other}) took over its transactional id; "
                    "this one was fenced and stops (give each instance its own instance_id)"
                )
        self._replace_producer(error)

    def _replace_producer(self, error: KafkaError) -> None:
        """A new producer with the same transactional id fences the old one and aborts its transaction."""
        log.warning("producer failed, replacing it", error=str(error))
        self.producer = self._make_producer()
        self._stuck = False
        self.init()

    def close(self, timeout: float = 30.0) -> None:
        if self.stepped_down:
            # A fenced producer can deliver nothing: drop what it holds instead of waiting on it.
            # Its flush raises, and confluent-kafka raises a SystemError instead when the purged
            # records' reports are served with that error pending. The process is stopping
            # because of the fence; neither may take the place of that reason.
            with contextlib.suppress(KafkaException, SystemError):
                self.producer.purge()
                self.producer.flush(min(timeout, 5.0))
            return
        if self.exactly_once:
            with contextlib.suppress(KafkaException):  # nothing open, or the producer is fenced: nothing to drop
                self.producer.abort_transaction(timeout)
        self.producer.flush(timeout)

    # -- delivery reports -------------------------------------------------------

    def _checked(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(error)

    def _raise_delivery_errors(self) -> None:
        if self._errors:
            first = self._errors[0]
            count = len(self._errors)
            self._errors.clear()
            raise DeliveryFailed(f"{count} records failed: {first}")
