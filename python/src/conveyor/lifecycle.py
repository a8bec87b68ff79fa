"""Every operation on jobs, as transitions fired inside one store transaction.

This is the single place where jobs change state: it asks the engine for the transition,
writes the result conditionally, and carries out the machine's system effects (dependents,
recurrence, batches) in the same transaction. Notifications are returned, to be sent after
the commit.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from .claimplan import claim_plan
from .counting import LEASE_RESCUES, by_queue
from .engine import Fired, Firing, JobEngine
from .errors import (
    BatchClosed,
    InvalidRequest,
    InvalidTransition,
    JobNotFound,
    Refused,
    SpecError,
    StaleLease,
    UnknownDependency,
)
from .finishplan import FINISH_EVENT, finish_plan
from .machine import Environment, Machine
from .model import Batch, Job, Request, replace
from .results import check_result
from .specfiles import machine_document
from .store.base import (
    Candidate,
    ClaimQuery,
    PlannedClaim,
    StateSets,
    Store,
    Transaction,
    UniqueClaim,
    claim_expiry,
    rate_window,
)

# The conflicts of publishes that stored their job (UKEY-008), besides no conflict.
_STORED = (None, "kept")
# What a `replace` conflict changes on the holder (UKEY-005).
_REPLACED_FIELDS = frozenset({"requests", "priority", "available_at", "updated_at"})


@dataclass(frozen=True)
class Notification:
    """Sent to the notifier after commit: ``kind`` is ``threshold`` or ``failed``."""

    kind: str
    job: Job


@dataclass
class Outcome:
    """What an operation changed, for the caller: jobs and pending notifications."""

    jobs: list[Job] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    # A claim's jobs as they were before it (by id): broker mode tells from them whether a job
    # had a message of its own (spec.md#BROKER-010).
    claimed_from: MutableMapping[str, Job] = field(default_factory=dict)
    # (ended jobs, their dependents) where the writes read them in passing
    # (Transaction.dependents_read): broker mode then needs no lookup of its own for them, and
    # an idle worker knows whether the outcomes freed a dependant (Claimed.may_free).
    dependents_read: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


def state_sets(machine: Machine) -> StateSets:
    succeeded, leased = machine.tagged("succeeded"), machine.tagged("leased")
    return StateSets(
        claimable=machine.tagged("claimable"),
        active=machine.tagged("active"),
        leased=leased,
        succeeded=succeeded,
        terminal=machine.tagged("terminal"),
        prunable=machine.tagged("prunable"),
        unfinished=machine.tagged("unfinished"),
        performed=frozenset(
            t.target for t in machine.transitions if t.target in succeeded and t.sources & leased
        ),
    )


class BatchEngine:
    def __init__(self) -> None:
        self.machine = Machine(machine_document("batch"))
        self.machine.require_effects({"count_jobs", "stamp_finished", "publish_completion"})

    def fire(
        self, batch: Batch, event: str, now: datetime, unsettled: int, count: int = 0
    ) -> tuple[Batch, bool]:
        """The new batch, and whether its completion job must be published."""
        view = {"unsettled": unsettled, "total": batch.total}
        env = Environment({"now": now, "batch": view, "event": {"count": count}, "ctx": {}})
        try:
            transition = self.machine.select(batch.state, event, env)
        except InvalidTransition as error:
            if event == "add":
                raise BatchClosed(
                    f"batch {batch.id} is {batch.state}; jobs can only be added while it is open"
                ) from error
            raise
        changed = batch
        for name in transition.effects:
            if name == "count_jobs":
                changed = replace(changed, total=changed.total + count)
            elif name == "stamp_finished":
                changed = replace(changed, finished_at=now)
        return replace(changed, state=transition.target), "publish_completion" in transition.effects


# The fields of a worker's report a planned finish writes as they are (execution.py's
# ``Performed.update``); a report setting any other field fires the machine.
PLANNED_FIELDS = frozenset({"execution", "metadata", "result"})


class Lifecycle:
    def __init__(self, engine: JobEngine, waiting_delay_ms: int = 1000) -> None:
        self.engine = engine
        self.batches = BatchEngine()
        self.states = state_sets(engine.machine)
        self.claim_plan = claim_plan(engine)
        self.finish_plan = finish_plan(engine)
        self.failed = engine.machine.tagged("failed")
        self.waiting_delay_ms = waiting_delay_ms
        self._system = {
            "notify_threshold": self._notify_threshold,
            "notify_failure": self._notify_failure,
            "cancel_dependents": self._cancel_dependents,
            "recheck_dependencies": self._recheck_dependencies,
            "republish_recurring": self._republish_recurring,
            "settle_batch": self._settle_batch,
        }
        missing = engine.system_effect_names - set(self._system)
        if missing:
            raise SpecError(
                f"the job machine names system effects this implementation lacks: "
                f"{sorted(missing)}; upgrade conveyor to a version that supports this spec"
            )

    # -- publishing -----------------------------------------------------------------------

    def publish(self, tx: Transaction, jobs: Sequence[Job], now: datetime) -> Outcome:
        """Insert new jobs (already validated) and apply the rules that depend on others."""
        outcome = Outcome()
        dependency_ids = {d for job in jobs for d in job.depends_on}
        known = {job.id: job for job in tx.get_jobs(dependency_ids)} if dependency_ids else {}
        unknown = dependency_ids - set(known)
        if unknown:
            raise UnknownDependency(
                f"depends_on names jobs that do not exist: {sorted(unknown)}; publish those "
                "first, and pass the ids publish returned"
            )
        for batch_id in {job.batch_id for job in jobs if job.batch_id is not None}:
            self._get_batch(tx, batch_id)  # not_found before anything is stored
        stored = self._insert(tx, jobs, now) if any(j.unique_key for j in jobs) else None
        if stored is None:
            stored = tx.insert_jobs(jobs)
        outcome.jobs.extend(stored)
        batch_counts: dict[str, int] = {}
        for job in stored:
            if job.batch_id is not None and job.conflict in _STORED:
                batch_counts[job.batch_id] = batch_counts.get(job.batch_id, 0) + 1
        for batch_id, count in batch_counts.items():
            batch = self._get_batch(tx, batch_id)
            changed, _ = self.batches.fire(batch, "add", now, unsettled=1, count=count)
            tx.save_batch(changed)
        for job in stored:
            if job.conflict not in _STORED:
                continue
            if any(known[d].state in self.failed for d in job.depends_on):
                self._recheck_dependencies(tx, job, now, outcome)
        # DEP-005: return each job as stored, cancelled when a dependency had failed.
        latest = {job.id: job for job in outcome.jobs[len(stored) :]}
        outcome.jobs[: len(stored)] = [
            latest.get(job.id, job) if job.conflict in _STORED else job for job in stored
        ]
        return outcome

    @staticmethod
    def publish_alone(store: Store, job: Job) -> Outcome | None:
        """:meth:`publish` of one job that no rule reads another row for (no dependencies,
        batch or unique key), by the store's self-committing insert where it has one; None
        otherwise, and the caller publishes in a transaction."""
        if job.depends_on or job.batch_id is not None or job.unique_key:
            return None
        stored = store.insert_alone(job)
        return None if stored is None else Outcome(jobs=[stored])

    def _insert(self, tx: Transaction, jobs: Sequence[Job], now: datetime) -> list[Job]:
        """Insert jobs in order, each job with a unique key only when its key's claim is not
        held (UKEY-004, UKEY-006); in place of a conflicting job, its key's holder."""
        result: list[Job] = []
        plain: list[Job] = []
        for job in jobs:
            if job.unique_key is None:
                plain.append(job)
                continue
            result.extend(tx.insert_jobs(plain))
            plain.clear()
            result.append(self._publish_unique(tx, job, now))
        result.extend(tx.insert_jobs(plain))
        return result

    def _publish_unique(self, tx: Transaction, job: Job, now: datetime) -> Job:
        uniqueness = job.uniqueness or {}
        claim = tx.lock_unique_claim(job.unique_key or "")
        holder = tx.get_job(claim.job_id) if claim.job_id is not None else None
        if claim.held(now, holder.state if holder else None):
            if uniqueness.get("conflict") == "keep":  # UKEY-008: unique mode decides at claim
                [kept] = tx.insert_jobs([job])
                return replace(kept, conflict="kept")
            if holder is None:  # pruned: it counts as finished (UKEY-003)
                return replace(job, id=claim.job_id, state="finished", conflict="discarded")
            if (
                uniqueness.get("conflict") == "replace"
                and holder.state == self.engine.machine.initial_state
                and holder.attempts == 0
            ):  # UKEY-005
                changed = replace(
                    holder,
                    requests=job.requests,
                    priority=job.priority,
                    available_at=job.available_at,
                    updated_at=now,
                )
                if tx.save_job(holder, changed, _REPLACED_FIELDS):
                    return replace(changed, conflict="replaced")
            return replace(holder, conflict="discarded")
        [stored] = tx.insert_jobs([job])
        tx.hold_unique_claim(
            UniqueClaim(
                key=claim.key,
                job_id=stored.id,
                expires_at=claim_expiry(now, uniqueness.get("period_ms")),
                states=frozenset(uniqueness.get("states", ())),
            )
        )
        return stored

    # -- claiming -------------------------------------------------------------------------

    def claim(
        self,
        tx: Transaction,
        query: ClaimQuery,
        worker_id: str,
        lease_ms: int,
        limit: int,
        now: datetime,
        skip: Collection[str] = frozenset(),
    ) -> Outcome:
        """Claim up to ``limit`` jobs in claim order, passing over the jobs in ``skip`` (a
        worker's jobs whose outcomes this transaction just recorded: one that became due
        again at once lets the jobs already waiting go first)."""
        outcome = Outcome()
        params = {"worker_id": worker_id, "lease_ms": lease_ms}
        due_by = now if query.due_by is None else min(query.due_by, now)
        planned = self._claim_planned(tx, query, now, due_by, params, limit, skip)
        if planned is not None:
            outcome.jobs.extend(planned.jobs)
            # each read only if asked for (broker mode asks for a few); a ChainMap writes
            # only into its first map, so the second need not be mutable
            before = cast("MutableMapping[str, Job]", planned.before)
            outcome.claimed_from = ChainMap(outcome.claimed_from, before)
            if planned.complete:
                return outcome
        taken = len(outcome.jobs)
        self._claim_fired(tx, query, params, limit, now, due_by, skip, outcome)
        if 0 < taken < len(outcome.jobs):  # the planned claim's and the others, in order
            outcome.jobs.sort(key=lambda job: (job.priority, job.sequence))
        return outcome

    def _claim_fired(
        self,
        tx: Transaction,
        query: ClaimQuery,
        params: Mapping[str, Any],
        limit: int,
        now: datetime,
        due_by: datetime,
        skip: Collection[str],
        outcome: Outcome,
    ) -> None:
        """The claim, firing the machine on each candidate, up to ``limit`` jobs in
        ``outcome`` (which may hold jobs claimed already)."""
        side = Outcome()  # jobs touched by system effects are not claims
        busy_groups: set[str] = set()
        busy_identifiers: set[str] = set()
        again = True
        # Look again after a pass that discarded a redundant job (it frees nothing for the
        # limit), or that passed over jobs while claiming others: a unique sibling of a job
        # claimed in this pass took a fetched row, and must not hold back later jobs
        # (CLAIM-004). Each further pass follows a change, so the loop ends.
        # Plain claims (no lock column, no system effect) are written together at the end
        # of a pass: the candidate rows are locked (SKIP LOCKED, or SQLite's single writer),
        # so their conditional writes cannot lose a race, and a batch costs one round trip.
        deferred: list[tuple[Job, Fired]] = []
        slots: dict[str, set[int]] = {}  # concurrency slots held, by key, as this claim goes
        while again and len(outcome.jobs) < limit:
            again = passed_over = claimed = False
            wanted = limit - len(outcome.jobs) + len(skip)
            for candidate in tx.candidates(query, due_by, wanted):
                job = candidate.job
                if job.id in skip:
                    continue
                facts = self._facts(candidate, busy_groups, busy_identifiers)
                event = "discard_redundant" if facts["unique_sibling_succeeded"] else "claim"
                try:  # CONC-002: a job with no free slot is passed over like a failed guard
                    fired = self._with_slot(
                        tx, self.engine.fire(job, self._firing(event, now, params, facts)), slots
                    )
                except InvalidTransition:
                    passed_over = True
                    continue
                if self._plain_claim(fired):
                    deferred.append((job, fired))
                    claimed = True
                    outcome.jobs.append(fired.job)
                    outcome.claimed_from[job.id] = job
                    if len(outcome.jobs) >= limit:
                        break
                    continue
                self._write_claims(tx, deferred)
                if not tx.save_job(job, fired.job, fired.fields):
                    continue
                self._after(tx, fired, now, side)
                if fired.job.state not in self.states.leased:
                    again = True
                    continue
                claimed = True
                outcome.jobs.append(fired.job)
                outcome.claimed_from[job.id] = job
                if job.serial_group is not None:
                    busy_groups.add(job.serial_group)
                if job.unique and job.identifier is not None:
                    busy_identifiers.add(job.identifier)
                if len(outcome.jobs) >= limit:
                    break
            self._write_claims(tx, deferred)
            again = again or (passed_over and claimed)
        outcome.notifications.extend(side.notifications)

    def claim_alone(
        self,
        tx: Transaction,
        query: ClaimQuery,
        worker_id: str,
        lease_ms: int,
        limit: int,
        now: datetime,
    ) -> PlannedClaim | None:
        """:meth:`claim` by the store's one statement only (``Transaction.claim_planned``),
        which may then run in a transaction of its own (autocommit). None when the store has
        no such statement; a claim that is not ``complete`` left jobs to :meth:`claim`."""
        params = {"worker_id": worker_id, "lease_ms": lease_ms}
        due_by = now if query.due_by is None else min(query.due_by, now)
        return self._claim_planned(tx, query, now, due_by, params, limit, ())

    def _claim_planned(
        self,
        tx: Transaction,
        query: ClaimQuery,
        now: datetime,
        due_by: datetime,
        params: Mapping[str, Any],
        limit: int,
        skip: Collection[str],
    ) -> PlannedClaim | None:
        """Plain jobs claimed by one statement where the store has it (claimplan.py)."""
        if self.claim_plan is None:
            return None
        return tx.claim_planned(self.claim_plan, query, now, due_by, params, limit, skip)

    def _plain_claim(self, fired: Fired) -> bool:
        job = fired.job
        return (
            job.state in self.states.leased
            and not fired.system_effects
            and job.serial_group is None
            and not job.unique
            and job.concurrency_key is None
        )

    def _with_slot(self, tx: Transaction, fired: Fired, held: dict[str, set[int]]) -> Fired:
        """A claim of a job with a concurrency key takes the lowest slot of the key below its
        limit that no leased job holds (CONC-002), and one of a job with a rate key counts
        against the window of now (RATE-002); InvalidTransition when either is full. The
        store's uniqueness rules refuse a slot a concurrent claim took first."""
        job = fired.job
        if job.state not in self.states.leased:
            return fired
        key = job.concurrency_key
        if key is not None:
            taken = held.setdefault(key, set())
            taken |= tx.concurrency_slots(key)
            free = [slot for slot in range(job.concurrency_limit or 0) if slot not in taken]
            if not free:
                raise InvalidTransition(f"job {job.id}: every slot of {key!r} is held")
            taken.add(free[0])
            fired = replace(fired, job=replace(job, concurrency_slot=free[0]))
        if job.rate_key is not None and not tx.take_rate_slot(
            job.rate_key,
            rate_window(job.updated_at, job.rate_period_ms or 1),
            job.rate_limit or 0,
            job.id,
        ):
            raise InvalidTransition(f"job {job.id}: the window of {job.rate_key!r} is full")
        return fired

    @staticmethod
    def _write_claims(tx: Transaction, deferred: list[tuple[Job, Fired]]) -> None:
        if deferred and not tx.save_jobs(
            [(job, fired.job) for job, fired in deferred], [fired.fields for _, fired in deferred]
        ):
            # Only a writer ignoring the row locks could get here; the transaction rolls
            # back, so nothing of this claim is recorded and the worker claims again.
            raise StaleLease(
                "a claimed row changed under its lock; nothing was claimed, claim again"
            )
        deferred.clear()

    @staticmethod
    def _facts(
        candidate: Candidate, busy_groups: set[str], busy_identifiers: set[str]
    ) -> dict[str, bool]:
        job = candidate.job
        return {
            "dependencies_succeeded": candidate.dependencies_succeeded,
            "serial_group_idle": candidate.serial_group_idle
            and job.serial_group not in busy_groups,
            "serial_group_head": candidate.serial_group_head,
            "unique_sibling_processing": candidate.unique_sibling_processing
            or (job.unique and job.identifier in busy_identifiers),
            "unique_sibling_succeeded": job.unique and candidate.unique_sibling_succeeded,
        }

    # -- reports, rescue and operations ---------------------------------------------------

    def fire(
        self,
        tx: Transaction,
        job_id: str,
        event: str,
        now: datetime,
        params: Mapping[str, Any] | None = None,
        update: Mapping[str, Any] | None = None,
        known: Job | None = None,
    ) -> Outcome:
        """Fire ``event`` on one job; ``update`` sets plain fields (execution, metadata) too.

        ``known`` is the caller's copy of the job (a worker's claimed job): it saves reading
        the row, and the conditional write falls back to a fresh read if the row moved on.
        """
        outcome = Outcome()
        job = known
        fired = None
        if job is not None:
            try:
                fired = self._fire_one(job, event, now, params, update)
            except Refused:  # the copy may be stale (a cancel request since): read the row
                fired = None
            if fired is not None and not tx.save_job(job, fired.job, fired.fields):
                fired = None
        if fired is None:
            job = tx.get_job(job_id)
            if job is None:
                raise JobNotFound(f"job {job_id} does not exist (it may have been pruned)")
            fired = self._fire_one(job, event, now, params, update)
            if not tx.save_job(job, fired.job, fired.fields):
                raise StaleLease(
                    f"job {job_id} changed while {event} was applied; nothing was recorded"
                )
        self._after(tx, fired, now, outcome)
        # A system effect may have moved the job on again (DEP-004 recheck on retry).
        latest = {job.id: job for job in outcome.jobs}
        outcome.jobs.insert(0, latest.get(fired.job.id, fired.job))
        return outcome

    def fire_alone(
        self,
        tx: Transaction,
        known: Job,
        event: str,
        now: datetime,
        params: Mapping[str, Any] | None = None,
        update: Mapping[str, Any] | None = None,
    ) -> Outcome | None:
        """The common case in one statement: a report whose change touches only this job.

        Returns None, having written nothing, when the change needs the full transaction
        (its system effects reach other rows, the copy was stale, or the machine refused it
        on the copy); the caller then uses :meth:`fire`, which decides authoritatively.
        """
        fired = self._fire_in_row(known, event, now, params, update)
        if fired is None or not tx.save_job(known, fired.job, fired.fields):
            return None
        outcome = Outcome(jobs=[fired.job])
        self._after(tx, fired, now, outcome)
        return outcome

    def record_all(
        self,
        tx: Transaction,
        reports: Sequence[tuple[Job, str, Mapping[str, Any], Mapping[str, Any]]],
        now: datetime,
    ) -> tuple[list[Job], Outcome]:
        """A worker's outcomes, each ``(job as last written, event, params, update)``, in one
        transaction: the ones whose change stays in their own row are written together (one
        batched statement); the others as :meth:`fire` would. Returns each job as recorded.

        Raises StaleLease, to be rolled back with the transaction, when any of the batched
        writes found its row moved on (a lost lease): the caller records them one by one.
        """
        outcome = Outcome()
        plain: list[tuple[int, Job, Fired]] = []
        finals: list[Job] = []
        planned = self.finish_planned(tx, reports, now)
        written: list[tuple[int, Job]] = []  # by the store's one statement
        for known, event, params, update in reports:
            final = planned.get(known.id)
            if final is not None:
                written.append((len(finals), final))
                finals.append(final)
                continue
            fired = self._fire_in_row(known, event, now, params, update)
            if fired is not None:
                plain.append((len(finals), known, fired))
                finals.append(fired.job)
                continue
            alone = self.fire(tx, known.id, event, now, params, update, known)
            finals.append(alone.jobs[0])
            outcome.jobs.extend(alone.jobs)
            outcome.notifications.extend(alone.notifications)
        if plain and not tx.save_jobs(
            [(known, fired.job) for _, known, fired in plain], [fired.fields for *_, fired in plain]
        ):
            raise StaleLease("a recorded job's row moved on (lease lost); nothing was recorded")
        batched = [(index, fired) for index, _, fired in plain] + written
        for index, each in sorted(batched, key=lambda pair: pair[0]):
            if isinstance(each, Job):  # no system effect reaches another row (planned)
                outcome.jobs.append(each)
                continue
            side = Outcome(jobs=[each.job])
            self._after(tx, each, now, side)
            finals[index] = side.jobs[0]
            outcome.jobs.extend(side.jobs)
            outcome.notifications.extend(side.notifications)
        outcome.dependents_read = tx.dependents_read()
        return finals, outcome

    def finish_planned(
        self,
        tx: Transaction,
        reports: Sequence[tuple[Job, str, Mapping[str, Any], Mapping[str, Any]]],
        now: datetime,
        whole: bool = False,
    ) -> Mapping[str, Job]:
        """The successes of plain jobs on their last request, written by one statement where
        the store has it (finishplan.py); by id, as written. The rest fire the machine.
        ``whole``: only when every report is such a success (else nothing is written)."""
        plan = self.finish_plan
        if plan is None:
            return {}
        chosen: list[tuple[Job, int, Mapping[str, Any]]] = []
        firings: dict[str, Firing] = {}
        for known, event, params, update in reports:
            token = params.get("lease_token")
            if (
                event != FINISH_EVENT
                or type(token) is not int
                or known.state not in plan.sources
                or known.serial_group is not None
                or known.unique
                or known.concurrency_key is not None
                or known.rate_key is not None
                or known.requests_remaining != 1
                or any(self._reaches_other_rows(name, known) for name in plan.system)
            ):
                if whole:
                    return {}
                continue
            # as the engine writes ``update``: a value that is the object the job holds is
            # no change
            fields = {
                name: value for name, value in update.items() if getattr(known, name) is not value
            }
            if not fields.keys() <= PLANNED_FIELDS:
                if whole:
                    return {}
                continue
            if fields.get("result") is not None:
                try:  # an invalid result is refused as the machine's path refuses it
                    self._check_planned_result(plan.target, fields["result"])
                except Refused:
                    if whole:
                        return {}
                    continue
            chosen.append((known, token, fields))
            firings[known.id] = self._firing(FINISH_EVENT, now, params, {})
        if not chosen:
            return {}
        written = tx.finish_planned(plan, chosen, now) or set()
        # the jobs as written: the plan's transition, without choosing it again (the
        # statement checked its guard on each row)
        return {
            known.id: self.engine.apply(known, plan.transition, firings[known.id], fields).job
            for known, _, fields in chosen
            if known.id in written
        }

    def _check_planned_result(self, target: str, result: Any) -> None:
        if target not in self.states.succeeded:
            raise InvalidRequest("not a success that finishes the job")
        check_result(result)

    def _fire_in_row(
        self,
        known: Job,
        event: str,
        now: datetime,
        params: Mapping[str, Any] | None,
        update: Mapping[str, Any] | None,
    ) -> Fired | None:
        """``event`` fired on the caller's copy, if the machine accepts it there and its change
        stays in the job's own row; None: leave it to :meth:`fire`."""
        try:
            fired = self._fire_one(known, event, now, params, update)
        except Refused:
            return None
        if any(self._reaches_other_rows(name, fired.job) for name in fired.system_effects):
            return None
        return fired

    @staticmethod
    def _reaches_other_rows(effect: str, job: Job) -> bool:
        if effect in ("notify_threshold", "notify_failure"):
            return False
        if effect == "republish_recurring":
            return job.recurring_interval_ms is not None
        if effect == "settle_batch":
            return job.batch_id is not None
        if effect == "recheck_dependencies":
            return bool(job.depends_on)
        return True

    def _fire_one(
        self,
        job: Job,
        event: str,
        now: datetime,
        params: Mapping[str, Any] | None,
        update: Mapping[str, Any] | None,
    ) -> Fired:
        fired = self.engine.fire(job, self._firing(event, now, params or {}, {}), update)
        if update and update.get("result") is not None:
            self._check_result(fired, update["result"])
        return fired

    def _check_result(self, fired: Fired, result: Any) -> None:
        """RESULT-001/002, after the machine accepted the event (a stale token is refused
        as such first): only the success that finishes the job carries a result, within the
        payload rules and 64 KiB."""
        if fired.job.state not in self.states.succeeded or fired.transition.event != "succeed":
            raise InvalidRequest(
                f"job {fired.job.id}: only the success of its last request carries a result "
                "(RESULT-001); report the others without one"
            )
        check_result(result)

    def rescue(self, tx: Transaction, now: datetime, limit: int) -> Outcome:
        """Fire lease_expired on processing jobs whose lease has run out."""
        outcome = Outcome()
        rescued: list[Job] = []
        for job in tx.expired_leases(now, limit):
            fired = self.engine.fire(job, self._firing("lease_expired", now, {}, {}))
            if tx.save_job(job, fired.job, fired.fields):
                rescued.append(fired.job)
                outcome.jobs.append(fired.job)
                self._after(tx, fired, now, outcome)
        if rescued:  # the metrics' total, in the same transaction (counting.py)
            tx.add_to_counters(by_queue(LEASE_RESCUES, rescued))
        return outcome

    # -- system effects -------------------------------------------------------------------

    def _firing(
        self, event: str, now: datetime, params: Mapping[str, Any], facts: Mapping[str, Any]
    ) -> Firing:
        return Firing(event, now, params, facts, self.waiting_delay_ms)

    def _after(self, tx: Transaction, fired: Fired, now: datetime, outcome: Outcome) -> None:
        for name in fired.system_effects:
            self._system[name](tx, fired.job, now, outcome)

    def _notify_threshold(self, tx: Transaction, job: Job, now: datetime, out: Outcome) -> None:
        if (
            job.retry_policy.notify_after is not None
            and job.attempts == job.retry_policy.notify_after
        ):
            out.notifications.append(Notification("threshold", job))

    def _notify_failure(self, tx: Transaction, job: Job, now: datetime, out: Outcome) -> None:
        out.notifications.append(Notification("failed", job))

    def _cancel_dependents(self, tx: Transaction, job: Job, now: datetime, out: Outcome) -> None:
        error = {
            "kind": "dependency_failed",
            "message": f"dependency {job.id} ended {job.state}",
        }
        for dependent in tx.dependents(job.id):
            fired = self.engine.fire(
                dependent, self._firing("dependency_failed", now, {"error": error}, {})
            )
            if tx.save_job(dependent, fired.job, fired.fields):
                out.jobs.append(fired.job)
                self._after(tx, fired, now, out)

    def _recheck_dependencies(self, tx: Transaction, job: Job, now: datetime, out: Outcome) -> None:
        failed = [d for d in tx.get_jobs(job.depends_on) if d.state in self.failed]
        if not failed:
            return
        current = tx.get_job(job.id) or job
        error = {
            "kind": "dependency_failed",
            "message": f"dependency {failed[0].id} ended {failed[0].state}",
        }
        fired = self.engine.fire(
            current, self._firing("dependency_failed", now, {"error": error}, {})
        )
        if tx.save_job(current, fired.job, fired.fields):
            out.jobs.append(fired.job)
            self._after(tx, fired, now, out)

    def _republish_recurring(self, tx: Transaction, job: Job, now: datetime, out: Outcome) -> None:
        if not job.recurring_interval_ms:
            return
        requests = tuple(
            Request(
                index=r.index,
                type=r.type,
                payload=r.payload,
                state=self.engine.requests.machine.initial_state,
            )
            for r in job.requests
        )
        copy = replace(
            job,
            id="",
            sequence=0,
            state=self.engine.machine.initial_state,
            available_at=now + timedelta(milliseconds=job.recurring_interval_ms),
            created_at=now,
            updated_at=now,
            finished_at=None,
            attempts=0,
            depends_on=(),
            batch_id=None,
            requests=requests,
            lease_token=0,
            lease=None,
            last_error=None,
            errors=(),
            execution=None,
            # The copy has not run: the result and progress of the run that ended stay with it
            # (REC-002, RESULT-001, PROGRESS-002).
            result=None,
            progress=None,
        )
        out.jobs.extend(tx.insert_jobs([copy]))

    def _settle_batch(self, tx: Transaction, job: Job, now: datetime, out: Outcome) -> None:
        if job.batch_id is None:
            return
        batch = self._get_batch(tx, job.batch_id)
        changed, complete = self.batches.fire(
            batch, "job_settled", now, unsettled=tx.unsettled_in_batch(batch.id)
        )
        self._close_batch(tx, changed, complete, now, out)

    def seal(self, tx: Transaction, batch_id: str, now: datetime) -> Outcome:
        out = Outcome()
        batch = self._get_batch(tx, batch_id)
        changed, complete = self.batches.fire(
            batch, "seal", now, unsettled=tx.unsettled_in_batch(batch_id)
        )
        self._close_batch(tx, changed, complete, now, out)
        return out

    def _close_batch(
        self,
        tx: Transaction,
        batch: Batch,
        complete: bool,
        now: datetime,
        out: Outcome,
    ) -> None:
        tx.save_batch(batch)
        if complete and batch.completion is not None:
            planned = completion_job(batch.completion)
            # JOB-001/JOB-004: the completion is published now; a delay counts from now.
            completion = replace(
                planned,
                created_at=now,
                updated_at=now,
                available_at=now + (planned.available_at - planned.created_at),
            )
            out.jobs.extend(self.publish(tx, [completion], now).jobs)

    @staticmethod
    def _get_batch(tx: Transaction, batch_id: str) -> Batch:
        batch = tx.get_batch(batch_id)
        if batch is None:
            raise JobNotFound(f"batch {batch_id} does not exist")
        return batch


def completion_job(stored: Mapping[str, Any]) -> Job:
    """A batch stores its completion job ready-made, as a serialised Job."""
    from .serialization import job_from_dict

    return job_from_dict(dict(stored))
