"""The retry policy, a value object: which answers are retried, for how long, and how
long each wait is. No network: answers are given as SendResults."""

from __future__ import annotations

import dataclasses

import pytest

from posthog_logging.delivery import retry as retry_module
from posthog_logging.delivery.retry import Decision, RetryPolicy
from posthog_logging.delivery.transport import SendResult


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_done(status: int) -> None:
    assert RetryPolicy().decide(SendResult(status), attempts=0) is Decision.DONE


def test_413_is_split_whatever_the_attempts() -> None:
    assert RetryPolicy().decide(SendResult(413), attempts=0) is Decision.SPLIT
    assert RetryPolicy(max_retries=0).decide(SendResult(413), attempts=5) is Decision.SPLIT


@pytest.mark.parametrize("status", [301, 302, 307, 308, 400, 401, 403, 404, 422])
def test_other_answers_are_refused_for_good(status: int) -> None:
    assert RetryPolicy().decide(SendResult(status), attempts=0) is Decision.REFUSE


@pytest.mark.parametrize(
    "result",
    [SendResult(None, error="ConnectionError"), SendResult(408), SendResult(429)]
    + [SendResult(status) for status in (500, 502, 503, 504, 599)],
    ids=str,
)
def test_no_answer_408_429_and_5xx_are_retried_then_exhausted(result: SendResult) -> None:
    policy = RetryPolicy(max_retries=3)
    decisions = [policy.decide(result, attempts=n) for n in range(5)]
    retry, exhausted = Decision.RETRY, Decision.EXHAUSTED
    assert decisions == [retry, retry, retry, exhausted, exhausted]


def test_no_retries_at_all() -> None:
    assert RetryPolicy(max_retries=0).decide(SendResult(503), 0) is Decision.EXHAUSTED


def test_backoff_doubles_with_full_jitter_and_is_capped() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_cap=30.0)
    highs = [policy.delay(attempt, uniform=lambda low, high: high) for attempt in range(1, 9)]
    assert highs == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    lows = [policy.delay(attempt, uniform=lambda low, high: low) for attempt in range(1, 9)]
    assert lows == [0.0] * 8  # full jitter: from nothing up to the step


def test_jitter_is_random_within_the_step() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_cap=30.0)
    waits = {policy.delay(3) for _ in range(200)}
    assert len(waits) > 100 and all(0.0 <= wait <= 4.0 for wait in waits)


def test_retry_after_is_a_floor_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff_base=0.5, retry_after_cap=60.0)
    none = lambda low, high: low  # noqa: E731 - the jitter drew nothing
    assert policy.delay(1, retry_after=2.0, uniform=none) == 2.0
    assert policy.delay(1, retry_after=3600.0, uniform=none) == 60.0
    # the backoff wins when it is longer than what the server asked
    assert policy.delay(5, retry_after=1.0, uniform=lambda low, high: high) == 16.0


def test_defaults_are_read_when_a_policy_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry_module, "BACKOFF_BASE", 0.05)
    assert RetryPolicy().backoff_base == 0.05
    assert RetryPolicy(backoff_base=2.0).backoff_base == 2.0


def test_it_is_a_value() -> None:
    policy = RetryPolicy(max_retries=5)
    assert policy == RetryPolicy(max_retries=5) and hash(policy) == hash(RetryPolicy(5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_retries = 1  # type: ignore[misc]
    assert dataclasses.replace(policy, max_retries=1).max_retries == 1


@pytest.mark.parametrize(
    "options",
    [
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"max_retries": True},
        {"backoff_base": -0.1},
        {"backoff_cap": "30"},
        {"retry_after_cap": None},
    ],
    ids=str,
)
def test_bad_values_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        RetryPolicy(**options)  # type: ignore[arg-type]
