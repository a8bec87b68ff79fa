"""``web``: serve the HTTP API and the dashboard (needs the ``web`` extra)."""

from __future__ import annotations

import click

from ..context import CliError, CliState, pass_state


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--read-only", is_flag=True, help="Refuse every action; show figures only.")
@click.option(
    "--show-payloads", is_flag=True, help="Show payloads and metadata (hidden by default)."
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How often pages refresh their figures (0: never).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="A host name the interface answers to besides 127.0.0.1 and localhost (repeatable; "
    "'*' for any). Without credentials only loopback names are answered (DNS rebinding).",
)
@pass_state
def web(
    state: CliState,
    host: str,
    port: int,
    read_only: bool,
    show_payloads: bool,
    refresh: float,
    allowed_hosts: tuple[str, ...],
) -> None:
    """Serve the JSON API and the dashboard on http://HOST:PORT.

    Listening beyond 127.0.0.1 needs authentication, from the environment:
    CONVEYOR_WEB_TOKEN (API clients: Authorization: Bearer TOKEN) and/or CONVEYOR_WEB_USER
    with CONVEYOR_WEB_PASSWORD (browsers: HTTP basic).
    """
    try:
        import uvicorn

        from ...web import WebSettings, check_bind, create_app
    except ImportError as error:
        raise CliError(
            f"conveyor web needs the web extra ({error.name} is missing): "
            "pip install 'conveyor-queue[web]'"
        ) from None
    settings = WebSettings.from_env(
        read_only=read_only,
        show_payloads=show_payloads,
        refresh_seconds=refresh,
        allowed_hosts=allowed_hosts,
    )
    check_bind(host, settings)
    app = create_app(state.app, settings)
    click.echo(f"Conveyor web on http://{host}:{port}/ for {state.location}")
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
