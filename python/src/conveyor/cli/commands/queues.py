"""``queues``: pause, resume and list paused queues (spec.md#pausing)."""

from __future__ import annotations

import json

import click

from ..context import CliState, pass_state


@click.group()
def queues() -> None:
    """Pause or resume queues, and list the paused ones."""


@queues.command("pause")
@click.argument("names", nargs=-1, required=True, metavar="QUEUE...")
@pass_state
def pause(state: CliState, names: tuple[str, ...]) -> None:
    """Stop workers from claiming jobs of QUEUE; running jobs finish, publishing goes on."""
    for name in names:
        changed = state.app.pause_queue(name)
        click.echo(f"queue {name}: {'paused' if changed else 'was paused already'}")


@queues.command("resume")
@click.argument("names", nargs=-1, required=True, metavar="QUEUE...")
@pass_state
def resume(state: CliState, names: tuple[str, ...]) -> None:
    """Let workers claim jobs of QUEUE again."""
    for name in names:
        changed = state.app.resume_queue(name)
        click.echo(f"queue {name}: {'resumed' if changed else 'was not paused'}")


@queues.command("paused")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@pass_state
def paused(state: CliState, as_json: bool) -> None:
    """List the paused queues and since when."""
    found = state.app.paused_queues()
    if as_json:
        since = {name: moment.isoformat() for name, moment in found.items()}
        click.echo(json.dumps(since, indent=2))
        return
    if not found:
        click.echo(f"no paused queues in {state.location}")
        return
    for name, moment in found.items():
        click.echo(f"{name}\tpaused since {moment.isoformat()}")
