"""``clear-finished`` and ``update-schema``: upkeep of the store."""

from __future__ import annotations

import contextlib
import sys
from datetime import timedelta

import click

from ...app import Conveyor
from ...locks import DEFAULT_SINGLE_ID, command_lock
from ...specfiles import spec_version
from ..context import CliError, CliState, pass_state

_EVERY_ROW = 2**31 - 1  # a LIMIT every database accepts


class _RollBack(Exception):
    """Ends the dry run's transaction, undoing its deletes."""


def _would_delete(app: Conveyor, older_than: timedelta) -> int:
    """How many jobs clear-finished would delete now: the same delete, rolled back, so the
    count follows exactly the same rules (age, states, jobs an unfinished job depends on)."""
    counted = 0
    with contextlib.suppress(_RollBack), app.store.transaction() as tx:
        counted = tx.delete_prunable(app.now() - older_than, _EVERY_ROW)
        raise _RollBack
    return counted


def _interactive() -> bool:
    """A person can answer a question: stdin is a terminal."""
    return sys.stdin is not None and sys.stdin.isatty()


@click.command("clear-finished", short_help="Delete finished and redundant jobs.")
@click.argument("days", type=click.FloatRange(min=0), default=0, required=False)
@click.option(
    "-y", "--yes", is_flag=True, help="Delete without asking (needed without a terminal)."
)
@click.option("--dry-run", is_flag=True, help="Only say how many jobs would be deleted.")
@pass_state
def clear_finished(state: CliState, days: float, yes: bool, dry_run: bool) -> None:
    """Delete finished and redundant jobs older than DAYS days (default 0: all of them).

    Jobs that an unfinished job depends on are kept. Asks before deleting; --yes deletes
    without asking (required when no terminal can answer, as under cron), --dry-run only
    counts.
    """
    app = state.app
    older_than = timedelta(days=days)
    scope = f"finished more than {days:g} days ago" if days else "all of them"
    with command_lock(app, "clear-finished", DEFAULT_SINGLE_ID):
        if dry_run or not yes:
            count = _would_delete(app, older_than)
            if dry_run:
                click.echo(
                    f"would delete {count} finished or redundant jobs ({scope}) from "
                    f"{state.location} (dry run: nothing deleted)"
                )
                return
            if count and not _interactive():
                raise CliError(
                    f"clear-finished would delete {count} finished or redundant jobs ({scope}) "
                    f"from {state.location}, and no terminal can confirm it: pass --yes to "
                    "delete them, or --dry-run to only count them"
                )
            if count and not click.confirm(
                f"Delete {count} finished or redundant jobs ({scope}) from {state.location}?",
                err=True,
            ):
                raise CliError("nothing deleted: not confirmed")
        deleted = app.clear_finished(older_than)
    click.echo(f"deleted {deleted} finished or redundant jobs ({scope}) from {state.location}")


@click.command("update-schema", short_help="Create or upgrade the database schema.")
@pass_state
def update_schema(state: CliState) -> None:
    """Create or upgrade the database schema to this version's, then print its version."""
    app = state.app
    # Opening a SQL store already creates or upgrades its schema; this says so under the lock.
    with command_lock(app, "update-schema", DEFAULT_SINGLE_ID):
        version = app.store.update_schema()
    if version is None:
        click.echo(f"{state.location} keeps no schema; nothing to update")
        return
    click.echo(
        f"schema of {state.location} is at version {version} (conveyor spec {spec_version()})"
    )
