"""The ``conveyor`` command line: workers, upkeep and inspection over any store.

Global options name the app (``--app module:attribute``, or ``CONVEYOR_APP``) or, without
one, the store (``--url``, or ``CONVEYOR_URL``). A command's options can also be set from
the environment as ``CONVEYOR_<COMMAND>_<OPTION>`` (click's ``auto_envvar_prefix``), e.g.
``CONVEYOR_CONSUME_PRIORITIES=20-40``; a flag given on the command line wins.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from .. import __version__
from ..app import DEFAULT_URL
from ..specfiles import spec_version
from .commands.demo import demo
from .commands.inspect import jobs, schedules, status
from .commands.maintenance import clear_finished, update_schema
from .commands.queues import queues
from .commands.web import web
from .commands.worker import consume, process, reload_consumers
from .context import CliState, ConveyorGroup, err

__all__ = ["cli", "main"]

EPILOG = (
    "A command's options can also come from the environment as "
    "CONVEYOR_<COMMAND>_<OPTION>, e.g. CONVEYOR_CONSUME_PRIORITIES=20-40 or "
    "CONVEYOR_JOBS_LIST_LIMIT=10."
)


@click.group(
    cls=ConveyorGroup,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "CONVEYOR"},
)
@click.option(
    "--app",
    "app_spec",
    envvar="CONVEYOR_APP",
    show_envvar=True,
    metavar="MODULE:ATTR",
    help="Your Conveyor app (or a zero-argument factory of one), e.g. myproject.jobs:app.",
)
@click.option(
    "--url",
    envvar="CONVEYOR_URL",
    show_envvar=True,
    metavar="URL",
    help=f"Store to work on when no --app is given (default {DEFAULT_URL}).",
)
@click.option("-v", "--verbose", count=True, help="Log more: -v for info, -vv for debug.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="CONVEYOR_LOG_FORMAT",
    show_envvar=True,
    help="json: logs and the per-job lines of consume/process as JSON lines on stderr "
    "(job_id, type, attempt, duration_ms, outcome).",
)
@click.version_option(
    __version__, "--version", message=f"conveyor %(version)s (spec {spec_version()})"
)
@click.pass_context
def cli(
    ctx: click.Context, app_spec: str | None, url: str | None, verbose: int, log_format: str
) -> None:
    """Conveyor: background jobs. Run workers, look at jobs, keep the store tidy."""
    if log_format == "json":
        from ..logs import use_json_logs

        use_json_logs({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))
    elif verbose:
        logging.basicConfig(
            level=logging.INFO if verbose == 1 else logging.DEBUG,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    if (
        app_spec
        and url
        and ctx.get_parameter_source("url") == click.core.ParameterSource.COMMANDLINE
    ):
        err().print("note: --url is ignored: the app named by --app has its own store")
    ctx.obj = CliState(app_spec=app_spec or None, url=url or None, log_format=log_format)


for command in (
    demo,
    consume,
    process,
    reload_consumers,
    clear_finished,
    update_schema,
    status,
    jobs,
    schedules,
    queues,
    web,
):
    cli.add_command(command)


def main(args: list[str] | None = None) -> Any:
    """The ``conveyor`` entry point."""
    return cli.main(args=args, prog_name="conveyor")
