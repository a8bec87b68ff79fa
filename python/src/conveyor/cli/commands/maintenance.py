"""``clear-finished`` and ``update-schema``: upkeep of the store."""

from __future__ import annotations

from datetime import timedelta

import click

from ...locks import DEFAULT_SINGLE_ID, command_lock
from ...specfiles import spec_version
from ..context import CliState, pass_state


@click.command("clear-finished", short_help="Delete finished and redundant jobs.")
@click.argument("days", type=click.FloatRange(min=0), default=0, required=False)
@pass_state
def clear_finished(state: CliState, days: float) -> None:
    """Delete finished and redundant jobs older than DAYS days (default 0: all of them).

    Jobs that an unfinished job depends on are kept.
    """
    app = state.app
    with command_lock(app, "clear-finished", DEFAULT_SINGLE_ID):
        deleted = app.clear_finished(timedelta(days=days))
    scope = f"finished more than {days:g} days ago" if days else "all of them"
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
