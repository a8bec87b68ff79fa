"""The job machine's success on a job's last request, read once from the machine file as a
plan a store can compile into SQL (``Transaction.finish_planned``: one statement on
PostgreSQL).

A worker's outcomes are mostly successes of plain jobs with one request. Fired in Python,
each is run through the machine (its guards choose among the ``succeed`` transitions) and
its changed columns encoded and written back: about a quarter of a no-op job's cost in a
worker. On the last request the choice is fixed by the file: every other ``succeed``
transition needs more requests to remain, so the lease holder's report selects the one
that finishes the job. A store that can express that transition's effects in SQL writes
them for a whole batch in one statement, under the guard's condition, and the reports it
could not write go to the machine as before. The plan says what the file says; which SQL
each effect becomes is the store's, which declines a plan naming an effect it does not know.
"""

from __future__ import annotations

from typing import Any

from .claimplan import split_effects
from .engine import JobEngine
from .store.base import FinishPlan

FINISH_EVENT = "succeed"
# The guard of the finishing transition, as the file writes it: the report's token is the
# lease's (fencing). A store writes it as a condition on the row.
LEASE_HOLDER: dict[str, Any] = {"eq": ["event.lease_token", "job.lease.token"]}
# What every other ``succeed`` transition's guard must require, so that it cannot be chosen
# on the last request.
MORE_REQUESTS: dict[str, Any] = {"gt": ["job.requests_remaining", 1]}


def finish_plan(engine: JobEngine) -> FinishPlan | None:
    """The plan of the machine's success on the last request, or None when it cannot be a
    plan: not exactly one ``succeed`` transition guarded by the lease holder alone, another
    ``succeed`` transition that could be chosen on the last request, or request effects
    other than one event on the current request."""
    machine = engine.machine
    succeeds = [t for t in machine.transitions if t.event == FINISH_EVENT]
    finishing = [
        t for t in succeeds if t.guard is not None and machine.guards[t.guard] == LEASE_HOLDER
    ]
    if len(finishing) != 1:
        return None
    [transition] = finishing
    for other in succeeds:
        if other is transition or other.sources.isdisjoint(transition.sources):
            continue
        guard = machine.guards.get(other.guard) if other.guard is not None else None
        if not (isinstance(guard, dict) and MORE_REQUESTS in guard.get("and", ())):
            return None
    split = split_effects(engine, transition)
    if split is None:
        return None
    job_effects, request, system = split
    if request is None:
        return None
    return FinishPlan(
        transition=transition.id,
        sources=transition.sources,
        target=transition.target,
        effects=job_effects,
        request=request,
        system=system,
    )
