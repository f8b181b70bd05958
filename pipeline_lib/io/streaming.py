"""Structured Streaming I/O beyond the Kafka source: an aggregate kept in Delta, and a clean stop.

- :func:`start_upsert_stream` runs a streaming aggregation (output mode ``update``) and MERGEs
  each micro-batch's changed rows into a Delta table by key, through ``foreachBatch``. Each
  MERGE carries Delta's idempotent-write marker (``txnAppId`` = the query's id, ``txnVersion``
  = the batch id): a batch that ran again after a crash (the checkpoint had logged its
  offsets, not its commit) finds its marker in the table and commits nothing. The aggregation's
  state lives in the checkpoint, so the replayed batch gives the same rows anyway;
- :func:`stop_at_batch_boundary` stops a query between micro-batches: it waits for the batch
  that is running to end, then stops the query before the next trigger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.io.delta import key_condition, merge

__all__ = ["idempotent_writes", "start_upsert_stream", "stop_at_batch_boundary"]

_TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
_TXN_VERSION = "spark.databricks.delta.write.txnVersion"
# The query's id is known once it started; its first batch waits for it at most this long.
_QUERY_ID_WAIT_S = 60.0


@contextmanager
def idempotent_writes(spark: SparkSession, *, app_id: str, version: int) -> Iterator[None]:
    """Delta commits of the block (a MERGE) carry ``(app_id, version)``: Delta skips a write whose
    ``app_id`` already committed ``version`` or a later one. Restored after the block."""
    previous = {key: spark.conf.get(key, None) for key in (_TXN_APP_ID, _TXN_VERSION)}
    spark.conf.set(_TXN_APP_ID, app_id)
    spark.conf.set(_TXN_VERSION, str(version))
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def start_upsert_stream(
    rows: DataFrame,
    path: str,
    *,
    keys: Sequence[str],
    checkpoint: str,
    query_name: str,
    trigger_seconds: int,
    updated_at: str = "updated_at",
) -> StreamingQuery:
    """Start MERGEing the changed rows of a streaming aggregation into the Delta table at ``path``.

    Args:
        rows: A streaming aggregation (one row per ``keys`` in each micro-batch's output); the
            table's columns but ``updated_at``.
        path: An existing Delta table (create it first, with its contract).
        keys: The table's key: a batch's row updates the table's row of the same key, or is
            inserted.
        checkpoint: The query's checkpoint folder, never shared.
        trigger_seconds: A micro-batch every this many seconds.
        updated_at: The column set to the MERGE's time.

    Returns:
        The running query (output mode ``update``).
    """
    started = threading.Event()
    query_id: list[str] = []

    def upsert_batch(batch: DataFrame, batch_id: int) -> None:
        if not started.wait(_QUERY_ID_WAIT_S):
            raise RuntimeError(f"{query_name}: the query's id was not known in {_QUERY_ID_WAIT_S:.0f} s")
        changed = batch.withColumn(updated_at, F.current_timestamp())
        with idempotent_writes(batch.sparkSession, app_id=query_id[0], version=batch_id):
            merge(
                changed,
                path,
                on=key_condition(list(keys)),
                clauses=lambda m: m.whenMatchedUpdateAll().whenNotMatchedInsertAll(),
            )

    query = (
        rows.writeStream.outputMode("update")
        .option("checkpointLocation", checkpoint)
        .queryName(query_name)
        .foreachBatch(upsert_batch)
        .trigger(processingTime=f"{trigger_seconds} seconds")
        .start()
    )
    query_id.append(str(query.id))
    started.set()
    return query


def stop_at_batch_boundary(query: StreamingQuery, *, timeout_s: float = 300.0) -> None:
    """Stop ``query`` between two micro-batches: wait for the running batch to end, then stop.

    A trigger that fires in the instant between the wait and the stop is interrupted; the
    checkpoint then holds its offsets without a commit, and the next start runs it again
    (exactly once all the same: see the module's docstring). After ``timeout_s`` the query is
    stopped wherever it is.
    """
    deadline = time.monotonic() + timeout_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.05)
    query.stop()
