"""The job machine's claim transition, read once from the machine file as a plan a store can
compile into SQL (``Transaction.claim_planned``: one statement on PostgreSQL).

A worker's claim fires the same transition on every job it takes. Fired in Python, each job
is read into a record, run through the machine and its changed columns encoded and written
back: about half of a no-op job's cost in a worker. A store that can express the transition's
effects in SQL writes them in the claim's own statement instead. The plan says what the file
says (sources, target, guard, effects in order, the current request's event); which SQL each
effect becomes is the store's, and a store declines a plan naming an effect it does not know.
"""

from __future__ import annotations

from .engine import JobEngine
from .machine import Transition
from .store.base import ClaimPlan, RequestStep

CLAIM_EVENT = "claim"


def claim_plan(engine: JobEngine) -> ClaimPlan | None:
    """The plan of the machine's claim, or None when the claim cannot be applied as a plan:
    several transitions for the event (the choice between them is the guards'), system
    effects (they reach other rows), or request effects other than one event on the current
    request, fired by a single unguarded request transition."""
    machine = engine.machine
    claims = [t for t in machine.transitions if t.event == CLAIM_EVENT]
    if len(claims) != 1:
        return None
    [transition] = claims
    split = split_effects(engine, transition)
    if split is None or split[2]:  # system effects reach other rows
        return None
    job_effects, request, _ = split
    return ClaimPlan(
        transition=transition.id,
        sources=transition.sources,
        target=transition.target,
        guard=transition.guard,
        effects=job_effects,
        request=request,
    )


def split_effects(
    engine: JobEngine, transition: Transition
) -> tuple[tuple[str, ...], RequestStep | None, tuple[str, ...]] | None:
    """A transition's job effects (the one firing the current request's event included),
    what that event does to the current request, and its system effects; None when its
    request effects are more than one event on the current request."""
    machine = engine.machine
    job_effects: list[str] = []
    system: list[str] = []
    request: RequestStep | None = None
    for name in transition.effects:
        effect = machine.effects[name]
        if effect.scope == "system":
            system.append(name)
            continue
        if effect.request_event is not None:
            # Any other scope than all unfinished requests is the current request's
            # (engine.py); ``abandon`` records an error of the job's own.
            if request is not None or effect.scope == "all_unfinished":
                return None
            if effect.request_event == "abandon":
                return None
            request = request_step(engine, name, effect.request_event)
            if request is None:
                return None
        job_effects.append(name)
    return tuple(job_effects), request, tuple(system)


def request_step(engine: JobEngine, via: str, event: str) -> RequestStep | None:
    """What ``event`` does to the current request, when the request machine says it in one
    unguarded transition (and refuses nothing); else None."""
    machine = engine.requests.machine
    if machine.refusals:
        return None
    steps = [t for t in machine.transitions if t.event == event]
    if len(steps) != 1 or steps[0].guard is not None:
        return None
    [step] = steps
    return RequestStep(via, event, step.sources, step.target, step.effects)
