"""Locks that stores build their own on: in this process, on a file, and expiring names.

A command lock must go away with its process, so that a crashed process never leaves a stale
lock behind (unlike a PID file): a lock in this process's memory for stores that live in it,
``fcntl.flock`` (``msvcrt.locking`` on Windows) on a file next to a database file.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from ..errors import AlreadyRunning

MAX_LOCK_NAME = 255

_held_in_process: set[str] = set()
_held_guard = threading.Lock()


def lock_name(name: str) -> str:
    """Names longer than a lock table's column holds are replaced by a digest of themselves."""
    if len(name) <= MAX_LOCK_NAME:
        return name
    return "sha256:" + hashlib.sha256(name.encode("utf-8")).hexdigest()


def safe_file_part(text: str) -> str:
    """``text`` as part of a file name: anything but letters, digits, ``_.-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "_"


class ExpiringLocks:
    """Named locks with an expiry, in this process (the memory store's locks)."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()

    def acquire(self, name: str, now: datetime, expires_at: datetime) -> str | None:
        name = lock_name(name)
        with self._lock:
            held = self._held.get(name)
            if held is not None and held[1] > now:
                return None
            token = uuid.uuid4().hex
            self._held[name] = (token, expires_at)
            return token

    def release(self, name: str, token: str) -> None:
        name = lock_name(name)
        with self._lock:
            held = self._held.get(name)
            if held is not None and held[0] == token:
                del self._held[name]

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


@contextmanager
def process_lock(key: str, busy: str) -> Iterator[None]:
    """Hold ``key`` among the threads of this process; AlreadyRunning(busy) when taken."""
    with _held_guard:
        if key in _held_in_process:
            raise AlreadyRunning(busy)
        _held_in_process.add(key)
    try:
        yield
    finally:
        with _held_guard:
            _held_in_process.discard(key)


def _try_lock_file(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock_file(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def file_lock(path: str, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the file at ``path``; AlreadyRunning(busy) when taken."""
    # The file stays in place: deleting it would let a third process lock a new inode
    # while a second one still holds the old one. It holds the holder's pid, for messages.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock_file(fd):
            holder = _read_pid(fd)
            raise AlreadyRunning(f"{busy} (pid {holder}, lock file {path})" if holder else busy)
        try:
            _write_pid(fd, f"{os.getpid()}\n")
            yield
        finally:
            _write_pid(fd, "")
            _unlock_file(fd)
    finally:
        os.close(fd)


def _read_pid(fd: int) -> str:
    if sys.platform == "win32":
        return ""  # the locked byte cannot be read on Windows
    return os.pread(fd, 32, 0).decode("ascii", "replace").strip()


def _write_pid(fd: int, text: str) -> None:
    if sys.platform != "win32":
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("ascii"), 0)
