"""Callables an app runs around jobs, shared by every runner of the app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .model import Job


@dataclass
class Hooks:
    """Callables run around jobs; a hook that raises is logged and ignored (except before)."""

    before: list[Callable[[Job], Any]] = field(default_factory=list)
    after: list[Callable[[Job], Any]] = field(default_factory=list)
    error: list[Callable[[Job, BaseException], Any]] = field(default_factory=list)
    metadata: list[Callable[[Job], dict[str, Any] | None]] = field(default_factory=list)
