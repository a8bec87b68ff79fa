"""SQL store over SQLAlchemy Core."""

from .store import SqlStore, SqlTransaction

__all__ = ["SqlStore", "SqlTransaction"]
