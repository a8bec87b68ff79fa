"""Mutant adapters: the reference adapter with exactly one rule broken.

Run ``python adapter.py MUTANT [--backend memory]``. Each mutant patches one behaviour of the
reference library (or of its adapter) before serving the protocol; the suite's own tests assert
that the conformance suite rejects every one of them, naming the requirement in ``MUTANTS``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

#: mutant name -> (what it breaks, the requirement the suite must name)
MUTANTS: dict[str, tuple[str, str]] = {
    "backoff-off-by-one": ("retry delays use the next attempt's delay", "RETRY-002"),
    "jitter-out-of-bounds": ("jittered delays may reach twice the upper bound", "RETRY-003"),
    "group-by-sequence": (
        "a serial group's head is the oldest job, ignoring priority",
        "GROUP-002",
    ),
    "group-ignores-lower-priority": (
        "a processing job with a higher priority number does not block its group",
        "GROUP-001",
    ),
    "waiting-counts-attempt": ("waiting keeps the attempt counted at claim", "OUT-004"),
    "unique-ignores-processing": (
        "a unique sibling that is processing does not block the next one",
        "UNIQ-003",
    ),
    "lease-never-expires": ("the rescuer never finds an expired lease", "LEASE-008"),
    "stale-report-accepted": ("reports are applied whatever token they carry", "LEASE-007"),
    "wall-clock": ("time comes from the wall clock, not the harness's clock", "TIME-001"),
    "stdout-noise": ("the adapter logs to stdout", "PROTO-002"),
    "invalid-transition-accepted": (
        "an event without a transition leaves the job as it is instead of being refused",
        "MACH-006",
    ),
    "dependencies-ignored": ("jobs run before their dependencies succeeded", "DEP-002"),
    "dependents-not-cancelled": ("a failed dependency does not cancel its dependents", "DEP-003"),
    "finished-at-not-stamped": ("terminal jobs keep finished_at null", "JOB-010"),
    "token-reused": ("every lease gets the same token", "LEASE-001"),
    "priority-ignored": ("claims take jobs in publish order only", "ORDER-002"),
    "heartbeat-ignored": ("a heartbeat does not extend the lease", "LEASE-004"),
    "payload-size-in-escapes": (
        "the payload limit counts JSON with \\u escapes, not bytes of UTF-8",
        "LIMIT-006",
    ),
    "priority-set-ignored": ("a configured priority set does not restrict publishing", "ORDER-003"),
    "pause-ignored": ("claims take jobs of paused queues", "PAUSE-001"),
    "worker-claims-after-die": (
        "the worker records a die's outcome but keeps claiming jobs",
        "OUT-006",
    ),
    "worker-drops-waiting-delay": (
        "the worker records waiting without the delay its handler gave",
        "OUT-004",
    ),
    "worker-retries-missing-handler": (
        "the worker retries a request type it has no handler for",
        "OUT-003",
    ),
    "worker-ignores-timeout": (
        "the worker lets a handler run past its job's timeout",
        "TIMEOUT-002",
    ),
}


def _wrap(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    setattr(owner, name, make(getattr(owner, name)))


def apply(mutant: str) -> None:
    from conveyor import conformance_adapter, engine, lifecycle, machine, retry
    from conveyor.store import memory

    if mutant == "backoff-off-by-one":
        _wrap(retry.RetryPolicy, "base_delay_ms", lambda f: lambda self, n: f(self, n + 1))
    elif mutant == "jitter-out-of-bounds":

        def bounds(original: Any) -> Any:
            def patched(self: Any, attempt: int) -> tuple[int, int]:
                low, high = original(self, attempt)
                return low, high * 2

            return patched

        _wrap(retry.RetryPolicy, "delay_bounds_ms", bounds)
    elif mutant in (
        "group-by-sequence",
        "group-ignores-lower-priority",
        "unique-ignores-processing",
        "dependencies-ignored",
    ):

        def facts(original: Any) -> Any:
            def patched(self: Any, job: Any) -> Any:
                candidate = original(self, job)
                if mutant == "dependencies-ignored":
                    return replace(candidate, dependencies_succeeded=True)
                if mutant == "unique-ignores-processing":
                    return replace(candidate, unique_sibling_processing=False)
                if job.serial_group is None:
                    return candidate
                group = [j for j in self._group(job) if j.id != job.id]
                if mutant == "group-by-sequence":
                    head = all(
                        j.sequence > job.sequence for j in group if j.state in self._states.active
                    )
                    return replace(candidate, serial_group_head=head)
                idle = not any(
                    j.state in self._states.leased and j.priority <= job.priority for j in group
                )
                return replace(candidate, serial_group_idle=idle)

            return patched

        _wrap(memory.MemoryTransaction, "facts", facts)
    elif mutant == "priority-ignored":

        def candidates(original: Any) -> Any:
            def patched(self: Any, query: Any, now: Any, limit: int) -> Any:
                found = list(original(self, query, now, limit))
                return iter(sorted(found, key=lambda c: c.job.sequence))

            return patched

        _wrap(memory.MemoryTransaction, "candidates", candidates)
    elif mutant in (
        "waiting-counts-attempt",
        "finished-at-not-stamped",
        "token-reused",
        "heartbeat-ignored",
    ):

        def init(original: Any) -> Any:
            def patched(self: Any, *args: Any, **kwargs: Any) -> None:
                original(self, *args, **kwargs)
                # An effect returns the fields it changes; the transitions are compiled from
                # the effects at load, so they are compiled again with the mutant's effect.
                effects = self._job_effects
                if mutant == "waiting-counts-attempt":
                    effects["refund_attempt"] = lambda job, firing: {}
                elif mutant == "finished-at-not-stamped":
                    effects["stamp_finished"] = lambda job, firing: {}
                elif mutant == "heartbeat-ignored":
                    effects["extend_lease"] = lambda job, firing: {}
                else:
                    grant = effects["grant_lease"]
                    effects["grant_lease"] = lambda job, firing: {
                        **grant(job, firing),
                        "lease_token": job.lease_token,
                    }
                self._compiled = {t.id: self._compile(t) for t in self.machine.transitions}

            return patched

        _wrap(engine.JobEngine, "__init__", init)
    elif mutant == "lease-never-expires":
        _wrap(
            lifecycle.Lifecycle,
            "rescue",
            lambda f: lambda self, tx, now, limit: lifecycle.Outcome(),
        )
    elif mutant == "dependents-not-cancelled":
        _wrap(
            lifecycle.Lifecycle,
            "_cancel_dependents",
            lambda f: lambda self, tx, job, now, out: None,
        )
    elif mutant == "stale-report-accepted":

        def report(original: Any) -> Any:
            def patched(
                self: Any, job_id: str, event: str, params: dict[str, Any], *a: Any, **k: Any
            ) -> Any:
                if "lease_token" in params:
                    current = self.get(job_id)
                    if current.lease is not None:
                        params = {**params, "lease_token": current.lease.token}
                return original(self, job_id, event, params, *a, **k)

            return patched

        from conveyor import app

        _wrap(app.Conveyor, "report", report)
    elif mutant == "wall-clock":
        from conveyor import clock

        def wall(self: Any) -> datetime:
            moment = datetime.now(UTC)
            return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)

        clock.ManualClock.now = wall  # type: ignore[method-assign]
        clock.ManualClock.set = lambda self, moment: None  # type: ignore[method-assign]
        clock.ManualClock.advance = lambda self, delta: wall(self)  # type: ignore[method-assign]
    elif mutant == "stdout-noise":

        def publish(original: Any) -> Any:
            def patched(self: Any, request: Any) -> Any:
                sys.__stdout__.write("publishing a job\n")
                sys.__stdout__.flush()
                return original(self, request)

            return patched

        _wrap(conformance_adapter.Session, "cmd_publish", publish)
    elif mutant == "invalid-transition-accepted":

        def select(original: Any) -> Any:
            def patched(self: Any, state: str, event: str, env: Any) -> Any:
                try:
                    return original(self, state, event, env)
                except machine.InvalidTransition:
                    if event in ("claim", "discard_redundant"):
                        raise  # a claim passes over what it cannot take
                    return machine.Transition(
                        "X", frozenset([state]), event, None, state, (), "MACH-006"
                    )

            return patched

        _wrap(machine.Machine, "select", select)
    elif mutant == "payload-size-in-escapes":
        import json

        from conveyor import codec

        def check_size(encoded: Any, path: str = "payload") -> None:
            size = len(json.dumps(encoded, separators=(",", ":")))  # ASCII, with \\u escapes
            if size > codec.MAX_PAYLOAD_BYTES:
                raise codec.PayloadTooLarge(f"{path} is {size} characters encoded")

        codec.check_size = check_size
    elif mutant == "priority-set-ignored":
        from conveyor import publishing

        def factory(original: Any) -> Any:
            def patched(self: Any, *args: Any, **kwargs: Any) -> None:
                original(self, *args, **kwargs)
                self.allowed_priorities = None

            return patched

        _wrap(publishing.JobFactory, "__init__", factory)
    elif mutant == "pause-ignored":

        def candidates(original: Any) -> Any:
            def patched(self: Any, *args: Any) -> Any:
                paused, self._data.paused = self._data.paused, {}
                try:
                    yield from original(self, *args)
                finally:
                    self._data.paused = paused

            return patched

        _wrap(memory.MemoryTransaction, "candidates", candidates)
    elif mutant in ("worker-claims-after-die", "worker-drops-waiting-delay"):
        from conveyor import execution

        def classify(original: Any) -> Any:
            def patched(error: BaseException) -> Any:
                report = original(error)
                if mutant == "worker-claims-after-die":
                    return replace(report, die=False)
                if report.event == "wait":
                    return replace(report, params={})
                return report

            return patched

        _wrap(execution, "classify", classify)
    elif mutant == "worker-retries-missing-handler":
        from conveyor import execution

        def prepare(original: Any) -> Any:
            def patched(self: Any, job: Any, index: int) -> Any:
                found = original(self, job, index)
                if job.requests[index].type not in self.host.handlers:
                    return execution.Report("fail_temporarily", found.params)
                return found

            return patched

        _wrap(execution.JobRunner, "_prepare", prepare)
    elif mutant == "worker-ignores-timeout":
        from conveyor import execution, worker

        worker.timeout_of = execution.timeout_of = lambda job: None
    else:
        raise SystemExit(f"unknown mutant {mutant!r}; one of {', '.join(MUTANTS)}")


def main() -> int:
    if len(sys.argv) < 2:
        raise SystemExit("usage: adapter.py MUTANT [adapter options]")
    mutant, rest = sys.argv[1], sys.argv[2:]
    apply(mutant)
    from conveyor.conformance_adapter import main as serve

    return serve(rest or ["--backend", "memory"])


if __name__ == "__main__":
    raise SystemExit(main())
