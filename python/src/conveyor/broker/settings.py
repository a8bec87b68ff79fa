"""Settings of broker mode, with the defaults the documentation describes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

# `conveyor consume` exits with this code after `conveyor reload-consumers` asked it to stop,
# so that a supervisor can tell a requested reload from a crash (both are restarted).
RELOAD_EXIT_CODE = 3

# Messages prefetched beyond the worker's concurrency, at least (see BrokerSettings.prefetch):
# the adaptive batch's bound (worker.AUTO_BATCH_LIMIT, which broker/ does not import), so that
# one claim can take a whole adaptive batch while a backlog waits.
AUTO_PREFETCH = 100


def _quorum() -> dict[str, Any]:
    return {"x-queue-type": "quorum"}


@dataclass(frozen=True)
class BrokerSettings:
    """How Conveyor uses RabbitMQ. Every field has a production default.

    - ``prefix``: AMQP queue names are ``<prefix><queue>.p<priority>`` (and
      ``<prefix><queue>.control`` for reload requests).
    - ``queue_arguments``: arguments of the job queues, declared idempotently (durable quorum
      queues by default). Changing them for an existing queue needs the queue deleted first:
      RabbitMQ refuses a declaration that differs.
    - ``confirm_timeout``: seconds to wait for publisher confirms; a message not confirmed in
      time counts as not handed over (the job becomes ``broker_failed``).
    - ``connect_timeout``: seconds to wait for a TCP connection and the AMQP handshake.
    - ``heartbeat``: AMQP heartbeat of consumer connections, in seconds (a ``heartbeat=`` in the
      URL wins). Publisher connections use none: they detect a dead broker by the confirm
      timeout instead, so an idle web process is never disconnected for missed heartbeats.
    - ``prefetch``: messages a consumer may hold unacknowledged per queue it consumes; None
      (the default) sizes it from the worker: its concurrency plus the larger of its batch
      size and ``AUTO_PREFETCH``, so that one claim can take a whole batch, chosen in claim
      order among the messages in hand.
    - ``hand_back_after``: seconds after which a consumer whose slots are all busy returns the
      messages it prefetched and has not claimed, so that idle consumers take them.
    - ``stale_after``: a due, claimable job unchanged for this long may have lost its message;
      the repair loop hands it over again when the broker holds fewer messages than such jobs.
    - ``reload_ttl``: seconds a reload request waits in the control queue for a consumer.
    - ``publish_chunk``: messages published before waiting for their confirms.
    - ``repair_every``: seconds between runs of the repair loop inside the consumers (one
      consumer of the store runs it each time, chosen by a lock in the store), so that jobs
      published during an outage, retries, waiting and delayed jobs are handed over within
      seconds without a scheduled ``conveyor process``; None leaves it to that schedule.
    """

    prefix: str = "conveyor."
    queue_arguments: Mapping[str, Any] = field(default_factory=_quorum)
    confirm_timeout: float = 10.0
    connect_timeout: float = 5.0
    heartbeat: int = 30
    prefetch: int | None = None
    hand_back_after: float = 2.0
    stale_after: timedelta = timedelta(seconds=60)
    reload_ttl: float = 300.0
    publish_chunk: int = 1000
    repair_every: float | None = 5.0
