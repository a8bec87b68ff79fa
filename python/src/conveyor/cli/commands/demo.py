"""``demo``: publish a realistic mix of jobs into a local SQLite file and run them."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ...demo import DEFAULT_PATH, Demo, Outcome
from ...model import Job
from ..context import CliError, out
from ..render import (
    attempts_of,
    compact_table,
    error_text,
    state_column,
    state_text,
    text_column,
    types_of,
)


def outcomes_table(outcomes: list[Outcome]) -> Table:
    """One row per job; the scenario it shows is under its type."""
    table = compact_table("Outcomes")
    table.add_column("Job", justify="right", no_wrap=True)
    text_column(table, "Type(s) / scenario")
    table.add_column("Prio", justify="right", no_wrap=True)
    table.add_column("Group", no_wrap=True)
    table.add_column("Ran", justify="right", no_wrap=True)
    table.add_column("Att.", justify="right", no_wrap=True)
    state_column(table)
    text_column(table, "Last error")
    for outcome in outcomes:
        job = outcome.job
        table.add_row(
            job.id,
            Text.assemble(types_of(job), "\n", (outcome.scenario, "dim")),
            str(job.priority),
            job.serial_group or "",
            f"#{outcome.ran}" if outcome.ran is not None else "-",
            attempts_of(job),
            state_text(job.state),
            error_text(job.last_error, 48),
        )
    return table


@click.command(short_help="Run a self-contained demo in a few seconds.")
@click.option(
    "--db",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_PATH,
    show_default=True,
    help="SQLite file to use; recreated on every run (a file that conveyor demo did not "
    "create is refused).",
)
def demo(path: Path) -> None:
    """Run a demo: retries, failures, groups, priorities... in a few seconds."""
    console = out()
    app_demo = Demo(path)
    try:
        published = app_demo.publish()
        console.print(
            Text.assemble(
                ("Conveyor demo", "bold"),
                f": published {len(published)} jobs into {path}; a worker runs them now.",
            )
        )
        last = {"text": ""}

        def on_job(job: Job) -> None:
            last["text"] = f"job {job.id} {types_of(job)} -> {job.state}"

        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"),
            console=console,
        ) as progress:
            task = progress.add_task("terminal jobs", total=len(published), last="")

            def on_progress(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total, last=last["text"])

            stats = app_demo.run(on_progress=on_progress, on_job=on_job)
        outcomes = app_demo.outcomes()
        console.print(outcomes_table(outcomes))
        for line in app_demo.notifications:
            console.print(Text(f"notified: {line}", style="yellow"))
        unfinished = [o.job.id for o in outcomes if o.job.state not in app_demo.terminal]
        if unfinished:
            raise CliError(
                f"jobs {', '.join(unfinished)} did not finish ({stats.stop_reason}); "
                "is the disk or the machine very slow?"
            )
        console.print(
            f"{stats.jobs} runs in {stats.cycles} worker cycles. Look around with:\n"
            f"  conveyor --url sqlite:///{path} status\n"
            f"  conveyor --url sqlite:///{path} jobs list --state permanently_failed\n"
            f"  conveyor --url sqlite:///{path} jobs show {outcomes[0].job.id}"
        )
    finally:
        app_demo.close()
