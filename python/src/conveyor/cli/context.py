"""What every command shares: the app behind the global options, errors, consoles."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from ..app import DEFAULT_URL, Conveyor
from ..errors import ConfigurationError, ConveyorError
from ..locks import store_location
from ..urls import masked_url
from .discovery import load_app


class CliError(click.ClickException):
    """Shown as one red line on stderr (no traceback); exit code 1."""

    def show(self, file: Any = None) -> None:
        message = " ".join(self.format_message().split())
        click.secho(f"error: {message}", fg="red", err=True, file=file)


class ConveyorGroup(click.Group):
    """The root group: turns library errors into one-line messages with exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import DBAPIError

        try:
            return super().invoke(ctx)
        except ConveyorError as error:
            raise CliError(str(error)) from error
        except DBAPIError as error:
            state = ctx.find_object(CliState)
            app = state._app if state is not None else None
            where = f" on {masked_url(app.url)}" if app is not None else ""
            raise CliError(f"database error{where}: {error.orig}") from error


@dataclass
class CliState:
    """The global options; the app is built (or imported) on first use."""

    app_spec: str | None
    url: str | None
    log_format: str = "text"
    _app: Conveyor | None = field(default=None, repr=False)

    @property
    def app(self) -> Conveyor:
        """The app named by --app, else an app without handlers over --url."""
        if self._app is None:
            if self.app_spec:
                self._app = load_app(self.app_spec)
            else:
                self._app = Conveyor(self.url or DEFAULT_URL)
            click.get_current_context().call_on_close(self._app.close)
        return self._app

    def worker_app(self, command: str) -> Conveyor:
        """The app, for commands that run handlers: it must come from --app."""
        if not self.app_spec:
            raise ConfigurationError(
                f"`conveyor {command}` runs handlers, and none are registered: pass --app "
                "module:attribute (or set CONVEYOR_APP) naming your Conveyor app"
            )
        app = self.app
        if not any(True for _ in app.handlers):
            raise ConfigurationError(
                f"the app {self.app_spec} has no handlers registered, so `conveyor {command}` "
                "would fail every job; register handlers (@app.handler) when the module loads"
            )
        return app

    @property
    def location(self) -> str:
        """The store, as a URL safe to print."""
        return store_location(self.app)


pass_state = click.make_pass_decorator(CliState)


def out() -> Console:
    """A console on stdout; markup is off so job data is printed as is."""
    return Console(markup=False, highlight=False)


def err() -> Console:
    return Console(stderr=True, markup=False, highlight=False)


if TYPE_CHECKING:  # click >= 8.2 types ParamType by value; older versions are not generic
    _IntParam = click.ParamType[int, Any]
    _StrParam = click.ParamType[str, Any]
else:
    _IntParam = _StrParam = click.ParamType

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


class ByteSize(_IntParam):
    """Bytes, with an optional binary suffix: 1048576, 512K, 512M, 1G, 1.5GiB."""

    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.fullmatch(str(value))
        if not match:
            self.fail(f"{value!r} is not a size like 1048576, 512M or 1G", param, ctx)
        power = " kmgt".index(match[2].lower() or " ")
        return int(float(match[1]) * 1024**power)


class PriorityRangeType(_StrParam):
    """A priority range: N, A-B, A- or -B."""

    name = "range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from ..priority import PriorityRange

        try:
            PriorityRange.parse(str(value))
        except ConfigurationError as error:
            self.fail(str(error), param, ctx)
        return str(value)
