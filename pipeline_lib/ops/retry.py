"""Retry an action when Delta refuses its commit because a concurrent writer got there first.

Delta's optimistic concurrency lets two writers work on one table; the second to commit
is refused with a concurrent-modification error (``ConcurrentAppendException`` and its
siblings in :mod:`delta.exceptions`) when the winner changed what it read. Nothing of the
refused transaction is in the table, so running an idempotent action again (a MERGE by
key, a whole job whose writes are keyed and whose watermark is saved last) is safe.
:func:`retry_on_conflict` does that a bounded number of times, with jittered exponential
backoff, reporting each retry as one progress line; any other error goes through at once.
The loop is tenacity's; what is ours is the test of a conflict (:func:`is_delta_conflict`)
and the lines and records each retry leaves.

The same retry covers one cluster failure that only a re-run repairs: the jobs cache their
intermediate results with ``localCheckpoint`` (fast, but kept on the executors only), so
an executor lost mid-job takes those blocks with it and the job's next read of them fails
with ``CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND`` (:func:`is_lost_checkpoint`). Spark's own task
retries cannot recompute a local checkpoint; running the idempotent job again from its
start, on the executors that remain or replace the lost one, does.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import delta.exceptions  # noqa: F401  (installs the JVM-to-Python conversion of Delta's errors)
from delta.exceptions.base import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

__all__ = [
    "CONFLICT_ERRORS",
    "DEFAULT_ATTEMPTS",
    "ConflictRetriesExhaustedError",
    "Retry",
    "conflict_summary",
    "is_delta_conflict",
    "is_lost_checkpoint",
    "is_retryable",
    "retry_on_conflict",
]

T = TypeVar("T")

# The Python classes of Delta's commit conflicts (the classic client's captured exceptions
# subclass these, so isinstance works for both).
CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    ConcurrentAppendException,
    ConcurrentDeleteReadException,
    ConcurrentDeleteDeleteException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)
# The same errors when they reach Python wrapped in another error (a Py4J error, or a
# Spark error whose cause is the conflict): the JVM class names and Delta's error classes.
_CONFLICT_MARKERS = (
    "io.delta.exceptions.Concurrent",
    "io.delta.exceptions.MetadataChangedException",
    "io.delta.exceptions.ProtocolChangedException",
    "io.delta.exceptions.DeltaConcurrentModificationException",
    "[DELTA_CONCURRENT_",
    "[DELTA_METADATA_CHANGED",
    "[DELTA_PROTOCOL_CHANGED",
)
# Spark's error when a job reads the blocks of a local checkpoint whose executor is gone.
_LOST_CHECKPOINT_MARKERS = ("CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND",)
DEFAULT_ATTEMPTS = 4
DEFAULT_BASE_DELAY_S = 0.5
DEFAULT_MAX_DELAY_S = 8.0


class ConflictRetriesExhaustedError(RuntimeError):
    """Every attempt of an action was refused by a concurrent Delta writer."""


@dataclass(frozen=True)
class Retry:
    """One retry: the attempt that conflicted (1-based), its one-line error and the wait before the next."""

    attempt: int
    error: str
    waited_s: float


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the errors it was raised from, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def is_delta_conflict(error: BaseException) -> bool:
    """True when ``error``, or an error it was raised from, is a Delta commit conflict."""
    return any(
        isinstance(e, CONFLICT_ERRORS) or any(marker in str(e) for marker in _CONFLICT_MARKERS)
        for e in _chain(error)
    )


def is_lost_checkpoint(error: BaseException) -> bool:
    """True when ``error`` (or its cause) is a read of local-checkpoint blocks lost with an executor."""
    return any(any(marker in str(e) for marker in _LOST_CHECKPOINT_MARKERS) for e in _chain(error))


def is_retryable(error: BaseException) -> bool:
    """A failure that running the idempotent action again repairs: a conflict or a lost checkpoint."""
    return is_delta_conflict(error) or is_lost_checkpoint(error)


def retry_on_conflict(
    action: Callable[[], T],
    *,
    what: str,
    attempts: int = DEFAULT_ATTEMPTS,
    base_delay_s: float = DEFAULT_BASE_DELAY_S,
    max_delay_s: float = DEFAULT_MAX_DELAY_S,
    progress: Callable[[str], None] | None = None,
    on_retry: Callable[[Retry], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action``; when Delta refuses its commit for a concurrent change (or the action
    lost a local checkpoint with an executor), wait and run it again.

    The wait before retry ``n`` is ``base_delay_s * 2**(n-1)`` (at most ``max_delay_s``),
    times a random factor in [0.5, 1.5) so that two writers that collided do not collide
    again in step. Only idempotent actions may be retried: the refused attempt committed
    nothing, but anything the action committed *before* its refused commit stays.

    Args:
        action: The work to run; called once per attempt, without arguments.
        what: What the action is, for the progress lines and the final error (e.g. a job name).
        attempts: How many times to run it at most (>= 1).
        progress: Called with one line per retry (e.g. ``JobContext.progress``).
        on_retry: Called with each :class:`Retry` (e.g. to record it in a run record).
        sleep: How to wait (tests pass a fake).

    Returns:
        What ``action`` returned on the first attempt that was not refused.

    Raises:
        ConflictRetriesExhaustedError: Every attempt was refused; the last conflict is its cause.
        Exception: Any error that is not a Delta conflict, unchanged, on the attempt it happened.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    backoff = wait_exponential(multiplier=base_delay_s, max=max_delay_s)

    def jittered(state: RetryCallState) -> float:
        # A factor in [0.5, 1.5) rather than tenacity's additive jitter: two writers that
        # collided spread apart in proportion to the wait, whatever its size.
        return backoff(state) * (0.5 + random.random())

    def report(state: RetryCallState) -> None:
        error = _failure(state)
        reason = conflict_summary(error)
        waited = state.next_action.sleep if state.next_action else 0.0
        cause = (
            "lost an executor holding its local checkpoint"
            if is_lost_checkpoint(error)
            else "refused by a concurrent Delta writer"
        )
        waited = round(waited, 2)  # one value for the line and the record (0.449 printed 0.4, recorded 0.45)
        if progress is not None:
            progress(
                f"{what}: attempt {state.attempt_number} of {attempts} {cause} ({reason}); "
                f"retrying in {waited:.1f}s"
            )
        if on_retry is not None:
            on_retry(Retry(attempt=state.attempt_number, error=reason, waited_s=waited))

    def exhausted(state: RetryCallState) -> NoReturn:
        error = _failure(state)
        if is_lost_checkpoint(error):
            raise ConflictRetriesExhaustedError(
                f"{what}: lost an executor holding its local checkpoint in each of {attempts} attempts "
                f"(last: {conflict_summary(error)}); check the cluster's executors, then run it again"
            ) from error
        raise ConflictRetriesExhaustedError(
            f"{what}: still refused by a concurrent Delta writer after {attempts} attempts "
            f"(last: {conflict_summary(error)}); run it again when the other writer is done"
        ) from error

    retrying = Retrying(
        retry=retry_if_exception(is_retryable),
        stop=stop_after_attempt(attempts),
        wait=jittered,
        sleep=sleep,
        before_sleep=report,
        retry_error_callback=exhausted,
    )
    return retrying(action)


def _failure(state: RetryCallState) -> BaseException:
    """The error of the attempt just made (tenacity retries here only after an error)."""
    error = state.outcome.exception() if state.outcome is not None else None
    if error is None:  # pragma: no cover - retry_if_exception retries errors only
        raise AssertionError("a retry without an error")
    return error


def conflict_summary(error: BaseException) -> str:
    """The error's class and the first line of its message, at most 300 characters."""
    text = (str(error).strip() or type(error).__name__).splitlines()[0].strip()
    return f"{type(error).__name__}: {text}"[:300]
