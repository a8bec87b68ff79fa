"""Built-in middleware, the outcome policy and the locks behind WithoutOverlapping."""

from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, ManualClock, PermanentError, TemporaryError, Waiting
from conveyor.bus import (
    CommandBus,
    Error,
    HandlerContainer,
    InTransaction,
    LogMessageDispatch,
    LogPushedToQueue,
    MemoryLocks,
    OutcomePolicy,
    PipeContainer,
    Result,
    SetupBeforeDispatch,
    StoreLocks,
    WithoutOverlapping,
    current_job,
)

from .messages import CancelTicket, RecalculateSales, SalesError

# -- logging ----------------------------------------------------------------------------


def test_log_pushed_to_queue_logs_around_the_push(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="conveyor.bus")
    middleware = LogPushedToQueue()
    middleware(RecalculateSales(3), lambda m: None)
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        (logging.DEBUG, "Queuing command RecalculateSales."),
        (logging.INFO, "Queued command RecalculateSales."),
    ]
    assert caplog.records[0].conveyor_context == {"event_id": 3}  # type: ignore[attr-defined]


def test_log_levels_and_context_are_configurable(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.bus")
    caplog.set_level(logging.DEBUG, logger="tests.bus")
    middleware = LogMessageDispatch(
        logger,
        before=logging.INFO,
        after=logging.WARNING,
        context=lambda m: {"ticket": m.ticket_id},  # leave the free-text reason out of logs
    )
    result = middleware(CancelTicket(8, "private"), lambda m: Result.fail(SalesError.INVALID))
    assert result.failed
    before, after = caplog.records
    assert (before.levelno, before.getMessage()) == (
        logging.INFO,
        "Dispatching command CancelTicket.",
    )
    assert (after.levelno, after.getMessage()) == (
        logging.WARNING,
        "Dispatched command CancelTicket.",
    )
    assert after.conveyor_context == {"ticket": 8}  # type: ignore[attr-defined]
    assert after.conveyor_result == {  # type: ignore[attr-defined]
        "succeeded": False,
        "errors": ["[SalesError.INVALID]"],
    }


# -- transactions -----------------------------------------------------------------------


def transactional_bus(tmp_path: Path) -> tuple[CommandBus, sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "app.db", isolation_level="DEFERRED")
    connection.execute("CREATE TABLE cancelled (ticket INTEGER)")
    connection.commit()

    def cancel(command: CancelTicket) -> Result[None]:
        connection.execute("INSERT INTO cancelled VALUES (?)", (command.ticket_id,))
        if command.reason == "fail":
            return Result.fail(SalesError.INVALID)
        if command.reason == "raise":
            raise RuntimeError("boom")
        return Result.ok()

    handlers = HandlerContainer()
    handlers.bind(CancelTicket, lambda: cancel)
    pipes = PipeContainer()
    pipes.bind(InTransaction, lambda: InTransaction(lambda: connection))
    return CommandBus(handlers, pipes).through([InTransaction]), connection


def test_in_transaction_commits_only_successful_results(tmp_path: Path) -> None:
    bus, connection = transactional_bus(tmp_path)
    assert bus.dispatch(CancelTicket(1)).succeeded
    assert bus.dispatch(CancelTicket(2, "fail")).failed
    with pytest.raises(RuntimeError):
        bus.dispatch(CancelTicket(3, "raise"))
    rows = connection.execute("SELECT ticket FROM cancelled").fetchall()
    assert rows == [(1,)]
    connection.close()


# -- setup ------------------------------------------------------------------------------


def test_setup_runs_before_and_its_teardown_after_even_on_error() -> None:
    log: list[str] = []

    def setup() -> Any:
        log.append("setup")
        return lambda: log.append("teardown")

    middleware = SetupBeforeDispatch(setup)
    assert middleware("m", lambda m: log.append("run") or "done") == "done"

    def fail(message: Any) -> Any:
        raise KeyError(message)

    with pytest.raises(KeyError):
        middleware("m", fail)
    assert log == ["setup", "run", "teardown", "setup", "teardown"]
    assert SetupBeforeDispatch(lambda: None)("m", lambda m: "ok") == "ok"


# -- without overlapping ----------------------------------------------------------------


def test_without_overlapping_makes_a_second_run_with_the_same_key_wait() -> None:
    clock = ManualClock()
    locks = MemoryLocks(clock.now)
    overlap = WithoutOverlapping(
        lambda m: f"sales:{m.event_id}", locks, release_after=timedelta(seconds=5)
    )
    log: list[str] = []

    def first(message: RecalculateSales) -> str:
        log.append("first runs")
        with pytest.raises(Waiting) as waited:
            overlap(RecalculateSales(1), lambda m: log.append("never"))
        assert waited.value.delay_ms == 5000
        overlap(RecalculateSales(2), lambda m: log.append("other key runs"))
        return "done"

    assert overlap(RecalculateSales(1), first) == "done"
    overlap(RecalculateSales(1), lambda m: log.append("after release runs"))
    assert log == ["first runs", "other key runs", "after release runs"]


def test_a_lock_whose_holder_died_expires() -> None:
    clock = ManualClock()
    locks = MemoryLocks(clock.now)
    token = locks.acquire("k", timedelta(minutes=1))
    assert token is not None
    assert locks.acquire("k", timedelta(minutes=1)) is None
    clock.advance(timedelta(minutes=1))
    taken_over = locks.acquire("k", timedelta(minutes=1))
    assert taken_over is not None
    locks.release("k", token)  # the old holder's late release does not free the new holder
    assert locks.acquire("k", timedelta(minutes=1)) is None
    locks.release("k", taken_over)
    assert locks.acquire("k", timedelta(minutes=1)) is not None


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgresql", "mariadb"], indirect=True)
def test_store_locks_hold_expire_and_release(app: Conveyor, clock: ManualClock) -> None:
    locks = StoreLocks(app)
    name = f"tests:{'x' * 300}"  # longer than the column: stored as a digest
    token = locks.acquire(name, timedelta(seconds=30))
    assert token is not None
    assert StoreLocks(app).acquire(name, timedelta(seconds=30)) is None  # same store
    assert locks.acquire("tests:other", timedelta(seconds=30)) is not None
    clock.advance(timedelta(seconds=30))
    taken_over = locks.acquire(name, timedelta(seconds=30))
    assert taken_over is not None
    locks.release(name, token)
    assert locks.acquire(name, timedelta(seconds=30)) is None
    locks.release(name, taken_over)
    assert locks.acquire(name, timedelta(seconds=30)) is not None


def test_current_job_is_none_outside_a_worker() -> None:
    assert current_job() is None


# -- outcome policy ---------------------------------------------------------------------


def test_success_has_no_outcome() -> None:
    assert OutcomePolicy().outcome(Result.ok()) is None
    OutcomePolicy().apply(Result.ok())


def test_unmapped_failures_are_permanent_unless_configured() -> None:
    failed = Result.fail(Error("no such event", SalesError.EVENT_NOT_FOUND))
    outcome = OutcomePolicy().outcome(failed)
    assert isinstance(outcome, PermanentError)
    assert "[SalesError.EVENT_NOT_FOUND] no such event" in str(outcome)
    assert isinstance(OutcomePolicy(default="temporary").outcome(failed), TemporaryError)
    with pytest.raises(PermanentError):
        OutcomePolicy().apply(failed)


def test_temporary_codes_retry_after_their_delay() -> None:
    policy = OutcomePolicy(temporary={SalesError.REPORT_LOCKED: timedelta(seconds=30)})
    outcome = policy.outcome(Result.fail(SalesError.REPORT_LOCKED))
    assert isinstance(outcome, TemporaryError)
    assert outcome.retry_after_ms == 30_000
    plain = OutcomePolicy(temporary=[SalesError.REPORT_LOCKED]).outcome(
        Result.fail(SalesError.REPORT_LOCKED)
    )
    assert isinstance(plain, TemporaryError)
    assert plain.retry_after_ms is None  # the job's retry policy decides


def test_an_errors_own_retry_after_wins_and_the_longest_delay_is_kept() -> None:
    policy = OutcomePolicy(temporary={SalesError.REPORT_LOCKED: 30})
    result = Result.fail(
        [
            Error("locked", SalesError.REPORT_LOCKED, retry_after=timedelta(seconds=5)),
            Error("rate limited", retry_after=timedelta(minutes=2)),
        ]
    )
    outcome = policy.outcome(result)
    assert isinstance(outcome, TemporaryError)
    assert outcome.retry_after_ms == 120_000


def test_a_permanent_code_beats_a_temporary_one() -> None:
    policy = OutcomePolicy(
        temporary=[SalesError.REPORT_LOCKED], permanent=[SalesError.EVENT_NOT_FOUND]
    )
    result = Result.fail([SalesError.REPORT_LOCKED, SalesError.EVENT_NOT_FOUND])
    assert isinstance(policy.outcome(result), PermanentError)


def test_a_policy_refuses_contradictions() -> None:
    with pytest.raises(ValueError, match="both temporary and permanent"):
        OutcomePolicy(temporary=[SalesError.INVALID], permanent=[SalesError.INVALID])
    with pytest.raises(ValueError, match="default must be"):
        OutcomePolicy(default="sometimes")  # type: ignore[arg-type]
