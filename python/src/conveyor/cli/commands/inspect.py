"""``status`` and ``jobs``: looking at jobs, and retrying, cancelling or requeueing one."""

from __future__ import annotations

import json
from typing import Any

import click

from ...app import Conveyor
from ...errors import InvalidTransition
from ...model import Job
from ..context import CliError, CliState, out, pass_state
from ..render import counts_table, job_panel, jobs_table, plural, schedules_table

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.command()
@json_option
@pass_state
def status(state: CliState, as_json: bool) -> None:
    """Count jobs by queue and state."""
    app = state.app
    counts = app.status()
    if as_json:
        totals: dict[str, int] = {}
        for _queue, job_state, count in counts:
            totals[job_state] = totals.get(job_state, 0) + count
        _print_json(
            {
                "store": state.location,
                "counts": [{"queue": q, "state": s, "count": n} for q, s, n in counts],
                "states": totals,
                "total": sum(totals.values()),
            }
        )
        return
    if not counts:
        click.echo(f"no jobs in {state.location}")
        return
    out().print(counts_table(counts, list(app.engine.machine.states), state.location))


@click.command()
@json_option
@pass_state
def schedules(state: CliState, as_json: bool) -> None:
    """List the app's cron schedules: next fire time and latest run."""
    found = state.app.scheduler.status()
    if as_json:
        _print_json([status.to_dict() for status in found])
        return
    if not found:
        click.echo("the app declares no schedules (app.cron() or app.schedule())")
        return
    out().print(schedules_table(found))


@click.group()
def jobs() -> None:
    """List, show, retry, cancel or requeue jobs."""


@jobs.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    help="Only jobs in this state; repeat for several (e.g. --state ready --state waiting).",
)
@click.option("--queue", metavar="NAME", help="Only jobs of this queue.")
@click.option("--tag", metavar="TAG", help="Only jobs carrying this tag.")
@click.option("--identifier", metavar="ID", help="Only jobs with this identifier.")
@click.option(
    "--after",
    type=click.IntRange(min=0),
    default=0,
    metavar="ID",
    help="Only jobs published after job ID (to page through).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="At most this many jobs.",
)
@json_option
@pass_state
def list_jobs(
    state: CliState,
    states: tuple[str, ...],
    queue: str | None,
    tag: str | None,
    identifier: str | None,
    after: int,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs in publish order, filtered."""
    app = state.app
    known = list(app.engine.machine.states)
    unknown = [s for s in states if s not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown state {', '.join(unknown)}; states are {', '.join(known)}",
            param_hint="'--state'",
        )
    found = app.jobs(
        states=states,
        queue=queue,
        tag=tag,
        identifier=identifier,
        limit=limit,
        after_sequence=after,
    )
    if as_json:
        _print_json([job.to_dict() for job in found])
        return
    if not found:
        click.echo(f"no matching jobs in {state.location}")
        return
    more = (
        f" (first {limit}; page on with --after {found[-1].sequence})"
        if len(found) == limit
        else ""
    )
    title = f"{plural(len(found), 'job')} in {state.location}{more}"
    out().print(jobs_table(found, title=title))


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@json_option
@pass_state
def show(state: CliState, job_id: str, as_json: bool) -> None:
    """Show every field of job ID."""
    job = state.app.get(job_id)
    if as_json:
        _print_json(job.to_dict())
    else:
        out().print(job_panel(job))


def _operate(app: Conveyor, job_id: str, event: str) -> tuple[Job, Job]:
    before = app.get(job_id)
    try:
        after = app.cancel(job_id) if event == "cancel" else app.report(job_id, event, {})
    except InvalidTransition:
        current = app.get(job_id)
        sources = sorted(
            {s for t in app.engine.machine.transitions if t.event == event for s in t.sources},
            key=list(app.engine.machine.states).index,
        )
        raise CliError(
            f"cannot {event} job {job_id}: it is {current.state}; {event} applies to jobs that "
            f"are {', '.join(sources)}"
        ) from None
    return before, after


def _operation(event: str, summary: str) -> click.Command:
    @click.command(event, help=summary)
    @click.argument("job_id", metavar="ID")
    @pass_state
    def command(state: CliState, job_id: str) -> None:
        before, after = _operate(state.app, job_id, event)
        if after.state == "processing" and after.cancel_requested:  # CANCEL-001
            click.echo(
                f"job {after.id}: processing, cancel requested; its handler is asked to stop "
                "at its worker's next heartbeat, and the job ends cancelled when it does"
            )
            return
        click.echo(f"job {after.id}: {before.state} -> {after.state}")

    return command


jobs.add_command(
    _operation("retry", "Run job ID again from the start (permanently failed or cancelled).")
)
jobs.add_command(
    _operation("cancel", "Cancel job ID; a running one is asked to stop (spec.md#cancel-running).")
)
jobs.add_command(
    _operation("requeue", "Make job ID due now (temporarily failed, waiting or broker failed).")
)
