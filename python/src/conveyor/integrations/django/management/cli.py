"""Management commands that run a ``conveyor`` CLI command on the project's app."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from .. import app_spec, database_url


class ConveyorCommand(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    """``manage.py conveyor_NAME [options]`` is ``conveyor --app APP NAME [options]``, with the
    app from ``CONVEYOR["APP"]`` (else the default database as the store)."""

    conveyor_command = ""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.add_argument("conveyor_args", nargs=argparse.REMAINDER)
        return parser

    def run_from_argv(self, argv: list[str]) -> None:
        # The conveyor command's own options (--queue, --help, ...) are passed through as
        # they are instead of being parsed by Django.
        self.execute_conveyor(argv[2:])

    def handle(self, *args: Any, **options: Any) -> None:
        self.execute_conveyor(list(options.get("conveyor_args") or []))

    def execute_conveyor(self, arguments: list[str]) -> None:
        from ....cli import cli

        spec = app_spec()
        head = ["--app", spec] if spec else ["--url", database_url()]
        try:
            cli.main(
                args=[*head, self.conveyor_command, *arguments],
                prog_name="conveyor",
                standalone_mode=False,
            )
        except SystemExit as stop:
            if stop.code not in (0, None):
                raise CommandError(
                    f"conveyor {self.conveyor_command} exited with {stop.code}"
                ) from None
        except Exception as error:
            import click

            if isinstance(error, click.ClickException):
                raise CommandError(error.format_message()) from error
            raise
