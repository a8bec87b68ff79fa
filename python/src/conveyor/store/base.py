"""The Store seam: the source of truth every backend implements.

A store offers transactions; the lifecycle (``conveyor.lifecycle``) runs every state change
inside one, through the machine engine, so backends never decide transitions themselves.
Backends pass the same tests and conformance suite.

:class:`Store` declares everything the app, the CLI, the worker and the bus use: nothing
looks for a backend's own attributes. A backend that cannot do something still implements
the method, as a no-op where that is right (``update_schema`` of a store without a schema)
or raising :class:`~conveyor.errors.NotSupported` (``join`` on the memory store).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..clock import from_ms, to_ms
from ..model import Batch, Job, WorkerRecord
from ..priority import PriorityRange


@dataclass(frozen=True)
class ClaimQuery:
    """What a worker may take: queues (empty = all), a priority range, or one job; only jobs
    due by ``due_by`` (None: the claim's own time); with ``job_ids``, only among those jobs
    (broker mode: the jobs the messages in hand name)."""

    queues: tuple[str, ...] = ()
    priorities: PriorityRange = field(default_factory=PriorityRange)
    job_id: str | None = None
    due_by: datetime | None = None
    job_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Candidate:
    """A claimable-looking job and the facts the claim guard reads (spec.md#claiming)."""

    job: Job
    dependencies_succeeded: bool
    serial_group_idle: bool
    serial_group_head: bool
    unique_sibling_processing: bool
    unique_sibling_succeeded: bool


@dataclass(frozen=True)
class RequestStep:
    """What one request event does to a request, read from the request machine: the job
    effect that fires it, the states it fires from, the state it leads to and its effects
    (in the file's order)."""

    via: str
    event: str
    sources: frozenset[str]
    target: str
    effects: tuple[str, ...]


@dataclass(frozen=True)
class ClaimPlan:
    """The job machine's claim transition as data a store may compile into one statement
    (``Transaction.claim_planned``): the states it fires from, its target, its job effects
    in the file's order and what it does to the current request. Built from the machine
    file (``conveyor.claimplan``), only for a claim whose guard the claim query applies in
    full to plain jobs and that has no system effects; a store maps each named effect to
    SQL or declines the plan."""

    transition: str
    sources: frozenset[str]
    target: str
    guard: str | None
    # Job effects by name, in order; the one that fires the current request's event is
    # named too (``request.via``), and ``request`` says what that event does.
    effects: tuple[str, ...]
    request: RequestStep | None


@dataclass(frozen=True)
class FinishPlan:
    """The job machine's success on a job's last request as data a store may compile into
    one statement (``Transaction.finish_planned``): the states it fires from, its target, its
    job effects in the file's order, what it does to the current request, and its system
    effects (the caller plans only jobs they leave alone: no recurrence, no batch). Built
    from the machine file (``conveyor.finishplan``) only where, on the last request, the
    lease holder's report can select no other transition."""

    transition: str
    sources: frozenset[str]
    target: str
    effects: tuple[str, ...]
    request: RequestStep
    system: tuple[str, ...]


@dataclass
class PlannedClaim:
    """What a claim in one statement did: the jobs it claimed (in claim order) and each as
    it was before, by id. ``complete`` is False when its read found rows it did not claim
    (jobs using serial groups, unique mode, concurrency or rate keys, or a request the plan
    does not cover) or delayed jobs due to be promoted: the caller claims the rest through
    :meth:`Transaction.candidates`."""

    jobs: list[Job]
    before: Mapping[str, Job]  # may read each job only when asked for
    complete: bool


@dataclass(frozen=True)
class JobFilter:
    states: tuple[str, ...] = ()
    queue: str | None = None
    tag: str | None = None
    identifier: str | None = None
    batch_id: str | None = None
    limit: int = 100
    after_sequence: int = 0
    serial_group: str | None = None


@dataclass(frozen=True)
class Backlog:
    """Claimable, due jobs of one (queue, priority), for the broker's repair loop.

    ``needy`` counts those that may have no broker message: jobs that became due only after
    they were stored or last changed (a delay), and jobs unchanged since a settling time.
    ``needy_ids`` holds the first of them by sequence (up to the limit asked for).
    """

    queue: str
    priority: int
    claimable: int
    needy: int
    needy_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class StateSets:
    """State sets by tag, taken from the job machine and handed to stores."""

    claimable: frozenset[str]
    active: frozenset[str]
    leased: frozenset[str]
    succeeded: frozenset[str]
    terminal: frozenset[str]
    prunable: frozenset[str]
    unfinished: frozenset[str]
    # Succeeded states a worker reaches by running the job (``finished``, not ``redundant``):
    # ctx.unique_sibling_succeeded looks for a sibling in one of these (spec.md#context-facts).
    performed: frozenset[str] = frozenset()


def rate_window(now: datetime, period_ms: int) -> datetime:
    """The start of the rate window of ``now`` for a period (RATE-002): windows are aligned on
    the epoch, so every worker and the store agree on them."""
    ms = to_ms(now)
    return from_ms(ms - ms % period_ms)


@dataclass(frozen=True)
class UniqueClaim:
    """The holder of a unique key (UKEY-003): a job (None: free), when its claim expires
    (None: never) and the states in which it holds the key."""

    key: str
    job_id: str | None
    expires_at: datetime | None
    states: frozenset[str]

    def held(self, now: datetime, holder_state: str | None) -> bool:
        """Held at ``now``, the holder being in ``holder_state`` (None: no longer stored,
        which counts as ``finished``)."""
        return (
            self.job_id is not None
            and (self.expires_at is None or now < self.expires_at)
            and (holder_state or "finished") in self.states
        )


def claim_expiry(created_at: datetime, period_ms: int | None) -> datetime | None:
    """When a holder's claim of a unique key expires: its publish plus the period; None:
    never (UKEY-003)."""
    return None if period_ms is None else from_ms(to_ms(created_at) + period_ms)


# How long the runs of a schedule are kept behind its latest one (the scheduler reads only the
# latest; the others remain to be looked at).
SCHEDULE_RUNS_KEPT = timedelta(days=7)


@dataclass(frozen=True)
class ScheduleRun:
    """One fire time of a cron schedule, as recorded (spec.md#cron, CRON-003): the job it
    published, or None (skipped by the overlap policy, or not yet published)."""

    name: str
    fire_at: datetime
    job_id: str | None


class Transaction(Protocol):
    def insert_jobs(self, jobs: Sequence[Job]) -> list[Job]:
        """Store new jobs; ids and sequences are assigned here, in order."""
        ...

    def get_job(self, job_id: str) -> Job | None: ...

    def get_jobs(self, job_ids: Collection[str]) -> list[Job]: ...

    def save_job(self, before: Job, after: Job, fields: frozenset[str] = frozenset()) -> bool:
        """Write ``after`` if the row still equals ``before`` (state and lease token).

        ``fields``: the job fields the change may have written (a compiled transition's,
        :attr:`conveyor.engine.Fired.fields`); empty when not known, and then the store
        finds them by comparing the two versions. Returns False when another writer got
        there first; nothing is written then.
        """
        ...

    def write_progress(self, job_id: str, lease_token: int, progress: dict[str, Any]) -> bool:
        """Set the progress of the job if it is leased under ``lease_token``, changing nothing
        else (PROGRESS-002, not even ``updated_at``); False when it is not."""
        ...

    def save_jobs(
        self,
        changes: Sequence[tuple[Job, Job]],
        fields: Sequence[frozenset[str]] | None = None,
    ) -> bool:
        """:meth:`save_job` for several (before, after) pairs at once (``fields``: each
        pair's, in order), as few statements as the store can; True when every row was
        written."""
        ...

    def more_waiting(self, taken: int) -> bool | None:
        """After a claim (:meth:`candidates` in claim order) that took ``taken`` jobs: whether
        its read saw more claimable rows than that (or due delayed ones); it may err on
        "more", never on "none". None when not known. A worker whose full claim has nothing
        behind it does not claim again at once."""
        ...

    def dependents_read(self) -> tuple[frozenset[str], frozenset[str]]:
        """(ended jobs, their dependents): jobs this transaction's writes ended whose
        dependents (spec.md#dependencies) those writes read in passing, and the ids of those
        dependents. A job not in the first set may have dependents nobody has looked for
        yet. Broker mode hands a dependent over once its last dependency succeeds
        (BROKER-009), and an idle worker claims again only if an outcome freed a job: what
        was read here costs neither a lookup of its own."""
        ...

    def candidates(self, query: ClaimQuery, now: datetime, limit: int) -> Iterator[Candidate]:
        """Jobs in claimable states that are due, in (priority, sequence) order."""
        ...

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
        """Claim up to ``limit`` plain jobs due by ``due_by``, in claim order and passing over
        ``skip``, by one statement that applies ``plan`` with the firing's ``params``
        (``worker_id``, ``lease_ms``) at ``now``: the rows it writes are the rows the machine
        would. None when the store has no such statement (the caller fires the machine per
        job on :meth:`candidates`); it then has changed nothing."""
        ...

    def finish_planned(
        self,
        plan: FinishPlan,
        reports: Sequence[tuple[Job, int, Mapping[str, Any]]],
        now: datetime,
    ) -> set[str] | None:
        """Record the successes ``reports`` (each: the job as last written, the report's lease
        token, the plain fields to set: ``execution``, ``metadata``, ``result``) at ``now``
        by one statement applying ``plan`` to the rows where the machine would select its
        transition; the ids of the jobs written. The others are left as they were, for the
        caller to fire the machine on. None, having changed nothing, when the store has no
        such statement."""
        ...

    def dependents(self, job_id: str) -> list[Job]:
        """Active jobs that list ``job_id`` in depends_on."""
        ...

    def expired_leases(self, now: datetime, limit: int) -> list[Job]: ...

    def next_lease_expiry(self) -> datetime | None:
        """When the earliest lease held now expires (None: no job is leased)."""
        ...

    def due_jobs(self, states: Collection[str], now: datetime, limit: int) -> list[Job]: ...

    def find_jobs(self, query: JobFilter) -> list[Job]: ...

    def backlog(self, now: datetime, settled_before: datetime, id_limit: int) -> list[Backlog]:
        """Claimable, due jobs (the claim guard holding) per (queue, priority); reads only."""
        ...

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
        """(id, queue, priority) of due jobs in claimable states that are in one of the serial
        groups, unique with one of the identifiers, depend on one of the jobs, have one of
        the concurrency keys (a slot was freed) or are among the ids ``among``; in (priority,
        sequence) order. Reads only."""
        ...

    def unfinished_identifiers(self, identifiers: Collection[str]) -> set[str]: ...

    def delete_prunable(self, finished_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` prunable jobs no active job depends on."""
        ...

    def counts(self) -> list[tuple[str, str, int]]:
        """(queue, state, count) rows."""
        ...

    def concurrency_slots(self, key: str) -> set[int]:
        """The slots the leased jobs of concurrency ``key`` hold (CONC-002)."""
        ...

    def take_rate_slot(self, key: str, window_start: datetime, limit: int, job_id: str) -> bool:
        """Count one claim of rate ``key`` in the window starting at ``window_start``: take a
        free slot below ``limit`` under the store's uniqueness rule; False when every slot is
        taken (RATE-002). Also forgets the key's windows that ended a day or more ago."""
        ...

    def lock_unique_claim(self, key: str) -> UniqueClaim:
        """The claim of unique ``key`` (free when none was recorded), locked until the end
        of the transaction so that concurrent publishes of the key decide one after the
        other (UKEY-004)."""
        ...

    def hold_unique_claim(self, claim: UniqueClaim) -> None:
        """Record ``claim`` as the key's holder (its lock taken by lock_unique_claim)."""
        ...

    def forget_unique_claims(self, now: datetime, limit: int) -> int:
        """Delete up to ``limit`` claims expired by ``now`` (they hold nothing)."""
        ...

    def insert_schedule_run(self, name: str, fire_at: datetime, now: datetime) -> bool:
        """Record that schedule ``name`` handles ``fire_at`` (CRON-003); False, having written
        nothing, when any process recorded it before. Also forgets the name's runs a week
        older than this one (the latest run is all the scheduler reads)."""
        ...

    def set_schedule_run_job(self, name: str, fire_at: datetime, job_id: str) -> None:
        """The job published for a recorded run."""
        ...

    def last_schedule_run(self, name: str, with_job: bool = False) -> ScheduleRun | None:
        """The run of ``name`` with the latest fire time (``with_job``: among those that
        published a job)."""
        ...

    def ended_by_minute(self, since: datetime) -> list[tuple[int, str, int]]:
        """(minute, state, count) of the jobs that ended (``finished_at`` set) at or after
        ``since``; ``minute`` counts whole minutes since the epoch."""
        ...

    def ended_executions(self, since: datetime, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """(queue, execution record) of the jobs that ended at or after ``since`` with one,
        the latest ``limit`` of them (the metrics' histograms, docs/operations/metrics.md)."""
        ...

    def add_to_counters(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add each count to the total of its (name, queue), created at 0 when missing. The
        rows are written in one order, so concurrent writers never deadlock on them."""
        ...

    def counters(self) -> list[tuple[str, str, int]]:
        """Every (name, queue, total) counted so far, in that order."""
        ...

    def insert_batch(self, batch: Batch) -> Batch: ...

    def get_batch(self, batch_id: str) -> Batch | None: ...

    def save_batch(self, batch: Batch) -> None: ...

    def unsettled_in_batch(self, batch_id: str) -> int: ...

    def batches(self, after: str | None, limit: int) -> list[Batch]:
        """Batches in creation (id) order after the batch ``after`` (keyset pagination)."""
        ...

    def batch_counts(self, batch_ids: Collection[str]) -> list[tuple[str, str, int]]:
        """(batch id, state, count) of the jobs of these batches."""
        ...

    def serial_groups(self, after: str | None, limit: int) -> list[tuple[str, int]]:
        """(name, active jobs) of the serial groups with a job in an ``active`` state, in
        name order after the name ``after`` (keyset pagination)."""
        ...

    def serial_group_queue(self, group: str, limit: int) -> list[Job]:
        """The group's jobs in ``active`` states in the order they run: least
        ``(priority, sequence)`` first (spec.md#serial-groups)."""
        ...

    def pause_queue(self, queue: str, now: datetime) -> bool:
        """Stop claims from ``queue`` (PAUSE-001); False when it was paused already (the first
        pause time is kept)."""
        ...

    def resume_queue(self, queue: str) -> bool:
        """Let claims take jobs of ``queue`` again (PAUSE-003); False when it was not paused."""
        ...

    def paused_queues(self) -> list[tuple[str, datetime]]:
        """(queue, paused since) of every paused queue, by queue name."""
        ...

    def save_worker(self, record: WorkerRecord) -> None:
        """Insert or replace the record of a running worker (its presence beat)."""
        ...

    def delete_workers(
        self, worker_ids: Collection[str] = (), seen_before: datetime | None = None
    ) -> int:
        """Delete the records of ``worker_ids``, and those last seen before ``seen_before``
        (workers that died without saying so); return how many."""
        ...

    def workers(self) -> list[WorkerRecord]:
        """Every worker record, by id."""
        ...


class Store(Protocol):
    @property
    def display_url(self) -> str:
        """Where the jobs are, safe to print: a URL with its password masked."""
        ...

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A unit of work: committed on normal exit, rolled back on an exception."""
        ...

    def autocommit(self) -> AbstractContextManager[Transaction]:
        """A unit in which each statement commits by itself.

        Only for changes made by one conditional statement (a worker's report that touches
        nothing but its job): it saves the round trips of BEGIN and COMMIT.
        """
        ...

    @property
    def claims_alone(self) -> bool:
        """Whether :meth:`Transaction.claim_planned` (and :meth:`Transaction.finish_planned`)
        may run in :meth:`autocommit`: the store claims (and records successes) by one
        statement, its own transaction. An idle worker's claim then costs no ``BEGIN`` or
        ``COMMIT`` round trip."""
        ...

    def insert_alone(self, job: Job) -> Job | None:
        """Store one new job that needs no other row (no dependencies, batch, unique key or
        tags) by one statement that commits by itself, where the store can: a single publish
        then saves the round trips of BEGIN and COMMIT. Returns the job as stored, or None
        where the store cannot (the caller then publishes in a transaction)."""
        ...

    def wait_for_work(self, timeout: float, ready: Callable[[], None] | None = None) -> bool:
        """Block up to ``timeout`` seconds; return True early when new work may be claimable.

        Stores that can be told about publishes (PostgreSQL LISTEN/NOTIFY, the memory store)
        wake at once; others simply wait and return False, which makes the worker poll.
        ``ready`` is called once the store is listening, so a publish after it is never missed.
        """
        ...

    def watch_end(
        self, job_id: str, timeout: float | None = None
    ) -> AbstractContextManager[Callable[[float], bool]]:
        """Watch for the job reaching a terminal state while the block runs (RESULT-004).

        The callable blocks up to its timeout in seconds and returns True early when the job
        may have ended; the caller then reads it again. Watching starts on entry, before the
        caller's first read, so an end in between is not missed; entry takes at most about
        ``timeout`` seconds (the caller's whole wait). A store that cannot be told simply
        waits, and the caller polls.
        """
        ...

    def join(self, connection: Any) -> Transaction:
        """A transaction over the caller's own connection (``publish(..., connection=)``).

        Nothing is committed here: the caller's commit or rollback decides for the jobs too.
        Raises :class:`~conveyor.errors.NotSupported` when the store cannot share a caller's
        transaction, :class:`~conveyor.errors.ConfigurationError` for a connection it
        cannot use.
        """
        ...

    def update_schema(self) -> int | None:
        """Create or upgrade the store's tables; return the schema version, or None for a
        store that keeps no schema (nothing to do)."""
        ...

    def acquire_lock(self, name: str, now: datetime, expires_at: datetime) -> str | None:
        """Take the named lock until ``expires_at`` and return its token; None while another
        holder's lock has not expired by ``now``. One lock per name across every process on
        the store; a name longer than 255 characters is replaced by its digest."""
        ...

    def release_lock(self, name: str, token: str) -> None:
        """Free the lock if ``token`` still holds it (a lock taken over after its expiry
        stays with its new holder)."""
        ...

    def command_lock(
        self,
        command: str,
        single_id: str,
        busy: str,
        on_lost: Callable[[str], None] | None,
        check_every: float,
    ) -> AbstractContextManager[None]:
        """Hold the lock of one instance of a command over this store while the block runs.

        It must be released by the operating system or the database server when the process
        dies (never a stale lock). Raises :class:`~conveyor.errors.AlreadyRunning` with the
        message ``busy`` at once when another holder has it. A lock that can be lost while
        held (a database session cut) is checked every ``check_every`` seconds and taken
        again; when another holder took it meanwhile, ``on_lost`` is called with the reason.
        """
        ...

    def erase(self) -> None:
        """Delete every job, batch and lock, keeping the schema (test suites start clean)."""
        ...

    def drop_schema(self) -> None:
        """Remove the store's tables and everything in them (test suites clean up)."""
        ...

    def release_thread(self) -> None:
        """Give back the calling thread's connections (the thread is about to end)."""
        ...

    def close(self) -> None: ...
