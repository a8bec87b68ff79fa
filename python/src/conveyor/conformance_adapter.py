"""The reference library behind the conformance harness protocol (conformance-tests/protocol).

Run ``python -m conveyor.conformance_adapter --backend sqlite`` and speak JSON lines to it: one
request per line on stdin, one response per line on stdout, logs on stderr. The conformance
suite starts it for every backend::

    conveyor-conformance run --adapter "python -m conveyor.conformance_adapter --backend memory"

Time comes only from a :class:`~conveyor.clock.ManualClock` the harness sets and advances.
Server backends (PostgreSQL, MariaDB) get tables with a prefix unique to this process, which
``reset`` empties and ``stop`` drops, so several runs can share one database.

Every handler ``reset`` registers follows the harness's script, for worker mode: ``run_worker``
runs the library's own worker over them (:mod:`conveyor.conformance_worker`).

Broker backends (``postgresql+rabbitmq``, ``sqlite+rabbitmq``) run the app in broker mode: every
committed change hands job ids to RabbitMQ, and ``claim`` is answered as a broker consumer
answers a message (:class:`BrokerClaims`). Their AMQP queues carry a prefix unique to this
process; ``reset`` purges them and ``stop`` deletes them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Any

from . import __version__, codec
from .app import Conveyor
from .broker.envelope import Envelope, InvalidEnvelope
from .broker.settings import BrokerSettings
from .clock import ManualClock, format_timestamp, parse_timestamp
from .conformance_http import TOKEN_VARIABLE, URL_VARIABLE, BindingServer
from .conformance_worker import Script, run_worker
from .errors import ConfigurationError, InvalidRequest, Refused
from .model import Batch, Job
from .priority import PriorityRange
from .publishing import Call, PublishOptions
from .retry import resolve
from .schedules import Schedule, Scheduler, make_schedule
from .specfiles import wire_version
from .wire import build_job, ms, publish_options

if TYPE_CHECKING:
    from .broker.mode import BrokerMode

log = logging.getLogger("conveyor.conformance")

PROTOCOL_VERSION = 1
STORES = ("memory", "sqlite", "postgresql", "mariadb")
BROKER = "rabbitmq"
BROKER_STORES = ("sqlite", "postgresql")
BACKENDS = (*STORES, *(f"{store}+{BROKER}" for store in BROKER_STORES))
SERVER_URLS = {
    "postgresql": (
        "CONVEYOR_TEST_POSTGRES_URL",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    ),
    "mariadb": ("CONVEYOR_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
BROKER_URL = ("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
QUEUE_EXPIRES_MS = 30 * 60 * 1000
FEATURES = [
    "serial_groups",
    "unique",
    "recurring",
    "dependencies",
    "multi_request",
    "batches",
    "tags",
    "timeouts",
    "results",
    "progress",
    "cron",
    "concurrency",
    "rate_limits",
    "cancel_running",
    "unique_keys",
]
CAPABILITIES = [
    "publish_bulk",
    "claim_by_id",
    "fire",
    "notifications",
    "priorities",
    "pause_queues",
    "worker",
]
OUTCOME_EVENTS = {
    "success": "succeed",
    "temporary": "fail_temporarily",
    "permanent": "fail_permanently",
    "waiting": "wait",
    "timeout": "fail_temporarily",  # TIMEOUT-002: with an error of kind timeout
    "cancelled": "confirm_cancel",  # CANCEL-003: the handler stopped at a cancel request
}

Json = dict[str, Any]


class Skip(Exception):
    """The adapter does not implement this request; answered with ``skipped``."""


class RecordingNotifier:
    """Keeps notifications until the harness asks for them."""

    def __init__(self) -> None:
        self.seen: list[Json] = []

    def notify(self, kind: str, job: Job) -> None:
        self.seen.append({"kind": kind, "job": job.id})


def publish_document(job: Json) -> Json:
    """A stored job dict (a batch's completion) back in the shape of a publish request."""
    document: Json = {
        "requests": [{"type": r["type"], "payload": r["payload"]} for r in job["requests"]],
        "queue": job["queue"],
        "priority": job["priority"],
        "retry_policy": job["retry_policy"],
    }
    for name in (
        "serial_group",
        "identifier",
        "recurring",
        "timeout_ms",
        "result_ttl_ms",
        "concurrency_key",
        "concurrency_limit",
        "rate_key",
        "rate_limit",
        "rate_period_ms",
    ):
        if job.get(name) is not None:
            document[name] = job[name]
    if job.get("unique"):
        document["unique"] = True
    if job.get("tags"):
        document["tags"] = job["tags"]
    if job.get("metadata"):
        document["metadata"] = job["metadata"]
    return document


class BrokerClaims:
    """Claims as a broker consumer makes them (spec.md#BROKER-011, #BROKER-007, #BROKER-010).

    The store stays the source of truth and RabbitMQ carries only job ids: the app hands over
    every job a committed change made claimable (BROKER-012, BROKER-009). A ``claim`` request
    is one consumer of the AMQP queues of its queues and priority bands. It takes messages best
    band first and answers each as ``conveyor consume`` does: a wake-up for the message's band,
    answered with the store's conditional claim of one job, and a new message for the message's
    job when the job it claimed travels through another AMQP queue or had no message of its own
    (BROKER-010). A ``claim`` naming a ``job`` is a consumer receiving that job's message: the
    store's claim of that job.

    Before each claim, the repair loop's hand-over of due jobs that may lack a message
    (BROKER-008) runs without a grace time, as a repair loop running between any two requests
    would: jobs that became due because the harness moved the clock have no message otherwise.
    The rest of the repair loop (rescuing leases, requeueing: BROKER-005) changes job states,
    which the protocol leaves to ``rescue`` and to the harness's own commands, so it does not run.

    Every publish waits for RabbitMQ's confirms and every claim is committed before the answer,
    so nothing is in flight between requests and ``barrier`` has nothing to wait for.
    """

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.names: set[str] = set()  # every AMQP queue this process may have declared
        self._connection: Any = None
        self._channel: Any = None
        self._declared: set[str] = set()

    def _open(self, mode: BrokerMode) -> Any:
        if self._channel is None or not self._channel.is_open:
            self._disconnect()
            from .broker.amqp import AmqpBroker

            broker = mode.broker
            assert isinstance(broker, AmqpBroker), "the +rabbitmq backends use RabbitMQ"
            self._connection = broker.connect(heartbeat=0, name="conveyor conformance")
            self._channel = self._connection.channel()
            self._declared.clear()
        return self._channel

    def _declare(self, mode: BrokerMode, name: str) -> None:
        if name not in self._declared:
            self._open(mode).queue_declare(
                name, durable=True, arguments=dict(self.settings.queue_arguments)
            )
            self._declared.add(name)
            self.names.add(name)

    def claim(
        self,
        app: Conveyor,
        worker_id: str,
        queues: tuple[str, ...],
        span: PriorityRange,
        limit: int,
        lease_ms: int,
    ) -> list[Job]:
        from .broker.mode import RepairReport

        mode = app.broker
        assert mode is not None
        mode._top_up(RepairReport(), timedelta(0))
        self.names |= mode.broker.declared
        buckets = sorted(mode.buckets(queues, span), key=lambda bucket: (bucket[2], bucket[0]))
        for name, _, _ in buckets:
            self._declare(mode, name)
        channel = self._open(mode)
        claimed: list[Job] = []
        while len(claimed) < limit:
            message = self._next(channel, buckets)
            if message is None:
                break
            name, band, tag, body = message
            try:
                envelope = Envelope.parse(body)
            except InvalidEnvelope:  # BROKER-006: acknowledged and otherwise ignored
                channel.basic_ack(tag)
                continue
            outcome = app.claim_outcome(
                worker_id,
                queues=queues,
                priorities=mode.bands().claim_span(band, span),
                limit=1,
                lease_ms=lease_ms,
            )
            claimed.extend(outcome.jobs)
            if mode.messages_owed(name, {envelope.job_id}, outcome.jobs, outcome.claimed_from):
                # BROKER-007, BROKER-010: the message's own job keeps a message.
                again = [(name, envelope.again(app.now()))]
                if mode.broker.publish_routed(again):
                    channel.basic_nack(tag, requeue=True)
                    break
            channel.basic_ack(tag)
        return claimed

    @staticmethod
    def _next(
        channel: Any, buckets: list[tuple[str, str, int]]
    ) -> tuple[str, int, int, bytes] | None:
        """The next message of the best band that has one: (AMQP queue, band, tag, body)."""
        for name, _, band in buckets:
            method, _, body = channel.basic_get(name, auto_ack=False)
            if method is not None:
                return name, band, method.delivery_tag, body
        return None

    def purge(self, mode: BrokerMode | None) -> None:
        """Empty every AMQP queue of this process (``reset``)."""
        if mode is not None:
            self.names |= mode.broker.declared
        if not self.names or mode is None:
            return
        channel = self._open(mode)
        for name in sorted(self.names):
            channel.queue_purge(name)

    def delete(self, mode: BrokerMode | None) -> None:
        """Delete every AMQP queue of this process (``stop``)."""
        if mode is not None:
            self.names |= mode.broker.declared
        try:
            if self.names and mode is not None:
                channel = self._open(mode)
                for name in sorted(self.names):
                    channel.queue_delete(name)
        finally:
            self._disconnect()

    def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:
                log.debug("closing the consumer connection failed", exc_info=True)


@dataclass
class Session:
    """One adapter process: its backend, its clock and the app rebuilt by every ``reset``."""

    backend: str
    url: str
    table_prefix: str
    clock: ManualClock = field(default_factory=ManualClock)
    notifier: RecordingNotifier = field(default_factory=RecordingNotifier)
    script: Script = field(default_factory=Script)
    rng: random.Random = field(default_factory=random.Random)
    app: Conveyor | None = None
    temporary: str | None = None
    broker_url: str | None = None
    broker_settings: BrokerSettings | None = None
    broker_claims: BrokerClaims | None = None
    http: BindingServer | None = None  # HTTP mode: conveyor web on this app (conformance_http)

    @classmethod
    def open(cls, backend: str, url: str | None, broker_url: str | None = None) -> Session:
        store, _, broker = backend.partition("+")
        temporary = None
        if url is None:
            if store == "memory":
                url = "memory://"
            elif store == "sqlite":
                temporary = tempfile.mkdtemp(prefix="conveyor-conformance-")
                url = f"sqlite:///{temporary}/conveyor.db?synchronous=OFF"
            else:
                variable, default = SERVER_URLS[store]
                url = os.environ.get(variable, default)
        token = secrets.token_hex(3)
        prefix = f"cf{os.getpid()}_{token}_"
        session = cls(backend=backend, url=url, table_prefix=prefix, temporary=temporary)
        if broker:
            variable, default = BROKER_URL
            session.broker_url = broker_url or os.environ.get(variable, default)
            settings = BrokerSettings(
                prefix=f"conveyor-conformance.{os.getpid()}.{token}.",
                # The production queues, which RabbitMQ also deletes once unused for a while
                # when a killed adapter could not delete them itself.
                queue_arguments={"x-queue-type": "quorum", "x-expires": QUEUE_EXPIRES_MS},
                confirm_timeout=10.0,
                connect_timeout=5.0,
            )
            session.broker_settings = settings
            session.broker_claims = BrokerClaims(settings)
        return session

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def conveyor(self) -> Conveyor:
        if self.app is None:
            raise InvalidRequest("send reset before any other command")
        return self.app

    @property
    def store_backend(self) -> str:
        return self.backend.partition("+")[0]

    def new_app(self, handlers: list[Json], priorities: list[int] | None = None) -> Conveyor:
        # SQL backends keep their engine and tables (wiped by reset); memory starts afresh.
        old = self.app
        store = old.store if old is not None and self.store_backend != "memory" else None
        if old is not None and old.broker is not None:
            old.broker.close()  # its publishing connections; the store carries on
        app = Conveyor(
            self.url,
            store=store,
            clock=self.clock,
            notifier=self.notifier,
            table_prefix=self.table_prefix,
            priorities=priorities,
            broker_url=self.broker_url,
            broker_settings=self.broker_settings,
        )
        for handler in handlers:
            try:
                # Worker mode runs these; the harness's own reports never call them.
                app.register(
                    handler["type"],
                    self.script.handler(),
                    pass_context=True,
                    queue=handler["queue"],
                    priority=handler["priority"],
                    retry=resolve(handler["retry_policy"]),
                )
            except ConfigurationError as error:
                raise InvalidRequest(str(error)) from None
        return app

    def wipe(self) -> None:
        """Empty the store (its schema kept) and this process's AMQP queues."""
        if self.app is None:
            return
        self.app.store.erase()
        if self.broker_claims is not None:
            self.broker_claims.purge(self.app.broker)

    def close(self) -> None:
        if self.http is not None:
            self.http.stop()
        if self.app is not None:
            if self.broker_claims is not None:
                try:
                    self.broker_claims.delete(self.app.broker)
                except Exception:
                    log.exception("could not delete the AMQP queues of this process")
            if self.store_backend in SERVER_URLS:
                try:
                    self.app.store.drop_schema()
                except Exception:
                    log.exception("could not drop the tables with prefix %s", self.table_prefix)
            self.app.close()
            self.app = None
        if self.temporary is not None:
            shutil.rmtree(self.temporary, ignore_errors=True)

    def job_result(self, job: Job) -> Json:
        return {"job": job.to_dict()}

    def batch_result(self, batch: Batch) -> Json:
        with self.conveyor.store.transaction() as tx:
            unsettled = tx.unsettled_in_batch(batch.id)
        return {
            "batch": {
                "id": batch.id,
                "state": batch.state,
                "total": batch.total,
                "unsettled": unsettled,
                "completion": (
                    publish_document(batch.completion) if batch.completion is not None else None
                ),
                "created_at": format_timestamp(batch.created_at),
                "finished_at": (
                    format_timestamp(batch.finished_at) if batch.finished_at is not None else None
                ),
            }
        }

    def build(self, document: Json) -> Job:
        return build_job(self.conveyor, document)

    # -- commands ---------------------------------------------------------------------------

    def handle(self, request: Json) -> Json:
        command = request.get("cmd")
        method: Callable[[Json], Json] | None = getattr(self, f"cmd_{command}", None)
        if method is None:
            raise Skip(f"this adapter does not implement {command!r}")
        return method(request)

    def cmd_start(self, request: Json) -> Json:
        if request.get("version") != PROTOCOL_VERSION:
            raise ValueError(f"this adapter speaks protocol version {PROTOCOL_VERSION} only")
        features = [*FEATURES, "broker"] if self.broker_url is not None else FEATURES
        return {
            "version": PROTOCOL_VERSION,
            "implementation": {
                "name": "conveyor",
                "version": __version__,
                "language": "python",
                "backend": self.backend,
            },
            "specversion": wire_version(),
            "features": features,
            "capabilities": CAPABILITIES,
        }

    def cmd_stop(self, request: Json) -> Json:
        return {}

    def cmd_reset(self, request: Json) -> Json:
        self.clock.set(parse_timestamp(request["now"]))
        self.rng.seed(request.get("seed", 0))
        random.seed(request.get("seed", 0))
        self.wipe()
        self.notifier.seen.clear()
        self.script.clear()
        self.app = self.new_app(request.get("handlers", []), request.get("priorities"))
        if self.http is not None:
            self.http.serve(self.app)
        return {}

    def cmd_clock_set(self, request: Json) -> Json:
        self.clock.set(parse_timestamp(request["now"]))
        return {"now": format_timestamp(self.clock.now())}

    def cmd_clock_advance(self, request: Json) -> Json:
        return {"now": format_timestamp(self.clock.advance(ms(request["ms"])))}

    def cmd_barrier(self, request: Json) -> Json:
        # Nothing runs in the background: even in broker mode every command waits for
        # RabbitMQ's confirms and commits before it answers (see BrokerClaims).
        return {}

    def cmd_publish(self, request: Json) -> Json:
        app = self.conveyor
        job = self.build(request["job"])
        stored = app._store_jobs([job])[0]
        if stored.conflict is None:
            return self.job_result(stored)
        if stored.conflict == "kept":  # UKEY-008: the new job, stored beside the holder
            with app.store.transaction() as tx:
                holder_id = tx.lock_unique_claim(stored.unique_key or "").job_id
            return {"conflict": True, "holder_id": holder_id, "job": stored.to_dict()}
        result: Json = {"conflict": True, "holder_id": stored.id}  # UKEY-004
        with app.store.transaction() as tx:
            holder = tx.get_job(stored.id)
        if holder is not None:
            result["job"] = stored.to_dict()
        return result

    def cmd_publish_bulk(self, request: Json) -> Json:
        app = self.conveyor
        jobs = [self.build(document) for document in request["jobs"]]
        stored = app._store_jobs(jobs)
        result: Json = {"jobs": [job.to_dict() for job in stored]}
        if any(job.conflict is not None for job in stored):  # UKEY-006
            result["conflicts"] = [job.conflict is not None for job in stored]
        return result

    def cmd_schedule_tick(self, request: Json) -> Json:
        """Each schedule evaluated at now by a fresh scheduler, as a process that starts
        (CRON-006): what earlier ticks recorded is in the store."""
        app = self.conveyor
        schedules = [self.schedule(document) for document in request["schedules"]]
        scheduler = Scheduler(app, app._deliver)
        runs = [scheduler.evaluate(schedule, app.now()) for schedule in schedules]
        return {
            "runs": [
                {
                    "name": run.name,
                    "fire_at": format_timestamp(run.fire_at),
                    "job": run.job.to_dict() if run.job is not None else None,
                }
                for run in runs
                if run is not None
            ]
        }

    def schedule(self, document: Json) -> Schedule:
        calls, options, payloads, metadata = publish_options(document["job"])
        if len(calls) != 1:
            raise InvalidRequest("a schedule's job has exactly one request")
        schedule = make_schedule(
            document["name"],
            document["expression"],
            calls[0].type,
            payloads[0],
            document.get("tz", "UTC"),
            document.get("overlap", "allow"),
            document.get("missed", "skip"),
            {},
        )
        schedule = replace(schedule, options=replace(options, metadata=metadata or {}))
        self.build(document["job"])  # a job the schedule cannot publish is refused now
        return schedule

    def cmd_claim(self, request: Json) -> Json:
        try:
            span = PriorityRange.parse(request.get("priorities"))
        except ConfigurationError as error:
            raise InvalidRequest(str(error)) from None
        queues = tuple(request.get("queues") or ())
        limit = int(request.get("limit", 1))
        lease_ms = int(request["lease_ms"])
        if self.broker_claims is not None and request.get("job") is None:
            jobs = self.broker_claims.claim(
                self.conveyor, request["worker_id"], queues, span, limit, lease_ms
            )
        else:
            jobs = self.conveyor.claim(
                request["worker_id"],
                queues=queues,
                priorities=span,
                limit=limit,
                lease_ms=lease_ms,
                job_id=request.get("job"),
            )
        return {"jobs": [job.to_dict() for job in jobs]}

    def cmd_report(self, request: Json) -> Json:
        outcome: Json = request["outcome"]
        kind = outcome["kind"]
        if kind == "die":
            kind = outcome.get("cause", "permanent")
        event = OUTCOME_EVENTS[kind]
        params: Json = {"lease_token": request["lease_token"]}
        if kind in ("temporary", "permanent", "timeout"):
            params["error"] = outcome.get("error") or {
                "kind": kind,
                "message": f"the handler reported a {kind} error",
            }
        if kind == "temporary" and outcome.get("retry_after_ms") is not None:
            params["retry_after_ms"] = outcome["retry_after_ms"]
        if kind == "waiting" and outcome.get("delay_ms") is not None:
            params["delay_ms"] = outcome["delay_ms"]
        update: Json = {}
        if outcome.get("result") is not None:
            if outcome["kind"] != "success":
                raise InvalidRequest("only a success outcome carries a result (RESULT-001)")
            update["result"] = outcome["result"]
        return self.job_result(self.conveyor.report(request["job"], event, params, update))

    def cmd_progress(self, request: Json) -> Json:
        job = self.conveyor.report_progress(
            request["job"], request["lease_token"], request.get("percent"), request.get("message")
        )
        return self.job_result(job)

    def cmd_heartbeat(self, request: Json) -> Json:
        job = self.conveyor.heartbeat(request["job"], request["lease_token"], request["lease_ms"])
        return self.job_result(job)

    def cmd_cancel(self, request: Json) -> Json:
        return self.job_result(self.conveyor.cancel(request["job"]))

    def cmd_requeue(self, request: Json) -> Json:
        return self.job_result(self.conveyor.requeue(request["job"]))

    def cmd_retry(self, request: Json) -> Json:
        return self.job_result(self.conveyor.retry(request["job"]))

    def cmd_fire(self, request: Json) -> Json:
        event = request["event"]
        if event in ("claim", "discard_redundant"):
            raise InvalidRequest(f"{event} is fired only by a claim")
        return self.job_result(self.conveyor.fire(request["job"], event, request.get("params")))

    def cmd_rescue(self, request: Json) -> Json:
        now = self.clock.now()
        # rescue_expired also returns the jobs its system effects moved (cancelled
        # dependents); the protocol asks only for the jobs lease_expired was fired on.
        rescued = [
            job
            for job in self.conveyor.rescue_expired(limit=10_000)
            if job.last_error is not None
            and job.last_error.kind == "lease_expired"
            and job.last_error.at == now
        ]
        return {"jobs": [job.to_dict() for job in rescued]}

    def cmd_get(self, request: Json) -> Json:
        return self.job_result(self.conveyor.get(request["job"]))

    def cmd_list(self, request: Json) -> Json:
        app = self.conveyor
        after = 0
        if request.get("after") is not None:
            after = app.get(request["after"]).sequence
        jobs = app.jobs(
            states=tuple(request.get("states") or ()),
            queue=request.get("queue"),
            tag=request.get("tag"),
            identifier=request.get("identifier"),
            batch=request.get("batch"),
            limit=int(request.get("limit", 1000)),
            after_sequence=after,
        )
        return {"jobs": [job.to_dict() for job in jobs]}

    def cmd_pause_queue(self, request: Json) -> Json:
        return {"changed": self.conveyor.pause_queue(request["queue"])}

    def cmd_resume_queue(self, request: Json) -> Json:
        return {"changed": self.conveyor.resume_queue(request["queue"])}

    def cmd_paused_queues(self, request: Json) -> Json:
        paused = self.conveyor.paused_queues()
        return {
            "queues": [
                {"queue": queue, "paused_at": format_timestamp(moment)}
                for queue, moment in paused.items()
            ]
        }

    def cmd_unfinished_identifiers(self, request: Json) -> Json:
        found = self.conveyor.unfinished_identifiers(request["identifiers"])
        return {"identifiers": sorted(found)}

    def cmd_clear_finished(self, request: Json) -> Json:
        return {"deleted": self.conveyor.clear_finished(older_than=ms(request["older_than_ms"]))}

    def cmd_retry_delay(self, request: Json) -> Json:
        policy = request["policy"]
        try:
            resolved = resolve(policy)
        except ConfigurationError as error:
            raise InvalidRequest(str(error)) from None
        return {"delay_ms": resolved.delay_ms(int(request["attempt"]), self.rng)}

    def cmd_notifications(self, request: Json) -> Json:
        seen, self.notifier.seen = self.notifier.seen, []
        return {"notifications": seen}

    def cmd_script_handlers(self, request: Json) -> Json:
        self.script.set(request["scripts"])
        return {}

    def cmd_run_worker(self, request: Json) -> Json:
        return run_worker(self.conveyor, self.script, request)

    def cmd_batch_open(self, request: Json) -> Json:
        app = self.conveyor
        completion = request.get("completion")
        if completion is None:
            return self.batch_result(app.open_batch())
        if completion.get("batch_id") is not None or completion.get("depends_on"):
            raise InvalidRequest("a batch's completion job cannot name a batch or dependencies")
        calls, options, payloads, _ = publish_options(completion)
        if len(calls) != 1:
            raise Skip("the reference library's completion jobs have exactly one request")
        batch = app.open_batch(Call(calls[0].type, codec.decode(payloads[0])), **_kwargs(options))
        return self.batch_result(batch)

    def cmd_batch_seal(self, request: Json) -> Json:
        return self.batch_result(self.conveyor.seal_batch(request["batch"]))

    def cmd_batch_get(self, request: Json) -> Json:
        return self.batch_result(self.conveyor.get_batch(request["batch"]))


def _kwargs(options: PublishOptions) -> Json:
    return {
        name: getattr(options, name)
        for name in PublishOptions.__dataclass_fields__
        if name != "metadata" and getattr(options, name) not in (None, (), False)
    }


def respond(session: Session, request: Json) -> Json:
    seq = request.get("seq")
    try:
        return {"seq": seq, "result": session.handle(request)}
    except Refused as refusal:
        return {"seq": seq, "error": {"code": refusal.code, "message": refusal.message}}
    except Skip as skip:
        return {"seq": seq, "skipped": {"message": str(skip)}}
    except Exception as error:
        log.exception("request %s failed", request.get("cmd"))
        return {
            "seq": seq,
            "errored": {
                "message": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
            },
        }


def lines(stream: IO[str]) -> Iterator[str]:
    while True:
        line = stream.readline()
        if not line:
            return
        if line.strip():
            yield line


def serve(session: Session, stdin: IO[str], stdout: IO[str]) -> None:
    """Answer requests until ``stop`` or end of input."""
    try:
        for line in lines(stdin):
            try:
                request = json.loads(line)
            except json.JSONDecodeError as error:
                response: Json = {"seq": None, "errored": {"message": f"not JSON: {error}"}}
                request = {}
            else:
                response = respond(session, request)
            stdout.write(json.dumps(response, ensure_ascii=False) + "\n")
            stdout.flush()
            if request.get("cmd") == "stop":
                return
    finally:
        session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor.conformance_adapter",
        description="Serve the Conveyor conformance harness protocol over stdin/stdout.",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="memory",
        help="the store, and with +rabbitmq broker mode over RabbitMQ",
    )
    parser.add_argument(
        "--url",
        help="store URL (default: memory://, a temporary SQLite file, or the "
        "CONVEYOR_TEST_POSTGRES_URL / CONVEYOR_TEST_MARIADB_URL server)",
    )
    parser.add_argument(
        "--broker-url",
        help="AMQP URL of the +rabbitmq backends (default: CONVEYOR_TEST_AMQP_URL, else "
        f"{BROKER_URL[1]})",
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    session = Session.open(arguments.backend, arguments.url, arguments.broker_url)
    http_url = os.environ.get(URL_VARIABLE)
    if http_url:
        # HTTP mode: the harness sends the binding's commands to this URL (spec.md#http).
        token = os.environ.get(TOKEN_VARIABLE) or None
        session.http = BindingServer(http_url, token).start()
    # Anything the library might print must not reach the protocol stream.
    protocol_out = sys.stdout
    sys.stdout = sys.stderr
    serve(session, sys.stdin, protocol_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
