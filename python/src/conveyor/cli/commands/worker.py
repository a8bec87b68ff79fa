"""``consume`` (a long-running worker), ``process`` (everything due, then exit) and
``reload-consumers`` (broker mode: restart running consumers on new code)."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click

from ...app import Conveyor
from ...locks import DEFAULT_SINGLE_ID, command_lock
from ...logs import job_record
from ...model import Job
from ...resilience import retry_while_unavailable
from ...worker import WorkerControl, WorkerStats
from ..context import ByteSize, CliState, PriorityRangeType, pass_state
from ..render import summary, types_of

priorities_option = click.option(
    "-p",
    "--priorities",
    type=PriorityRangeType(),
    help="Only jobs with priorities in this range: 10, 20-40, 25- or -20 (default: all).",
)
queue_option = click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    help="Only jobs of this queue; repeat for several (default: every queue).",
)
batch_size_option = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    metavar="N",
    help="Jobs claimed per statement (default: adaptive, the free slots when idle and more "
    "ahead while there is a backlog).",
)
single_id_option = click.option(
    "--single-id",
    default=DEFAULT_SINGLE_ID,
    show_default=True,
    metavar="ID",
    help="Name of this instance: instances with different ids may run at the same time.",
)
# consume --concurrency above 1: the interpreter's switch interval (seconds). Python's own 5 ms
# is long for slots that wait on I/O: a job whose wait ended waits up to that long for the
# interpreter lock while the worker's claiming thread runs (docs/guide/workers.md).
SLOTS_SWITCH_INTERVAL = 0.0002
concurrency_option = click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Jobs run at once: sync handlers in N threads, async handlers as tasks on one event loop.",
)
quiet_option = click.option("--quiet", is_flag=True, help="Do not print a line per job.")
isolation_option = click.option(
    "--isolation",
    type=click.Choice(["thread", "process"]),
    default="thread",
    show_default=True,
    help="Where sync handlers run: in the worker's threads, or in one handler process per "
    "slot, killed at a job's timeout and replaced (payloads and results as JSON only; async "
    "handlers stay on the worker's event loop).",
)
startup_wait_option = click.option(
    "--startup-wait",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to retry, at start, a database server that does not answer (a warning per "
    "attempt) before exiting with its error.",
)


def _open_store(app: Conveyor, wait: float) -> None:
    """Open the app's store, retrying while its database server is away.

    A worker started together with its database (a deploy, a host reboot) or whose first
    session is cut waits for it as a running worker does, rather than exiting at once. A
    SQLite file or ``memory://`` is not retried: its errors do not pass by themselves.
    """
    server = not app.url.startswith(("sqlite", "memory:"))
    retry_while_unavailable(lambda: app.store, give_up_after=wait if server else 0.0)


def _job_line(job: Job) -> None:
    error = f": {job.last_error.message}" if job.last_error and job.state != "finished" else ""
    click.echo(
        f"job {job.id} {types_of(job)} -> {job.state} (attempt {job.attempts}){error}", err=True
    )


def _job_json(job: Job) -> None:
    _json_line("info", job_record(job), f"job {job.id} {types_of(job)} -> {job.state}")


def _json_line(level: str, fields: dict[str, Any], message: str) -> None:
    """One JSON line on stderr, shaped as conveyor.logs.JsonFormatter shapes log records."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    line = {"ts": now, "level": level, "logger": "conveyor.cli", "message": message, **fields}
    click.echo(json.dumps(line, ensure_ascii=False, default=str), err=True)


def _on_job(state: CliState, quiet: bool) -> Callable[[Job], None] | None:
    if quiet:
        return None
    return _job_json if state.log_format == "json" else _job_line


def _note(state: CliState, message: str, **fields: Any) -> None:
    """A line for the operator on stderr: text, or a JSON line with ``fields``."""
    if state.log_format == "json":
        _json_line("info", fields, message)
    else:
        click.echo(message, err=True)


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@contextlib.contextmanager
def _start_up_objects_frozen() -> Iterator[None]:
    """While the worker runs, the objects made at start-up (modules, the app, the tables'
    metadata: some 90,000) are left out of the garbage collector's full passes: each such
    pass would otherwise walk them all and stop the process for about 30 ms (about once per
    10,000 no-op jobs here), delaying the job at hand. They live as long as the
    process anyway. Given back to the collector when the run ends."""
    gc.collect()  # what start-up left as garbage is not kept for ever
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _describe(queues: Sequence[str], priorities: str | None) -> str:
    return f"queues {', '.join(queues) or 'all'}, priorities {priorities or 'all'}"


class _LostLock:
    """Stops the worker when its --single-id lock was taken over (its database session was
    cut and another instance was faster); the command then exits with code 1."""

    def __init__(self, worker: WorkerControl) -> None:
        self.worker = worker
        self.reason: str | None = None

    def __call__(self, reason: str) -> None:
        self.reason = reason
        self.worker.stop(reason)

    def exit_if_lost(self) -> None:
        if self.reason is not None:
            click.echo(f"error: {self.reason}", err=True)
            click.get_current_context().exit(1)


def _stop_on_signals(worker: WorkerControl) -> Callable[[], None]:
    """SIGTERM/SIGINT stop claiming and let running jobs finish within the grace period; a
    second one hands them back at once."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if worker.stopping:
            worker.hurry()
        else:
            worker.stop(f"received {signal.Signals(signum).name}; finished the running jobs")
        worker.wake_after_signal()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


@click.command(short_help="Run a worker until stopped (needs --app).")
@priorities_option
@queue_option
@click.option(
    "--jobs",
    "max_jobs",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after N jobs (default: never).",
)
@click.option(
    "--cycles-limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after N claim cycles (default: never).",
)
@click.option(
    "--cycle-delay",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long when no job is due.",
)
@click.option(
    "--memory-limit",
    type=ByteSize(),
    metavar="BYTES",
    help="Stop after a job when resident memory exceeds this (512M, 1G, ...); with "
    "--isolation process, also replace a handler process that grew past it.",
)
@batch_size_option
@concurrency_option
@isolation_option
@click.option(
    "--grace-period",
    type=click.FloatRange(min=0),
    default=25.0,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM, how long running jobs may take to finish before they are handed back "
    "to other workers.",
)
@click.option(
    "--rescue-interval",
    type=click.FloatRange(min=0.01),
    metavar="SECONDS",
    help="How often to look for jobs whose worker died (default: half the lease, at most 30 s; "
    "also as soon as the earliest known lease expires).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    metavar="N",
    help="Broker mode: messages held unacknowledged per queue consumed (default: the "
    "concurrency plus the batch size, at least plus 100).",
)
@click.option(
    "--single-id",
    metavar="ID",
    help="Refuse to start while another consumer with this id runs on the store (default: no "
    "such lock; any number of consumers may run).",
)
@click.option(
    "--switch-interval",
    type=click.FloatRange(min=0.0001),
    metavar="SECONDS",
    help="The interpreter's thread switch interval in this process (sys.setswitchinterval; "
    f"default: {SLOTS_SWITCH_INTERVAL:g} with --concurrency above 1, else Python's own 0.005). "
    "A shorter one lets a job whose wait ended take the interpreter lock back sooner.",
)
@startup_wait_option
@quiet_option
@pass_state
def consume(
    state: CliState,
    priorities: str | None,
    queues: tuple[str, ...],
    max_jobs: int | None,
    cycles_limit: int | None,
    cycle_delay: float,
    memory_limit: int | None,
    batch_size: int | None,
    concurrency: int,
    isolation: str,
    grace_period: float,
    rescue_interval: float | None,
    prefetch: int | None,
    single_id: str | None,
    switch_interval: float | None,
    startup_wait: float,
    quiet: bool,
) -> None:
    """Run a worker until stopped (SIGTERM/Ctrl+C: running jobs finish within the grace
    period, then are handed back; a second signal hands them back at once).

    Needs --app. Any number of consumers may run on one store; with --single-id, only one per
    id. In broker mode (CONVEYOR_BROKER_URL or the app's broker_url) it consumes job messages
    from RabbitMQ, and exits with code 3 after `conveyor reload-consumers` asked it to.
    """
    app = state.worker_app("consume")
    _setup_logging()
    if switch_interval is None and concurrency > 1:
        switch_interval = SLOTS_SWITCH_INTERVAL
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    _open_store(app, startup_wait)
    worker = app.worker(
        queues=queues,
        priorities=priorities,
        batch_size=batch_size,
        concurrency=concurrency,
        isolation=isolation,
        app_spec=state.app_spec,
        grace_period=grace_period,
        rescue_interval=rescue_interval,
        max_jobs=max_jobs,
        max_cycles=cycles_limit,
        memory_limit=memory_limit,
        idle_delay=cycle_delay,
        handle_signals=False,
        on_job=_on_job(state, quiet),
        prefetch=prefetch,
    )
    broker = app.broker
    via = f" through RabbitMQ at {broker.display_url}" if broker is not None else ""
    lost = _LostLock(worker)
    lock = (
        command_lock(app, "consume", single_id, on_lost=lost)
        if single_id
        else contextlib.nullcontext()
    )
    with lock:
        restore = _stop_on_signals(worker)
        try:
            instance = f"single-id {single_id}, " if single_id else ""
            _note(
                state,
                f"consuming {_describe(queues, priorities)} on {state.location}{via} "
                f"({instance}worker {worker.options.worker_id}, concurrency {concurrency}); "
                "SIGTERM or Ctrl+C stops after the running jobs",
                event="consume_started",
                worker_id=worker.options.worker_id,
            )
            with _start_up_objects_frozen():
                stats = worker.run()
        finally:
            restore()
    click.echo(summary(stats, "consume"))
    lost.exit_if_lost()
    if stats.reload_requested:
        from ...broker.settings import RELOAD_EXIT_CODE

        click.get_current_context().exit(RELOAD_EXIT_CODE)


@click.command(short_help="Run every due job, then exit (needs --app).")
@priorities_option
@queue_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Run at most N jobs in this run (default: every due job).",
)
@batch_size_option
@concurrency_option
@isolation_option
@single_id_option
@startup_wait_option
@quiet_option
@pass_state
def process(
    state: CliState,
    priorities: str | None,
    queues: tuple[str, ...],
    limit: int | None,
    batch_size: int | None,
    concurrency: int,
    isolation: str,
    single_id: str,
    startup_wait: float,
    quiet: bool,
) -> None:
    """Run every due job, then exit (for cron). Needs --app.

    In broker mode it runs the repair loop instead (consumers run the jobs): it requeues
    broker_failed, back_to_broker and due temporarily_failed and waiting jobs, hands over
    due jobs whose message may be lost, and rescues jobs whose lease expired.
    """
    app = state.worker_app("process")
    _setup_logging()
    _open_store(app, startup_wait)
    if app.broker is not None:
        with command_lock(app, "process", single_id):
            report = app.repair()
        click.echo(f"repair through RabbitMQ at {app.broker.display_url}: {report.summary()}")
        if report.problem:
            click.get_current_context().exit(1)
        return
    worker = app.worker(
        queues=queues,
        priorities=priorities,
        batch_size=batch_size,
        concurrency=concurrency,
        isolation=isolation,
        app_spec=state.app_spec,
        max_jobs=limit,
        stop_when_empty=True,
        on_job=_on_job(state, quiet),
    )
    lost = _LostLock(worker)
    with command_lock(app, "process", single_id, on_lost=lost):
        stats: WorkerStats = worker.run()
    click.echo(summary(stats, "process"))
    lost.exit_if_lost()


@click.command("reload-consumers", short_help="Restart N running consumers of QUEUE (broker).")
@click.argument("queue")
@click.argument("count", metavar="NUMBER", type=click.IntRange(min=1))
@pass_state
def reload_consumers(state: CliState, queue: str, count: int) -> None:
    """Ask NUMBER running consumers of QUEUE to finish their current job and exit.

    Broker mode only. Each request is taken by exactly one consumer of QUEUE; it exits with
    code 3 once its job is recorded, so that a supervisor starts it again on new code.
    Consumers started after the request ignore it; requests no consumer takes expire.
    """
    app = state.app
    broker = app.broker
    if broker is None:
        from ...errors import ConfigurationError

        raise ConfigurationError(
            "reload-consumers works in broker mode: set CONVEYOR_BROKER_URL (or pass an --app "
            "with broker_url)"
        )
    app.reload_consumers(queue, count)
    click.echo(
        f"asked {count} consumer(s) of queue {queue!r} to finish their current job and exit "
        f"(through RabbitMQ at {broker.display_url})"
    )
