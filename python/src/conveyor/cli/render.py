"""Tables and panels for jobs, counts and worker statistics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..model import Job, JobError
from ..schedules import ScheduleStatus
from ..worker import WorkerStats

STATE_STYLES = {
    "ready": "bold",
    "processing": "cyan",
    "finished": "green",
    "temporarily_failed": "yellow",
    "waiting": "magenta",
    "permanently_failed": "bold red",
    "broker_failed": "red",
    "back_to_broker": "yellow",
    "redundant": "blue",
    "cancelled": "dim",
}


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def when(moment: datetime | None, short: bool = False) -> str:
    """A UTC timestamp to the second, e.g. 2024-05-01 12:00:03Z (short: 05-01 12:00:03Z)."""
    if moment is None:
        return "-"
    return moment.strftime("%m-%d %H:%M:%SZ" if short else "%Y-%m-%d %H:%M:%SZ")


def types_of(job: Job) -> str:
    return ", ".join(request.type for request in job.requests)


def attempts_of(job: Job) -> str:
    return f"{job.attempts}/{job.max_attempts}" if job.max_attempts else str(job.attempts)


def short(text: str | None, length: int = 60) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= length else flat[: length - 1] + "…"


def error_text(error: JobError | None, length: int = 60) -> str:
    return short(error.message, length) if error is not None else ""


def compact_table(title: str | None = None) -> Table:
    """A table that keeps one space between columns, so it fits 80 columns."""
    return Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", padding=(0, 0))


def text_column(table: Table, header: str) -> None:
    """A column of words that wraps, and folds a word longer than the column, so that at any
    width the table fits without cropping: a cropped line loses the words at its end."""
    table.add_column(header, overflow="fold", min_width=6)


def state_column(table: Table) -> None:
    table.add_column("State", no_wrap=True, min_width=len("permanently_failed"))


def jobs_table(jobs: Sequence[Job], title: str | None = None) -> Table:
    table = compact_table(title)
    table.add_column("ID", justify="right", no_wrap=True)
    table.add_column("Queue", no_wrap=True)
    table.add_column("Prio", justify="right", no_wrap=True)
    state_column(table)
    text_column(table, "Type(s)")
    table.add_column("Att.", justify="right", no_wrap=True)
    table.add_column("Available", no_wrap=True)
    text_column(table, "Last error")
    for job in jobs:
        table.add_row(
            job.id,
            job.queue,
            str(job.priority),
            state_text(job.state),
            types_of(job),
            attempts_of(job),
            when(job.available_at, short=True),
            error_text(job.last_error),
        )
    return table


def counts_table(
    counts: Iterable[tuple[str, str, int]], state_order: Sequence[str], location: str
) -> Table:
    """Queues as rows, the states that occur as columns, with totals."""
    by_queue: dict[str, dict[str, int]] = {}
    for queue, state, count in counts:
        by_queue.setdefault(queue, {})[state] = count
    present = [s for s in state_order if any(s in row for row in by_queue.values())]
    present += sorted({s for row in by_queue.values() for s in row} - set(present))
    table = Table(title=f"Jobs in {location}", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("Queue", no_wrap=True)
    for state in present:
        table.add_column(state_text(state), justify="right")
    table.add_column("total", justify="right", style="bold")
    for queue in sorted(by_queue):
        row = by_queue[queue]
        table.add_row(queue, *(str(row.get(s, 0)) for s in present), str(sum(row.values())))
    if len(by_queue) > 1:
        table.add_section()
        totals = [sum(row.get(s, 0) for row in by_queue.values()) for s in present]
        table.add_row(Text("all", style="bold"), *map(str, totals), str(sum(totals)))
    return table


def job_panel(job: Job) -> Panel:
    """Every field of a job, readable."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    lease = "-"
    if job.lease is not None:
        lease = f"token {job.lease.token}, worker {job.lease.worker_id}, "
        lease += f"expires {when(job.lease.expires_at)}"
    recurring = (
        f"every {job.recurring_interval_ms / 1000:g} s" if job.recurring_interval_ms else "-"
    )
    policy = job.retry_policy
    rows: list[tuple[str, RenderableType]] = [
        ("state", state_text(job.state)),
        ("queue", job.queue),
        ("priority", str(job.priority)),
        ("sequence", str(job.sequence)),
        ("attempts", attempts_of(job)),
        ("available at", when(job.available_at)),
        ("created at", when(job.created_at)),
        ("updated at", when(job.updated_at)),
        ("finished at", when(job.finished_at)),
        ("serial group", job.serial_group or "-"),
        ("identifier", f"{job.identifier} (unique)" if job.unique else job.identifier or "-"),
        ("recurring", recurring),
        ("depends on", ", ".join(job.depends_on) or "-"),
        ("batch", job.batch_id or "-"),
        ("tags", ", ".join(job.tags) or "-"),
        ("lease", lease),
        ("cancel requested", when(job.cancel_requested_at) if job.cancel_requested else "-"),
        (
            "retry policy",
            f"{policy.backoff}, first delay {policy.initial_delay_ms} ms, max delay "
            f"{policy.max_delay_ms} ms, max attempts {policy.max_attempts or 'unlimited'}",
        ),
        ("metadata", _json(job.metadata) if job.metadata else "-"),
        ("execution", _json(job.execution) if job.execution else "-"),
        ("progress", progress_text(job)),
        ("result", result_text(job)),
    ]
    for name, value in rows:
        fields.add_row(name, value)
    requests = Table(title="Requests", box=box.SIMPLE_HEAD, title_justify="left")
    requests.add_column("#", justify="right")
    requests.add_column("Type")
    requests.add_column("State", no_wrap=True)
    requests.add_column("Att.", justify="right")
    requests.add_column("Payload", overflow="fold")
    requests.add_column("Error", overflow="fold")
    for request in job.requests:
        requests.add_row(
            str(request.index),
            request.type,
            request.state,
            str(request.attempts),
            _json(request.payload),
            error_text(request.error, 200),
        )
    parts: list[RenderableType] = [fields, requests]
    if job.errors:
        errors = Table(title="Errors", box=box.SIMPLE_HEAD, title_justify="left")
        errors.add_column("At (UTC)", no_wrap=True)
        errors.add_column("Att.", justify="right")
        errors.add_column("Kind")
        errors.add_column("Message", overflow="fold")
        for error in job.errors:
            kind = f"{error.kind} ({error.type})" if error.type else error.kind
            errors.add_row(when(error.at), str(error.attempt), kind, short(error.message, 300))
        parts.append(errors)
    if job.last_error is not None and job.last_error.traceback:
        parts.append(
            Panel(
                Text(job.last_error.traceback.rstrip("\n")),
                title="Traceback of the last error",
                title_align="left",
                box=box.SIMPLE,
            )
        )
    return Panel(Group(*parts), title=f"job {job.id}: {types_of(job)}", title_align="left")


def progress_text(job: Job) -> str:
    """``40% copied 4 of 10 (at ...)``, or ``-`` when none was reported (PROGRESS-001)."""
    if job.progress is None:
        return "-"
    percent = job.progress.get("percent")
    parts = [f"{percent:g}%" if percent is not None else "", job.progress.get("message") or ""]
    shown = " ".join(part for part in parts if part)
    return f"{shown} (at {when(job.progress['at'])})"


def result_text(job: Job) -> str:
    """The stored result as JSON (cut at 2000 characters), and when it expires."""
    if job.result is None:
        return "-"
    expires = job.result_expires_at
    text = short(_json(job.result), 2000)
    return f"{text} (kept until {when(expires)})" if expires else text


def schedules_table(found: Sequence[ScheduleStatus]) -> Table:
    """One row per schedule: its expression and zone, policies, next fire time, latest run."""
    table = compact_table("Schedules")
    for column in ("Name", "Cron", "Time zone", "Type", "Overlap", "Missed", "Next (UTC)"):
        table.add_column(column, no_wrap=True)
    table.add_column("Last run (UTC)")
    for status in found:
        schedule, last = status.schedule, status.last_run
        last_text = "-"
        if last is not None:
            job = f"job {last.job_id}" if last.job_id else "skipped"
            last_text = f"{when(last.fire_at)} ({job})"
        table.add_row(
            schedule.name,
            schedule.expression,
            schedule.tz.key,
            schedule.type,
            schedule.overlap,
            schedule.missed,
            when(status.next_fire),
            last_text,
        )
    return table


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary(stats: WorkerStats, command: str) -> str:
    """One line: what the worker did and why it stopped."""
    outcomes = ", ".join(f"{state} {count}" for state, count in sorted(stats.outcomes.items()))
    jobs = plural(stats.jobs, "job") + (f" ({outcomes})" if outcomes else "")
    rescued = f", {stats.rescued} rescued" if stats.rescued else ""
    reason = stats.stop_reason or "finished"
    return f"{command}: {jobs} in {plural(stats.cycles, 'cycle')}{rescued}; stopped: {reason}"
