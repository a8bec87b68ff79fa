"""Notifiers: told when a job reaches its retry policy's notify threshold or fails for good."""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from .failures import LOG_LIMIT, cut
from .model import Job

log = logging.getLogger("conveyor.notify")


class Notifier(Protocol):
    def notify(self, kind: str, job: Job) -> None:
        """``kind`` is ``threshold`` (still retrying) or ``failed`` (ended for good)."""
        ...


def describe(kind: str, job: Job) -> str:
    error = cut(job.last_error.message, LOG_LIMIT) if job.last_error else "no error recorded"
    types = ", ".join(r.type for r in job.requests)
    if kind == "threshold":
        return (
            f"job {job.id} ({types}) has failed {job.attempts} times and is still being "
            f"retried; last error: {error}"
        )
    return f"job {job.id} ({types}) ended {job.state} after {job.attempts} attempts: {error}"


class LoggingNotifier:
    """The default: a warning (threshold) or error (failed) on the ``conveyor.notify`` logger."""

    def notify(self, kind: str, job: Job) -> None:
        level = logging.WARNING if kind == "threshold" else logging.ERROR
        log.log(level, describe(kind, job), extra={"job_id": job.id, "notification": kind})


@dataclass
class SmtpNotifier:
    """Sends one e-mail per notification through an SMTP server (standard library only)."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0

    def notify(self, kind: str, job: Job) -> None:
        message = EmailMessage()
        label = "still failing" if kind == "threshold" else "failed"
        message["Subject"] = f"[conveyor] job {job.id} {label}"
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(describe(kind, job) + "\n")
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username is not None:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)
