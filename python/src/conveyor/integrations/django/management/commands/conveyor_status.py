"""``manage.py conveyor_status``: ``conveyor status`` on the project's app."""

from __future__ import annotations

from ..cli import ConveyorCommand


class Command(ConveyorCommand):
    help = "Run `conveyor status` on the app of settings.CONVEYOR['APP'] (options pass through)."
    conveyor_command = "status"
