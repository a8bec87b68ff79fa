"""The publisher relies on pika's BlockingChannel._impl, so pika is bounded to the tested range
(pyproject.toml) and a pika without it is refused with that range, not an AttributeError."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from conveyor.broker.amqp import _async_channel
from conveyor.errors import ConfigurationError

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


class ChannelWithoutImpl:
    is_open = True


def test_a_pika_without_the_async_channel_is_refused_with_the_tested_range() -> None:
    with pytest.raises(ConfigurationError, match=r"pika >=1\.3,<1\.5.*conveyor-queue\[amqp\]"):
        _async_channel(ChannelWithoutImpl())


def test_the_installed_pika_is_in_the_bounded_range_of_the_extra() -> None:
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    major, minor = (int(part) for part in metadata.version("pika").split(".")[:2])

    assert extras["amqp"] == ["pika>=1.3,<1.5"]
    assert (1, 3) <= (major, minor) < (1, 5)
