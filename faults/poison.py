"""Bad input: a corpus of poison messages sent to running consumers, and hypothesis fuzzing
of the message parsers and of the publish API.

A consumer acknowledges and ignores a message that is not an envelope or control request
(BROKER-006); the parsers raise their named error and nothing else; ``publish`` refuses bad
options with a named error (a ``ConveyorError``), never a raw exception.
"""

from __future__ import annotations

import json
import math
import reprlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor import Conveyor
from conveyor.broker.body import json_document
from conveyor.broker.control import ControlRequest, InvalidControl
from conveyor.broker.envelope import Envelope, InvalidEnvelope
from conveyor.errors import ConveyorError

from ledger import Tally
from scenarios import Context, Outcome, finish, open_world, scenario

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def envelope_corpus(valid: dict[str, Any]) -> list[bytes]:
    """Bodies that must be acknowledged and ignored on a job queue."""

    def variant(**changes: Any) -> bytes:
        return json.dumps({**valid, **changes}).encode()

    return [
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"null",
        b"[]",
        b"{}",
        b"1" * 5000,  # an integer longer than Python converts by default
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        json.dumps({"huge": "x" * 4_000_000}).encode(),
        variant(published_at="2026-13-45T25:61:61.000Z"),
        variant(published_at="0000-01-01T00:00:00.000Z"),
        variant(published_at="9999-12-31T23:59:59.999Z"),
        variant(published_at=12),
        variant(job_id="9\n"),
        variant(job_id=9),
        variant(job_id="x" * 10_000),
        variant(job_id="00000000000000000000000000"),  # well formed, no such job
        variant(specversion="9.9"),
        variant(specversion="0.999999999999999999999"),
        variant(priority="high"),
        variant(priority=1e308),
        variant(priority=2**80),
        variant(queue=None),
        variant(extra={"nested": [[[[[]]]]]}),
        json.dumps({k: v for k, v in valid.items() if k != "job_id"}).encode(),
        json.dumps([valid]).encode(),
        b'{"job_id": "\\ud800"}',
    ]


def control_corpus() -> list[bytes]:
    good = ControlRequest("reload", NOW).to_dict()
    return [
        b"",
        b"garbage",
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({**good, "command": "explode"}).encode(),
        json.dumps({**good, "command": 7}).encode(),
        json.dumps({**good, "requested_at": "2026-02-30T00:00:00.000Z"}).encode(),
        json.dumps({**good, "requested_at": None}).encode(),
        json.dumps({"command": "reload"}).encode(),
        json.dumps({"x": "y" * 3_000_000}).encode(),
    ]


def queue_depth(amqp_url: str, name: str) -> int:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        declared = connection.channel().queue_declare(name, passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


def send(amqp_url: str, name: str, bodies: list[bytes]) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for body in bodies:
            channel.basic_publish("", name, body)
    finally:
        connection.close()


def poisoned(ctx: Context, name: str, interleaved: bool) -> Outcome:
    """Poison on the job queues and the control queue of two consumers; they ack, ignore,
    keep running, and run the jobs published after (``interleaved``: while the poison is
    still being consumed). The repair loop's stale_after is 5 s here: a wake-up lost by
    idle consumers (see broker-idle-then-burst) costs seconds, not the check of the poison."""
    with open_world(ctx, name, "sqlite", broker=True, stale_after=5.0) as w:
        for _ in range(2):
            w.start_worker("w")
        w.publish(5)
        w.drain(30)
        mode = w.app.broker
        assert mode is not None
        assert w.amqp_url is not None
        amqp_url = w.amqp_url
        valid = Envelope.of(w.app.jobs(limit=1)[0], NOW).to_dict()
        job_queues = [mode.topology.queue_name("default", band) for band in mode.bands().starts]
        bodies = envelope_corpus(valid)
        for queue in job_queues:
            send(amqp_url, queue, bodies)
        control = mode.topology.control_name("default")
        controls = control_corpus()
        send(amqp_url, control, controls)
        sent = len(bodies) * len(job_queues) + len(controls)
        queues = [*job_queues, control]
        if not interleaved:
            w.wait_until(lambda: sum(queue_depth(amqp_url, q) for q in queues) == 0, 30)
        w.publish(30, start=5)
        outcome = finish(w)
        left = sum(queue_depth(amqp_url, queue) for queue in queues)
        outcome.notes.append(f"{sent} poison messages, {left} left in the queues")
        if left:
            outcome.problems.append(f"{left} poison messages were not acknowledged")
        return outcome


@scenario("poison-corpus", needs=("rabbitmq",))
def poison_corpus(ctx: Context) -> Outcome:
    return poisoned(ctx, "poison-corpus", interleaved=False)


@scenario("poison-corpus-interleaved", needs=("rabbitmq",))
def poison_interleaved(ctx: Context) -> Outcome:
    return poisoned(ctx, "poison-corpus-interleaved", interleaved=True)


def parsers_survive(examples: int) -> tuple[int, list[str]]:
    """Fuzz the envelope, control and body parsers; every failure must be their named error."""
    failures: list[str] = []
    count = [0]
    valid = Envelope("0" * 26, "default", 100, NOW).to_dict()
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    documents = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=12,
    )
    mutated = st.fixed_dictionaries(
        {},
        optional={key: documents | st.just(value) for key, value in valid.items()},
    )
    bodies = (
        st.binary(max_size=200)
        | documents.map(lambda d: json.dumps(d).encode())
        | mutated.map(lambda d: json.dumps(d).encode())
        | st.text(max_size=60).map(lambda t: json.dumps({**valid, "published_at": t}).encode())
        | st.integers(1, 3000).map(lambda depth: b"[" * depth * 40 + b"]" * depth * 40)
    )

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(bodies)
    def check(body: bytes) -> None:
        count[0] += 1
        for parse, named in (
            (Envelope.parse, InvalidEnvelope),
            (ControlRequest.parse, InvalidControl),
            (lambda b: json_document(b, InvalidEnvelope), InvalidEnvelope),
        ):
            try:
                parse(body)
            except named:
                pass
            except Exception as error:
                failures.append(f"{type(error).__name__} on {reprlib.repr(body)}")

    check()
    return count[0], failures


def publish_survives(examples: int) -> tuple[int, int, list[str]]:
    """Fuzz ``publish`` on an in-memory app: a job or a named error, never a raw exception."""
    app = Conveyor("memory://")
    app.register("work", lambda **kwargs: None)
    failures: list[str] = []
    counts = [0, 0]
    odd = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**80), max_value=2**80)
        | st.floats()
        | st.sampled_from([math.inf, -math.inf, math.nan, 1e12, -1.0])
        | st.text(max_size=20)
        | st.sampled_from(["\ud800", "abc", "2026-01-01T00:00:00Z", "x" * 300, ""])
        | st.lists(st.text(max_size=5), max_size=3)
        | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
        | st.datetimes(timezones=st.just(UTC))
        | st.integers(1, 6000).map(Deep)
    )
    names = st.sampled_from(
        [
            "queue", "priority", "available_at", "delay", "serial_group", "identifier",
            "unique", "recurring", "depends_on", "tags", "metadata", "retry", "timeout",
            "batch_id", "no_such_option",
        ]
    )  # fmt: skip
    options = st.dictionaries(names, odd, max_size=3)
    payloads = odd | st.dictionaries(st.text(max_size=8), odd, max_size=3)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(["work", "", "nope", "x" * 500]), payloads, options)
    def check(kind: str, payload: Any, chosen: dict[str, Any]) -> None:
        payload = materialised(payload)
        chosen = {name: materialised(value) for name, value in chosen.items()}
        try:
            app.publish(kind, payload, **chosen)
            counts[0] += 1
        except ConveyorError:
            counts[1] += 1
        except Exception as error:
            failures.append(f"{type(error).__name__}: {str(error)[:80]} for {chosen!r:.120}")

    try:
        check()
    finally:
        app.close()
    return counts[0], counts[1], failures


@dataclass(frozen=True)
class Deep:
    """A list nested ``depth`` deep, built only inside the test: hypothesis prints its
    examples with a recursive printer that a 6,000-deep list would overflow."""

    depth: int


def materialised(value: Any) -> Any:
    if isinstance(value, Deep):
        nested: Any = 1
        for _ in range(value.depth):
            nested = [nested]
        return nested
    if isinstance(value, dict):
        return {key: materialised(item) for key, item in value.items()}
    return value


@scenario("fuzz-parsers", short=True)
def fuzz_parsers(ctx: Context) -> Outcome:
    examples = 300 if ctx.short else 3000
    started = time.monotonic()
    count, failures = parsers_survive(examples)
    result = Tally(published=count, executed=count - len(failures), crashes=len(failures))
    outcome = Outcome(result, [f"{count} bodies x 3 parsers in {time.monotonic() - started:.1f} s"])
    outcome.problems.extend(failures[:5])
    return outcome


@scenario("fuzz-publish", short=True)
def fuzz_publish(ctx: Context) -> Outcome:
    examples = 300 if ctx.short else 3000
    accepted, refused, failures = publish_survives(examples)
    total = accepted + refused + len(failures)
    result = Tally(published=total, executed=accepted + refused, crashes=len(failures))
    outcome = Outcome(result, [f"{accepted} accepted, {refused} refused with a named error"])
    outcome.problems.extend(failures[:5])
    return outcome
