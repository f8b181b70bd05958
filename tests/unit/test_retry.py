"""The retry on Delta conflicts, on its own (no Spark): bounded, backing off, each retry recorded.

The races that make real conflicts are in tests/integration/test_concurrency.py.
"""

from __future__ import annotations

import random

import pytest
from delta.exceptions.base import ConcurrentAppendException

from pipeline_lib.ops.retry import ConflictRetriesExhaustedError, Retry, retry_on_conflict

CONFLICT = "[DELTA_CONCURRENT_APPEND.WITHOUT_HINT] ConcurrentAppendException: Files were added"


def refused(calls: list[int]) -> None:
    calls.append(1)
    raise ConcurrentAppendException(message=CONFLICT)


@pytest.mark.parametrize("attempts", [1, 2, 5])
def test_the_action_runs_at_most_attempts_times_and_each_retry_is_recorded(attempts):
    calls: list[int] = []
    retries: list[Retry] = []
    waits: list[float] = []

    with pytest.raises(ConflictRetriesExhaustedError, match=rf"after {attempts} attempts") as exhausted:
        retry_on_conflict(
            lambda: refused(calls), what="t", attempts=attempts, on_retry=retries.append, sleep=waits.append
        )

    assert len(calls) == attempts
    assert [r.attempt for r in retries] == list(range(1, attempts))
    assert [r.waited_s for r in retries] == [round(w, 2) for w in waits]
    assert "\n" not in str(exhausted.value)


@pytest.mark.parametrize(("factor", "expected"), [(0.0, [0.5, 1.0, 1.5, 1.5]), (0.5, [1.0, 2.0, 3.0, 3.0])])
def test_waits_grow_exponentially_up_to_the_maximum_times_the_jitter(monkeypatch, factor, expected):
    monkeypatch.setattr(random, "random", lambda: factor)  # the jitter factor is 0.5 + random()
    waits: list[float] = []

    with pytest.raises(ConflictRetriesExhaustedError):
        retry_on_conflict(
            lambda: refused([]), what="t", attempts=5, base_delay_s=1.0, max_delay_s=3.0, sleep=waits.append
        )

    assert waits == expected


def test_an_other_error_after_a_conflict_stops_the_retries_and_goes_through_unchanged():
    calls: list[int] = []

    def conflict_then_broken() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("io.delta.exceptions.ConcurrentAppendException: Files were added")
        raise KeyError("order_id")

    with pytest.raises(KeyError, match="order_id"):
        retry_on_conflict(conflict_then_broken, what="t", attempts=4, sleep=lambda _s: None)
    assert len(calls) == 2


def test_a_success_is_returned_without_waiting():
    waits: list[float] = []
    assert retry_on_conflict(lambda: 42, what="t", sleep=waits.append) == 42
    assert waits == []
