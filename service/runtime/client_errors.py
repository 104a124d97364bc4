"""What librdkafka reports through its error callback, for every client of the process.

librdkafka retries on its own when a broker does not answer, and reports each
failed attempt through ``error_cb``: a connection refused every second. They
are logged as one structured line per kind of error and client, at most every
``interval`` seconds, naming the broker and the reason. The last error is kept
(``/readyz`` says why the service is not ready), and so is the first fatal
one: a client that cannot go on (an authentication failure, a fatal producer
error) stops start-up and the loop with one line instead of a retry forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from confluent_kafka import KafkaError

log = structlog.get_logger("sessionizer.kafka")

#: Errors that retrying cannot mend: wrong credentials or a security setup the broker refuses.
FATAL_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


class ClientErrors:
    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        #: The last error any client reported, and the first that no retry will mend.
        self.last: KafkaError | None = None
        self.fatal: KafkaError | None = None
        #: How many errors all clients have reported: one more means a broker may have been away.
        self.count = 0
        self._logged: dict[tuple[str, int], float] = {}

    def callback(self, client: str) -> Callable[[KafkaError], None]:
        """An ``error_cb`` for one client (librdkafka calls it from the thread polling the client)."""

        def error_cb(error: KafkaError) -> None:
            self.report(client, error)

        return error_cb

    def report(self, client: str, error: KafkaError) -> None:
        self.last = error
        self.count += 1
        fatal = error.fatal() or error.code() in FATAL_CODES
        if fatal and self.fatal is None:
            self.fatal = error
        now = self._clock()
        key = (client, error.code())
        if not fatal and now - self._logged.get(key, -self.interval) < self.interval:
            return
        self._logged[key] = now
        log.error("kafka client error", client=client, code=error.name(), reason=error.str(), fatal=fatal)

    def clear(self) -> None:
        """Forget the last (transient) error, once the broker answered."""
        self.last = None


#: The process's clients all report here (``service.runtime.clients``).
CLIENT_ERRORS = ClientErrors()
