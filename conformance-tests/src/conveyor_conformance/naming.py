"""Job ids in failure messages, shown by the names a trace gives them instead of raw ids.

An implementation's ids (``"3"``, a UUID) mean nothing to the reader of a vector, whose steps
call the jobs ``a`` and ``b`` (or ``j1``, ``j2`` in a saved stateful trace). A message therefore
shows every id in the vector's notation, ``{"$job": "a"}``, and an id the trace never bound (a
job the implementation published by itself, or one it should not have) as ``{"$job": "~1"}``,
numbered in the order the message meets them, as the model numbers the jobs it expects the
implementation to create.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Members whose string value is a job id (``depends_on``: each of its items).
ID_KEYS = frozenset({"id", "job", "depends_on", "after"})
BATCH_KEYS = frozenset({"batch_id", "batch"})
_LAST_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[\d+\])*$")


class IdNames:
    """Implementation id -> the name a trace uses, with ``~N`` for ids it never bound."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}
        self.batches: dict[str, str] = {}
        self.unbound: dict[str, str] = {}

    def bind(self, kind: str, name: str, value: Any) -> None:
        if isinstance(value, str):
            (self.batches if kind == "batch" else self.jobs)[value] = name

    def job(self, job_id: Any) -> str:
        """The name of a job id: its alias, or ``~N`` the first time an unbound id shows."""
        key = str(job_id)
        if key in self.jobs:
            return self.jobs[key]
        if key not in self.unbound:
            self.unbound[key] = f"~{len(self.unbound) + 1}"
        return self.unbound[key]

    def ref(self, job_id: Any) -> dict[str, str]:
        return {"$job": self.job(job_id)}

    def show(self, value: Any, key: str | None = None) -> Any:
        """``value`` with every id member written as the trace names it."""
        if isinstance(value, str):
            if key in BATCH_KEYS and value in self.batches:
                return {"$batch": self.batches[value]}
            if key == "id" and value in self.batches:
                return {"$batch": self.batches[value]}
            if key in ID_KEYS:
                return self.ref(value)
            return value
        if isinstance(value, dict):
            batch = key == "batch"  # a batch document: its id is a batch's
            return {
                k: self.show(v, "batch_id" if batch and k == "id" else k) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.show(v, key if key == "depends_on" else None) for v in value]
        return value

    def show_at(self, value: Any, path: str) -> Any:
        """``value`` found at a mismatch path such as ``jobs[0].id`` or ``depends_on[1]``."""
        found = _LAST_KEY.search(path.rsplit(".", 1)[-1]) if path else None
        return self.show(value, found.group(1) if found else None)

    def ids(self) -> dict[str, str]:
        """Name -> implementation id, for the report's trace (to find a job in its logs)."""
        out = {name: job_id for job_id, name in self.jobs.items()}
        out.update({name: job_id for job_id, name in self.unbound.items()})
        return out


def short(value: Any, limit: int = 300) -> str:
    """Compact JSON, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
