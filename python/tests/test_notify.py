"""Notifiers: the SMTP notifier against a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from conveyor import Conveyor, PermanentError, RetryPolicy, SmtpNotifier, TemporaryError


class Inbox:
    """An aiosmtpd handler that keeps every delivered message."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def test_smtp_notifier_mails_when_a_job_fails_for_good(inbox: tuple[Inbox, int]) -> None:
    """RETRY-007: a job that fails for good produces one e-mail naming it and its error."""
    handler, port = inbox
    notifier = SmtpNotifier("127.0.0.1", port, "queue@example.test", ("ops@example.test",))
    app = Conveyor("memory://", notifier=notifier)

    @app.handler("charge")
    def charge(order: int) -> None:
        raise PermanentError(f"card declined for order {order}")

    job = app.publish("charge", {"order": 7})
    app.process()

    assert len(handler.messages) == 1
    mail = handler.messages[0]
    assert mail["To"] == "ops@example.test"
    assert f"job {job.id}" in mail["Subject"]
    assert "card declined for order 7" in mail.get_payload(decode=True).decode()


def test_threshold_notification_is_sent_once_at_notify_after(
    inbox: tuple[Inbox, int], clock: Any
) -> None:
    """RETRY-006: the notifier hears about a still-failing job exactly when attempts reach it."""
    handler, port = inbox
    notifier = SmtpNotifier("127.0.0.1", port, "queue@example.test", ("ops@example.test",))
    policy = RetryPolicy("constant", 1000, 1000, notify_after=2)
    app = Conveyor("memory://", notifier=notifier, clock=clock, default_retry=policy)
    app.register("flaky", lambda: (_ for _ in ()).throw(TemporaryError("upstream down")))
    app.publish("flaky")

    for _ in range(4):
        app.process()
        clock.advance(2)

    assert [m["Subject"].endswith("still failing") for m in handler.messages] == [True]


def test_logging_notifier_is_the_default(caplog: pytest.LogCaptureFixture) -> None:
    """Without configuration a failure is logged at ERROR on conveyor.notify."""
    app = Conveyor("memory://")
    app.register("broken", lambda: (_ for _ in ()).throw(PermanentError("no")))
    app.publish("broken")

    with caplog.at_level(logging.ERROR, logger="conveyor.notify"):
        app.process()

    assert any("ended permanently_failed" in r.getMessage() for r in caplog.records)
