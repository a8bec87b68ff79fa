"""``manage.py conveyor_process``: ``conveyor process`` on the project's app."""

from __future__ import annotations

from ..cli import ConveyorCommand


class Command(ConveyorCommand):
    help = "Run `conveyor process` on the app of settings.CONVEYOR['APP'] (options pass through)."
    conveyor_command = "process"
