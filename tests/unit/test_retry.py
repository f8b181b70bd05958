"""The retry on Delta conflicts, on its own (no Spark): bounded, backing off, each retry recorded.

The races that make real conflicts are in tests/integration/test_concurrency.py.
"""

from __future__ import annotations

import random

import pytest
from delta.exceptions.base import ConcurrentAppendException

from pipeline_lib.ops.retry import (
    ConflictRetriesExhaustedError,
    Retry,
    is_delta_conflict,
    is_lost_checkpoint,
    retry_on_conflict,
)

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


# Spark's message when a job reads a local checkpoint whose executor was killed (test_cluster.py).
LOST_CHECKPOINT = (
    "An error occurred while calling o1234.count.\n: org.apache.spark.SparkException: "
    "[CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND] Checkpoint block rdd_1275_0 not found!"
)


def test_a_job_that_lost_its_local_checkpoint_with_an_executor_runs_again_from_its_start():
    calls: list[int] = []
    lines: list[str] = []
    retries: list[Retry] = []

    def lost_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            try:
                raise RuntimeError(LOST_CHECKPOINT)
            except RuntimeError as spark_error:  # wrapped, as Py4J and the jobs wrap it
                raise ValueError("silver.products failed") from spark_error
        return "written"

    result = retry_on_conflict(
        lost_once,
        what="silver.products",
        progress=lines.append,
        on_retry=retries.append,
        sleep=lambda _s: None,
    )

    assert (result, len(calls), [r.attempt for r in retries]) == ("written", 2, [1])
    assert lines == [
        "silver.products: attempt 1 of 4 lost an executor holding its local checkpoint "
        f"(ValueError: silver.products failed); retrying in {retries[0].waited_s:.1f}s"
    ]


def test_a_checkpoint_lost_in_every_attempt_ends_in_one_line_naming_the_executors():
    def always_lost() -> None:
        raise RuntimeError(LOST_CHECKPOINT)

    with pytest.raises(
        ConflictRetriesExhaustedError, match=r"lost an executor .* in each of 2 attempts"
    ) as error:
        retry_on_conflict(always_lost, what="t", attempts=2, sleep=lambda _s: None)
    assert "\n" not in str(error.value)


def test_a_lost_checkpoint_is_not_a_conflict_and_a_conflict_is_not_a_lost_checkpoint():
    lost, conflict = RuntimeError(LOST_CHECKPOINT), ConcurrentAppendException(message=CONFLICT)
    assert (is_lost_checkpoint(lost), is_delta_conflict(lost)) == (True, False)
    assert (is_lost_checkpoint(conflict), is_delta_conflict(conflict)) == (False, True)
    assert (is_lost_checkpoint(KeyError("order_id")), is_delta_conflict(KeyError("order_id"))) == (
        False,
        False,
    )
