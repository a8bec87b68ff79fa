"""Retry policies: the delay formula, jitter, presets and their effect on jobs (spec RETRY-*)."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor import Conveyor, RetryPolicy, TemporaryError
from conveyor.errors import ConfigurationError, InvalidRequest
from conveyor.retry import presets, resolve

from .core_support import RecordingNotifier, memory_app

FAST = settings(max_examples=60, deadline=None)
APP = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

POLICIES = st.builds(
    RetryPolicy,
    backoff=st.sampled_from(["constant", "linear", "exponential"]),
    initial_delay_ms=st.integers(0, 10**7),
    max_delay_ms=st.integers(0, 10**9),
    multiplier=st.sampled_from([1, 1.5, 2, 3, 10, 100]),
    increment_ms=st.integers(0, 10**7),
    max_attempts=st.none() | st.integers(1, 10),
    notify_after=st.none() | st.integers(1, 10),
    jitter=st.just(0),
)
ATTEMPTS = st.integers(1, 2000)


def expected_base(policy: RetryPolicy, n: int) -> int:
    """RETRY-002 with exact arithmetic: floor(min(d(n), max_delay_ms))."""
    if policy.backoff == "constant":
        raw = Fraction(policy.initial_delay_ms)
    elif policy.backoff == "linear":
        raw = Fraction(policy.initial_delay_ms + policy.increment_ms * (n - 1))
    else:
        raw = Fraction(policy.initial_delay_ms)
        factor = Fraction(policy.multiplier)
        for _ in range(n - 1):
            raw *= factor
            if raw > policy.max_delay_ms:
                break
    return math.floor(min(raw, Fraction(policy.max_delay_ms)))


@given(policy=POLICIES, n=ATTEMPTS)
@FAST
def test_delay_follows_the_formula_with_the_cap(policy: RetryPolicy, n: int) -> None:
    """RETRY-002: constant / linear / exponential base delay, capped, rounded down, no overflow."""
    assert policy.delay_ms(n) == expected_base(policy, n)
    assert 0 <= policy.delay_ms(n) <= policy.max_delay_ms


@given(policy=POLICIES, n=st.integers(1, 200), m=st.integers(1, 200))
@FAST
def test_delay_without_jitter_never_decreases(policy: RetryPolicy, n: int, m: int) -> None:
    """Without jitter, a later attempt never waits less than an earlier one."""
    low, high = sorted((n, m))
    assert policy.delay_ms(low) <= policy.delay_ms(high)


@given(
    policy=POLICIES,
    jitter=st.floats(0, 1, allow_nan=False),
    n=st.integers(1, 60),
    seed=st.integers(0, 2**32),
)
@FAST
def test_jittered_delay_stays_within_its_bounds(
    policy: RetryPolicy, jitter: float, n: int, seed: int
) -> None:
    """RETRY-003: the delay lies in [floor(c(n)*(1-j)), floor(c(n)*(1+j))], computed exactly
    (RETRY-008)."""
    jittered = RetryPolicy(**{**policy.to_dict(), "jitter": jitter})
    capped = expected_base(policy, n)
    exact = Fraction(repr(jitter))
    low, high = math.floor(capped * (1 - exact)), math.floor(capped * (1 + exact))
    rng = random.Random(seed)
    for _ in range(20):
        assert low <= jittered.delay_ms(n, rng) <= high


def test_jitter_spreads_delays_over_its_range() -> None:
    """RETRY-003 (SHOULD uniform): with jitter 0.5, draws cover both halves of the range."""
    policy = RetryPolicy("constant", 10_000, 10_000, jitter=0.5)
    draws = [policy.delay_ms(1, random.Random(seed)) for seed in range(200)]
    assert min(draws) < 7_500
    assert max(draws) > 12_500
    assert all(5_000 <= d <= 15_000 for d in draws)


@given(policy=POLICIES, attempts=st.integers(0, 20))
@FAST
def test_exhausted_means_the_attempt_limit_is_reached(policy: RetryPolicy, attempts: int) -> None:
    """RETRY-004: a null max_attempts never exhausts; otherwise attempts >= max_attempts does."""
    limit = policy.max_attempts
    assert policy.exhausted(attempts) == (limit is not None and attempts >= limit)


def test_exponential_preset_is_exactly_the_spec() -> None:
    """RETRY-005: exponential is 60 s doubling to a 16 min cap, 25 attempts, notify at 5."""
    policy = presets()["exponential"]
    minutes = [policy.delay_ms(n) / 60_000 for n in range(1, 11)]
    assert minutes == [1, 2, 4, 8, 16, 16, 16, 16, 16, 16]
    assert policy.delay_ms(10**6) == 960_000
    assert (policy.max_attempts, policy.notify_after, policy.jitter) == (25, 5, 0)
    # The documented span: the delays after attempts 1 to 24 add up to 5 h 35 min.
    assert sum(policy.delay_ms(n) for n in range(1, 25)) == (5 * 60 + 35) * 60_000


def test_progressive_preset_is_exactly_the_spec() -> None:
    """RETRY-005: progressive is 0, 2 h, 4 h, ... capped at 24 h, 10 attempts, notify at 3."""
    policy = presets()["progressive"]
    hours = [policy.delay_ms(n) / 3_600_000 for n in range(1, 16)]
    assert hours == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 24, 24]
    assert (policy.max_attempts, policy.notify_after, policy.jitter) == (10, 3, 0)


def test_the_default_preset_is_exponential() -> None:
    """RETRY-005 / JOB-003: a job with no policy gets the default preset."""
    app = memory_app()
    assert app.publish("task").retry_policy == presets()["exponential"]
    assert resolve(None) == presets()["exponential"]
    assert app.publish("task", retry="progressive").retry_policy == presets()["progressive"]


# -- through an app ------------------------------------------------------------------------


def failing_app(policy: RetryPolicy, failures: int, **options: Any) -> tuple[Conveyor, list[int]]:
    """An app whose handler ``flaky`` fails ``failures`` times, then succeeds."""
    app = memory_app(**options)
    runs: list[int] = []

    def flaky() -> None:
        runs.append(1)
        if len(runs) <= failures:
            raise ConnectionError("upstream down")

    app.register("flaky", flaky, retry=policy)
    return app, runs


@given(policy=POLICIES, failures=st.integers(0, 6))
@APP
def test_temporary_failures_retry_after_the_policy_delay_until_the_limit(
    policy: RetryPolicy, failures: int
) -> None:
    """RETRY-001/004: each failure waits delay(attempts); the limit ends permanently_failed."""
    app, runs = failing_app(policy, failures)
    job = app.publish("flaky")
    for attempt in range(1, failures + 2):
        assert app.process(limit=1).jobs == 1
        got = app.get(job.id)
        assert got.attempts == attempt
        if attempt > failures:
            assert got.state == "finished"
            break
        if policy.exhausted(attempt):
            assert got.state == "permanently_failed"
            assert got.last_error is not None
            assert got.last_error.message == "upstream down"
            break
        assert got.state == "temporarily_failed"
        delay = timedelta(milliseconds=policy.delay_ms(attempt))
        assert got.available_at == app.now() + delay
        if delay:
            app.clock.advance(delay - timedelta(milliseconds=1))  # type: ignore[attr-defined]
            assert app.process().jobs == 0
            app.clock.advance(timedelta(milliseconds=1))  # type: ignore[attr-defined]
    assert len(runs) == app.get(job.id).attempts


@given(jitter=st.floats(0.01, 1), failures=st.integers(1, 4))
@APP
def test_jittered_retries_are_scheduled_within_the_bounds(jitter: float, failures: int) -> None:
    """RETRY-003 end to end: available_at - now lies within the jitter bounds."""
    policy = RetryPolicy("exponential", 1_000, 60_000, jitter=jitter)
    app, _ = failing_app(policy, failures)
    job = app.publish("flaky")
    for attempt in range(1, failures + 1):
        app.process(limit=1)
        got = app.get(job.id)
        low, high = policy.delay_bounds_ms(attempt)
        waited = (got.available_at - app.now()) // timedelta(milliseconds=1)
        assert low <= waited <= high
        app.clock.set(got.available_at)  # type: ignore[attr-defined]


@given(retry_after=st.integers(0, 10**6))
@APP
def test_retry_after_replaces_the_policy_delay(retry_after: int) -> None:
    """OUT-008: TemporaryError(retry_after=...) schedules exactly that delay."""
    app = memory_app()

    def busy() -> None:
        raise TemporaryError("rate limited", retry_after=timedelta(milliseconds=retry_after))

    app.register("busy", busy)
    job = app.publish("busy")
    app.process(limit=1)
    got = app.get(job.id)
    assert got.state == "temporarily_failed"
    assert got.available_at == app.now() + timedelta(milliseconds=retry_after)


def test_a_temporary_failure_schedules_now_plus_delay_on_every_backend(app: Conveyor) -> None:
    """RETRY-001 on each store: available_at = now + delay(attempts), then permanently_failed."""
    policy = RetryPolicy("linear", 1_000, 60_000, increment_ms=500, max_attempts=3)

    def broken() -> None:
        raise OSError("disk full")

    app.register("broken", broken, retry=policy)
    job = app.publish("broken")
    for attempt, delay_ms in ((1, 1_000), (2, 1_500)):
        app.process()
        got = app.get(job.id)
        assert (got.state, got.attempts) == ("temporarily_failed", attempt)
        assert got.available_at == app.now() + timedelta(milliseconds=delay_ms)
        app.clock.advance(timedelta(milliseconds=delay_ms))  # type: ignore[attr-defined]
    app.process()
    got = app.get(job.id)
    assert (got.state, got.attempts) == ("permanently_failed", 3)
    assert [e.attempt for e in got.errors] == [1, 2, 3]


def test_with_the_default_policy_a_job_stops_after_25_attempts_on_every_backend(
    app: Conveyor,
) -> None:
    """RETRY-004/005: a handler that always fails is not retried forever by default."""
    runs: list[int] = []

    def always_failing() -> None:
        runs.append(1)
        raise ConnectionError("upstream down")

    app.register("always_failing", always_failing)
    job = app.publish("always_failing")
    for _ in range(30):
        if app.execute(job.id).state == "permanently_failed":
            break
        app.clock.advance(timedelta(minutes=16))  # type: ignore[attr-defined]
    got = app.get(job.id)
    assert (got.state, got.attempts, len(runs)) == ("permanently_failed", 25, 25)
    assert app.claim("w") == []


@given(notify_after=st.integers(1, 5), limit=st.integers(1, 6))
@APP
def test_the_notifier_hears_the_threshold_once_and_the_final_failure(
    notify_after: int, limit: int
) -> None:
    """RETRY-006/007: one threshold call at attempts == notify_after, one failed call at the end."""
    notifier = RecordingNotifier()
    policy = RetryPolicy("constant", 1_000, 1_000, max_attempts=limit, notify_after=notify_after)
    app, _ = failing_app(policy, failures=100, notifier=notifier)
    job = app.publish("flaky")
    for _ in range(limit):
        app.process()
        app.clock.advance(1)  # type: ignore[attr-defined]
    expected = []
    if notify_after < limit:
        expected.append(("threshold", job.id, "temporarily_failed", notify_after))
    expected.append(("failed", job.id, "permanently_failed", limit))
    assert notifier.calls == expected


@pytest.mark.parametrize("backoff", ["constant", "linear", "exponential"])
def test_a_policy_round_trips_through_its_dict(backoff: str) -> None:
    """A stored job carries its resolved policy (JOB-003)."""
    policy = RetryPolicy(backoff, 10, 100, 3, 5, 4, 2, 0.25)  # type: ignore[arg-type]
    assert RetryPolicy.from_dict(policy.to_dict()) == policy
    assert resolve(policy.to_dict()) == policy


def test_the_delay_uses_the_multiplier_as_written_not_binary_floating_point() -> None:
    """RETRY-008: 1000 * 1.7^2 is 2890 (binary floating point gives 2889.9999999999995)."""
    policy = RetryPolicy("exponential", 1000, 10**9, multiplier=1.7)
    assert [policy.base_delay_ms(n) for n in (1, 2, 3, 4)] == [1000, 1700, 2890, 4913]
    jittered = RetryPolicy("constant", 2890, 10**9, jitter=0.3)
    assert jittered.delay_bounds_ms(1) == (2023, 3757)  # 2890 * 0.7 is 2022.99... in floats


@pytest.mark.parametrize("multiplier", [1.0001, 1.23456, 2.5e-4 + 1])
def test_a_multiplier_with_more_than_three_decimals_is_refused(multiplier: float) -> None:
    """RETRY-008: at most three digits after the point keep the exact power cheap."""
    with pytest.raises(ConfigurationError, match="RETRY-008"):
        RetryPolicy("exponential", 1000, 10**9, multiplier=multiplier)
    app = memory_app()
    app.register("work", lambda: None)
    policy = {"backoff": "exponential", "initial_delay_ms": 1000, "max_delay_ms": 10**9}
    with pytest.raises(InvalidRequest, match="RETRY-008"):
        app.publish("work", retry={**policy, "multiplier": multiplier})
    assert (
        app.publish("work", retry={**policy, "multiplier": 1.125}).retry_policy.multiplier == 1.125
    )
