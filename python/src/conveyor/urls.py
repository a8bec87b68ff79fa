"""Choosing a store from a URL: ``memory://`` or any SQLAlchemy database URL."""

from __future__ import annotations

from .store.base import StateSets, Store


def open_store(url: str, states: StateSets, table_prefix: str = "conveyor_") -> Store:
    if url.startswith("memory:"):
        from .store.memory import MemoryStore

        return MemoryStore(states)
    from .store.sql.store import SqlStore

    return SqlStore(url, states, table_prefix)
