"""Fixtures of the bus tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conveyor import Conveyor

from .support import drop_lock_table


@pytest.fixture
def e2e_app(app: Conveyor) -> Iterator[Conveyor]:
    """The parametrised app; the bus's lock table is dropped afterwards."""
    yield app
    drop_lock_table(app)
