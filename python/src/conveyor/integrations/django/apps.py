"""The Django app: ``INSTALLED_APPS = [..., "conveyor.integrations.django"]``."""

from __future__ import annotations

from django.apps import AppConfig


class ConveyorConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    """Makes the ``conveyor_consume``, ``conveyor_process`` and ``conveyor_status``
    management commands available; it has no models (the store keeps its own tables)."""

    name = "conveyor.integrations.django"
    label = "conveyor"
    verbose_name = "Conveyor"
