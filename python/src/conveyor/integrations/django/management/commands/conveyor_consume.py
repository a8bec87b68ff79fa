"""``manage.py conveyor_consume``: ``conveyor consume`` on the project's app."""

from __future__ import annotations

from ..cli import ConveyorCommand


class Command(ConveyorCommand):
    help = "Run `conveyor consume` on the app of settings.CONVEYOR['APP'] (options pass through)."
    conveyor_command = "consume"
