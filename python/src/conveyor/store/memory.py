"""In-memory store: a real backend for tests and direct execution, not a mock.

One lock serialises transactions; a transaction works on a copy and publishes it on
commit, so an exception leaves the store unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, NoReturn

from ..clock import to_ms
from ..errors import NotSupported
from ..model import Batch, Job, WorkerRecord
from .base import (
    SCHEDULE_RUNS_KEPT,
    Backlog,
    Candidate,
    ClaimPlan,
    ClaimQuery,
    FinishPlan,
    JobFilter,
    PlannedClaim,
    ScheduleRun,
    StateSets,
    UniqueClaim,
    rate_window,
)
from .locking import ExpiringLocks, process_lock


class _State:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.batches: dict[str, Batch] = {}
        self.next_sequence = 1
        self.next_batch = 1
        self.claimable: set[str] = set()  # ids of jobs in claimable states, for fast claims
        self.paused: dict[str, datetime] = {}  # paused queues and since when (PAUSE-001)
        self.workers: dict[str, WorkerRecord] = {}
        # (schedule name, fire time) -> the job published, or None (CRON-003)
        self.schedule_runs: dict[tuple[str, datetime], str | None] = {}
        # (rate key, window start) -> claims counted (RATE-002)
        self.rate_slots: dict[tuple[str, datetime], int] = {}
        # (counter name, queue) -> total (the metrics' counters)
        self.counters: dict[tuple[str, str], int] = {}
        # unique key -> its holder (UKEY-003)
        self.unique_claims: dict[str, UniqueClaim] = {}

    def copy(self) -> _State:
        clone = _State()
        clone.jobs = dict(self.jobs)
        clone.batches = dict(self.batches)
        clone.next_sequence = self.next_sequence
        clone.next_batch = self.next_batch
        clone.claimable = set(self.claimable)
        clone.paused = dict(self.paused)
        clone.workers = dict(self.workers)
        clone.schedule_runs = dict(self.schedule_runs)
        clone.rate_slots = dict(self.rate_slots)
        clone.counters = dict(self.counters)
        clone.unique_claims = dict(self.unique_claims)
        return clone


class MemoryTransaction:
    def __init__(self, data: _State, states: StateSets) -> None:
        self._data = data
        self._states = states
        self.changed = False

    def insert_jobs(self, jobs: Sequence[Job]) -> list[Job]:
        self.changed = True
        stored = []
        for job in jobs:
            sequence = self._data.next_sequence
            self._data.next_sequence += 1
            saved = replace(job, id=str(sequence), sequence=sequence)
            self._put(saved)
            stored.append(saved)
        return stored

    def get_job(self, job_id: str) -> Job | None:
        return self._data.jobs.get(job_id)

    def get_jobs(self, job_ids: Collection[str]) -> list[Job]:
        return [self._data.jobs[i] for i in job_ids if i in self._data.jobs]

    def save_jobs(
        self,
        changes: Sequence[tuple[Job, Job]],
        fields: Sequence[frozenset[str]] | None = None,
    ) -> bool:
        return all(self.save_job(before, after) for before, after in changes)

    def dependents_read(self) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset(), frozenset()  # its writes read nothing in passing

    def more_waiting(self, taken: int) -> bool | None:
        return None  # not known: a full claim counts as a backlog

    def save_job(self, before: Job, after: Job, fields: frozenset[str] = frozenset()) -> bool:
        current = self._data.jobs.get(before.id)
        if (
            current is None
            or current.state != before.state
            or current.lease_token != before.lease_token
            or current.lease != before.lease
            # CANCEL-004: a request added meanwhile may change what the event does
            or current.cancel_requested_at != before.cancel_requested_at
        ):
            return False
        if after.progress is before.progress and current.progress is not before.progress:
            # Progress is written on its own (write_progress); a writer whose copy predates
            # it keeps it, as the SQL store writes only the columns a writer changed.
            after = replace(after, progress=current.progress)
        self._put(after)
        self.changed = True
        return True

    def write_progress(self, job_id: str, lease_token: int, progress: dict[str, Any]) -> bool:
        current = self._data.jobs.get(job_id)
        if (
            current is None
            or current.state not in self._states.leased
            or current.lease is None
            or current.lease.token != lease_token
        ):
            return False
        self._put(replace(current, progress=progress))
        self.changed = True
        return True

    def _put(self, job: Job) -> None:
        self._data.jobs[job.id] = job
        if job.state in self._states.claimable:
            self._data.claimable.add(job.id)
        else:
            self._data.claimable.discard(job.id)

    def _group(self, job: Job) -> list[Job]:
        return [j for j in self._data.jobs.values() if j.serial_group == job.serial_group]

    def _unique_siblings(self, job: Job) -> list[Job]:
        return [
            j
            for j in self._data.jobs.values()
            if j.unique and j.identifier == job.identifier and j.id != job.id
        ]

    def facts(self, job: Job) -> Candidate:
        states = self._states
        dependencies = self.get_jobs(job.depends_on)
        group = self._group(job) if job.serial_group is not None else []
        siblings = self._unique_siblings(job) if job.unique else []
        key = (job.priority, job.sequence)
        return Candidate(
            job=job,
            dependencies_succeeded=all(d.state in states.succeeded for d in dependencies),
            serial_group_idle=not any(j.state in states.leased for j in group if j.id != job.id),
            serial_group_head=all(
                (j.priority, j.sequence) >= key for j in group if j.state in states.active
            ),
            unique_sibling_processing=any(s.state in states.leased for s in siblings),
            unique_sibling_succeeded=any(s.state in states.performed for s in siblings),
        )

    def claim_planned(
        self,
        plan: ClaimPlan,
        query: ClaimQuery,
        now: datetime,
        due_by: datetime,
        params: Mapping[str, Any],
        limit: int,
        skip: Collection[str],
    ) -> PlannedClaim | None:
        """None: in memory, firing the machine per job costs no round trip to save."""
        return None

    def finish_planned(
        self,
        plan: FinishPlan,
        reports: Sequence[tuple[Job, int, Mapping[str, Any]]],
        now: datetime,
    ) -> set[str] | None:
        """None: as for :meth:`claim_planned`."""
        return None

    def candidates(self, query: ClaimQuery, now: datetime, limit: int) -> Iterator[Candidate]:
        jobs = self._data.jobs
        if query.job_id is not None:
            pool = [jobs[query.job_id]] if query.job_id in jobs else []
        elif query.job_ids:
            pool = [jobs[i] for i in set(query.job_ids) if i in jobs]
        else:
            pool = [jobs[i] for i in self._data.claimable if i in jobs]
        matching = sorted(
            (
                job
                for job in pool
                if job.state in self._states.claimable
                and job.available_at <= now
                and self._slot_free(job)
                and self._rate_free(job, now)
                and (not query.queues or job.queue in query.queues)
                and job.queue not in self._data.paused
                and job.priority in query.priorities
            ),
            key=lambda job: (job.priority, job.sequence),
        )
        for job in matching:
            yield self.facts(self._data.jobs[job.id])

    def _slot_free(self, job: Job) -> bool:
        """CONC-002/003: as the SQL claim, a full key's jobs are not candidates."""
        if job.concurrency_key is None or job.concurrency_limit is None:
            return True
        return len(self.concurrency_slots(job.concurrency_key)) < job.concurrency_limit

    def dependents(self, job_id: str) -> list[Job]:
        return sorted(
            (
                job
                for job in self._data.jobs.values()
                if job_id in job.depends_on and job.state in self._states.active
            ),
            key=lambda job: job.sequence,
        )

    def expired_leases(self, now: datetime, limit: int) -> list[Job]:
        expired = [
            job
            for job in self._data.jobs.values()
            if job.state in self._states.leased and job.lease and job.lease.expires_at <= now
        ]
        return sorted(expired, key=lambda job: job.sequence)[:limit]

    def next_lease_expiry(self) -> datetime | None:
        return min(
            (job.lease.expires_at for job in self._data.jobs.values() if job.lease is not None),
            default=None,
        )

    def due_jobs(self, states: Collection[str], now: datetime, limit: int) -> list[Job]:
        due = [j for j in self._data.jobs.values() if j.state in states and j.available_at <= now]
        return sorted(due, key=lambda job: (job.priority, job.sequence))[:limit]

    def find_jobs(self, query: JobFilter) -> list[Job]:
        found = [
            job
            for job in self._data.jobs.values()
            if (not query.states or job.state in query.states)
            and (query.queue is None or job.queue == query.queue)
            and (query.tag is None or query.tag in job.tags)
            and (query.identifier is None or job.identifier == query.identifier)
            and (query.batch_id is None or job.batch_id == query.batch_id)
            and (query.serial_group is None or job.serial_group == query.serial_group)
            and job.sequence > query.after_sequence
        ]
        return sorted(found, key=lambda job: job.sequence)[: query.limit]

    def backlog(self, now: datetime, settled_before: datetime, id_limit: int) -> list[Backlog]:
        buckets: dict[tuple[str, int], list[Job]] = {}
        for candidate in self.candidates(ClaimQuery(), now, len(self._data.claimable)):
            if self._claimable_now(candidate):
                job = candidate.job
                buckets.setdefault((job.queue, job.priority), []).append(job)
        found = []
        for (queue, priority), jobs in sorted(buckets.items()):
            needy = [
                job
                for job in jobs
                if job.available_at > job.updated_at or job.updated_at <= settled_before
            ]
            ids = tuple(job.id for job in sorted(needy, key=lambda job: job.sequence)[:id_limit])
            found.append(Backlog(queue, priority, len(jobs), len(needy), ids))
        return found

    def related_claimable(
        self,
        now: datetime,
        serial_groups: Collection[str],
        identifiers: Collection[str],
        dependencies_of: Collection[str],
        limit: int,
        concurrency_keys: Collection[str] = (),
        among: Collection[str] = (),
    ) -> list[tuple[str, str, int]]:
        groups, names, targets = set(serial_groups), set(identifiers), set(dependencies_of)
        keys, ids = set(concurrency_keys), set(among)
        related = []
        for candidate in self.candidates(ClaimQuery(), now, len(self._data.claimable)):
            job = candidate.job
            if (
                job.serial_group in groups
                or (job.unique and job.identifier in names)
                or any(d in targets for d in job.depends_on)
                or job.concurrency_key in keys
                or job.id in ids
            ) and self._claimable_now(candidate):
                related.append((job.id, job.queue, job.priority))
        return related[:limit]

    @staticmethod
    def _claimable_now(candidate: Candidate) -> bool:
        return (
            candidate.dependencies_succeeded
            and candidate.serial_group_idle
            and candidate.serial_group_head
            and not candidate.unique_sibling_processing
        )

    def unfinished_identifiers(self, identifiers: Collection[str]) -> set[str]:
        wanted = set(identifiers)
        return {
            job.identifier
            for job in self._data.jobs.values()
            if job.identifier in wanted and job.state in self._states.unfinished
        }

    def delete_prunable(self, finished_before: datetime, limit: int) -> int:
        needed = {
            dependency
            for job in self._data.jobs.values()
            if job.state in self._states.active
            for dependency in job.depends_on
        }
        doomed = [
            job.id
            for job in sorted(self._data.jobs.values(), key=lambda job: job.sequence)
            if job.state in self._states.prunable
            and job.finished_at is not None
            and job.finished_at < finished_before
            and job.id not in needed
        ][:limit]
        for job_id in doomed:
            del self._data.jobs[job_id]
        return len(doomed)

    def counts(self) -> list[tuple[str, str, int]]:
        tally: dict[tuple[str, str], int] = {}
        for job in self._data.jobs.values():
            tally[(job.queue, job.state)] = tally.get((job.queue, job.state), 0) + 1
        return [(queue, state, count) for (queue, state), count in sorted(tally.items())]

    def concurrency_slots(self, key: str) -> set[int]:
        leased = self._states.leased
        return {
            job.concurrency_slot
            for job in self._data.jobs.values()
            if job.concurrency_key == key
            and job.state in leased
            and job.concurrency_slot is not None
        }

    def lock_unique_claim(self, key: str) -> UniqueClaim:
        # The store's lock serialises transactions: nothing else to lock.
        return self._data.unique_claims.get(key) or UniqueClaim(key, None, None, frozenset())

    def hold_unique_claim(self, claim: UniqueClaim) -> None:
        self._data.unique_claims[claim.key] = claim
        self.changed = True

    def forget_unique_claims(self, now: datetime, limit: int) -> int:
        claims = self._data.unique_claims
        expired = [
            key
            for key, claim in claims.items()
            if claim.expires_at is not None and claim.expires_at <= now
        ][:limit]
        for key in expired:
            del claims[key]
        return len(expired)

    def take_rate_slot(self, key: str, window_start: datetime, limit: int, job_id: str) -> bool:
        counted = self._data.rate_slots.get((key, window_start), 0)
        if counted >= limit:
            return False
        self._data.rate_slots[(key, window_start)] = counted + 1
        self.changed = True
        return True

    def _rate_free(self, job: Job, now: datetime) -> bool:
        """RATE-002/003: as the SQL claim, a job whose window is full is not a candidate."""
        if job.rate_key is None or job.rate_limit is None or job.rate_period_ms is None:
            return True
        window = rate_window(now, job.rate_period_ms)
        return self._data.rate_slots.get((job.rate_key, window), 0) < job.rate_limit

    def pause_queue(self, queue: str, now: datetime) -> bool:
        if queue in self._data.paused:
            return False
        self._data.paused[queue] = now
        self.changed = True
        return True

    def resume_queue(self, queue: str) -> bool:
        if self._data.paused.pop(queue, None) is None:
            return False
        self.changed = True  # wakes waiting workers: the queue's jobs are claimable again
        return True

    def paused_queues(self) -> list[tuple[str, datetime]]:
        return sorted(self._data.paused.items())

    def save_worker(self, record: WorkerRecord) -> None:
        self._data.workers[record.id] = record

    def delete_workers(
        self, worker_ids: Collection[str] = (), seen_before: datetime | None = None
    ) -> int:
        doomed = {i for i in worker_ids if i in self._data.workers}
        if seen_before is not None:
            doomed.update(i for i, w in self._data.workers.items() if w.heartbeat_at < seen_before)
        for worker_id in doomed:
            del self._data.workers[worker_id]
        return len(doomed)

    def workers(self) -> list[WorkerRecord]:
        return [self._data.workers[i] for i in sorted(self._data.workers)]

    def insert_schedule_run(self, name: str, fire_at: datetime, now: datetime) -> bool:
        runs = self._data.schedule_runs
        if (name, fire_at) in runs:
            return False
        runs[(name, fire_at)] = None
        horizon = fire_at - SCHEDULE_RUNS_KEPT
        for key in [k for k in runs if k[0] == name and k[1] < horizon]:
            del runs[key]
        self.changed = True
        return True

    def set_schedule_run_job(self, name: str, fire_at: datetime, job_id: str) -> None:
        self._data.schedule_runs[(name, fire_at)] = job_id
        self.changed = True

    def last_schedule_run(self, name: str, with_job: bool = False) -> ScheduleRun | None:
        found = [
            ScheduleRun(name, key[1], job_id)
            for key, job_id in self._data.schedule_runs.items()
            if key[0] == name and (job_id is not None or not with_job)
        ]
        return max(found, key=lambda run: run.fire_at, default=None)

    def ended_by_minute(self, since: datetime) -> list[tuple[int, str, int]]:
        tally: dict[tuple[int, str], int] = {}
        for job in self._data.jobs.values():
            if job.finished_at is not None and job.finished_at >= since:
                key = (to_ms(job.finished_at) // 60_000, job.state)
                tally[key] = tally.get(key, 0) + 1
        return [(minute, state, count) for (minute, state), count in sorted(tally.items())]

    def ended_executions(self, since: datetime, limit: int) -> list[tuple[str, dict[str, Any]]]:
        ended = sorted(
            (
                job
                for job in self._data.jobs.values()
                if job.finished_at is not None
                and job.finished_at >= since
                and job.execution is not None
            ),
            key=lambda job: (job.finished_at, job.sequence),
            reverse=True,
        )
        return [(job.queue, dict(job.execution or {})) for job in ended[:limit]]

    def add_to_counters(self, counts: Mapping[tuple[str, str], int]) -> None:
        for key, count in counts.items():
            self._data.counters[key] = self._data.counters.get(key, 0) + count

    def counters(self) -> list[tuple[str, str, int]]:
        totals = sorted(self._data.counters.items())
        return [(name, queue, total) for (name, queue), total in totals]

    def insert_batch(self, batch: Batch) -> Batch:
        saved = replace(batch, id=str(self._data.next_batch))
        self._data.next_batch += 1
        self._data.batches[saved.id] = saved
        return saved

    def get_batch(self, batch_id: str) -> Batch | None:
        return self._data.batches.get(batch_id)

    def save_batch(self, batch: Batch) -> None:
        self._data.batches[batch.id] = batch

    def unsettled_in_batch(self, batch_id: str) -> int:
        return sum(
            1
            for job in self._data.jobs.values()
            if job.batch_id == batch_id and job.state not in self._states.terminal
        )

    def batches(self, after: str | None, limit: int) -> list[Batch]:
        start = int(after) if after is not None and after.isdigit() else 0
        found = sorted(
            (b for b in self._data.batches.values() if int(b.id) > start), key=lambda b: int(b.id)
        )
        return found[:limit]

    def batch_counts(self, batch_ids: Collection[str]) -> list[tuple[str, str, int]]:
        wanted = set(batch_ids)
        tally: dict[tuple[str, str], int] = {}
        for job in self._data.jobs.values():
            if job.batch_id in wanted:
                key = (job.batch_id, job.state)
                tally[key] = tally.get(key, 0) + 1
        return [(batch, state, count) for (batch, state), count in sorted(tally.items())]

    def serial_groups(self, after: str | None, limit: int) -> list[tuple[str, int]]:
        tally: dict[str, int] = {}
        for job in self._data.jobs.values():
            group = job.serial_group or ""
            if group and job.state in self._states.active and (after is None or group > after):
                tally[group] = tally.get(group, 0) + 1
        return sorted(tally.items())[:limit]

    def serial_group_queue(self, group: str, limit: int) -> list[Job]:
        found = [
            job
            for job in self._data.jobs.values()
            if job.serial_group == group and job.state in self._states.active
        ]
        return sorted(found, key=lambda job: (job.priority, job.sequence))[:limit]


class MemoryStore:
    """Keeps everything in process memory; lost when the process ends.

    Its locks live in the process too: the named locks in the store (shared by every app on
    it), the command locks by URL, as every ``memory://`` app of one process is one place.
    """

    def __init__(self, states: StateSets, url: str = "memory://") -> None:
        self.display_url = url
        self._states = states
        self._locks = ExpiringLocks()
        self._data = _State()
        self._lock = threading.RLock()
        self._work = threading.Condition()
        self._generation = 0

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        with self._lock:
            working = self._data.copy()
            transaction = MemoryTransaction(working, self._states)
            yield transaction
            self._data = working
        if transaction.changed:
            with self._work:
                self._generation += 1
                self._work.notify_all()

    def autocommit(self) -> AbstractContextManager[MemoryTransaction]:
        return self.transaction()

    @property
    def claims_alone(self) -> bool:
        return False  # a transaction costs no round trip here

    def insert_alone(self, job: Job) -> Job | None:
        return None  # a transaction costs no round trip here

    def wait_for_work(self, timeout: float, ready: Callable[[], None] | None = None) -> bool:
        with self._work:
            seen = self._generation
            if ready is not None:
                ready()
            return self._work.wait_for(lambda: self._generation != seen, timeout)

    @contextmanager
    def watch_end(
        self, job_id: str, timeout: float | None = None
    ) -> Iterator[Callable[[float], bool]]:
        """Wakes at every committed change after the previous call (the store's own
        condition), after which the caller reads the job again."""
        with self._work:
            seen = [self._generation]

        def wait(timeout: float) -> bool:
            with self._work:
                woke = self._work.wait_for(lambda: self._generation != seen[0], timeout)
                seen[0] = self._generation
                return woke

        yield wait

    def join(self, connection: Any) -> NoReturn:
        raise NotSupported(
            "publishing inside a caller's transaction (connection=) needs an SQL store; this "
            f"app uses {self.display_url}: use sqlite:///PATH, postgresql+psycopg://... or "
            "mysql+pymysql://..."
        )

    def update_schema(self) -> None:
        """A memory store keeps no schema."""

    def acquire_lock(self, name: str, now: datetime, expires_at: datetime) -> str | None:
        return self._locks.acquire(name, now, expires_at)

    def release_lock(self, name: str, token: str) -> None:
        self._locks.release(name, token)

    def command_lock(
        self,
        command: str,
        single_id: str,
        busy: str,
        on_lost: Callable[[str], None] | None,
        check_every: float,
    ) -> AbstractContextManager[None]:
        """A lock in this process: nothing outside it can reach a memory store."""
        return process_lock(f"{self.display_url}|{command}|{single_id}", busy)

    def erase(self) -> None:
        """Forget every job, batch and lock; ids and sequences go on from where they were."""
        with self._lock:
            fresh = _State()
            fresh.next_sequence = self._data.next_sequence
            fresh.next_batch = self._data.next_batch
            self._data = fresh
        self._locks.clear()

    def drop_schema(self) -> None:
        """Forget everything, as a new memory store."""
        with self._lock:
            self._data = _State()
        self._locks.clear()

    def release_thread(self) -> None:
        """Threads hold nothing of a memory store."""

    def close(self) -> None:
        """Nothing to release."""
