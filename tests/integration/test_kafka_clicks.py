"""bronze.clicks from a real Kafka topic, scheduled mode: exactly once, malformed messages kept, same silver.

One broker (tools/kafka_broker.py, KRaft, a free port: the session's ``broker`` fixture, in
tests/conftest.py) serves the module; each test has its own topic (3 partitions) and lake. No
mocks: Spark's Kafka source reads the broker, Delta's streaming sink writes the table.
docs/kafka.md describes what is proven here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from chispa import assert_df_equality
from confluent_kafka import OFFSET_END, TopicPartition
from confluent_kafka.admin import AdminClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ecom_generator import generate_landing
from ecom_generator.kafka import click_messages
from jobs.framework import JobFailedError, run_job
from jobs.graph import select_jobs
from jobs.runner import SKIPPED, run_jobs
from pipeline_lib.bronze.kafka import KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC
from pipeline_lib.bronze.schemas import CORRUPT_RECORD, INGEST_DATE, INGESTED_AT, RUN_ID, SOURCE_FILE
from pipeline_lib.config import PipelineConfig, load_config
from pipeline_lib.io.delta import read_table, table_version
from pipeline_lib.io.kafka import checkpoint_path, produce_lines
from pipeline_lib.ops.context import JobContext, JobResult, new_run_id
from tools.kafka_broker import Broker

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BRONZE_CLICKS = select_jobs("bronze", "clicks")[0]
# Silver columns that say where and when a row came from, not what the event is.
LINEAGE = (SOURCE_FILE, INGEST_DATE, INGESTED_AT, RUN_ID)


def kafka_config(broker: Broker, root: Path, topic: str, **overrides: object) -> PipelineConfig:
    """The local config reading clicks from ``topic`` of ``broker``, lake and landing under ``root``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
    environ["ECOM_CLICKS_KAFKA"] = broker.bootstrap_servers
    (root / "landing").mkdir(parents=True, exist_ok=True)
    settings = {
        "paths.landing": str(root / "landing"),
        "paths.lake": str(root / "lake"),
        "sources.clicks.topic": topic,
        **overrides,
    }
    return load_config("local", conf_dir=REPO / "conf", environ=environ, overrides=settings)


def event(number: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"E{number:05d}",
            "event_ts": "2026-03-02T10:00:00+01:00",
            "event_type": "page_view",
            "anonymous_id": f"A{number % 7}",
            "page_url": f"https://shop.example/p/{number}",
        }
    ).encode()


def produce(broker: Broker, topic: str, values: list[bytes]) -> None:
    assert produce_lines(
        broker.bootstrap_servers, topic, [(b"k%d" % (i % 5), v) for i, v in enumerate(values)]
    )


def drain(spark: SparkSession, config: PipelineConfig) -> JobResult:
    return run_job(BRONZE_CLICKS, JobContext(spark=spark, config=config, run_id=new_run_id()))


def bronze(spark: SparkSession, config: PipelineConfig) -> DataFrame:
    return read_table(spark, f"{config.paths.lake}/bronze/clicks")


def test_every_event_lands_once_and_a_run_with_nothing_new_commits_nothing(spark, broker, tmp_path):
    config = kafka_config(broker, tmp_path, "clicks-once")
    produce(broker, "clicks-once", [event(n) for n in range(300)])

    first = drain(spark, config)
    rows = bronze(spark, config)
    assert rows.count() == 300
    assert rows.select(KAFKA_PARTITION, KAFKA_OFFSET).distinct().count() == 300
    assert {r.event_id for r in rows.select("event_id").collect()} == {f"E{n:05d}" for n in range(300)}
    assert rows.where(F.col(CORRUPT_RECORD).isNotNull()).count() == 0
    assert rows.where(~F.col(SOURCE_FILE).rlike(r"^kafka://clicks-once/[0-2]$")).count() == 0
    assert rows.select(KAFKA_TOPIC).distinct().collect()[0][0] == "clicks-once"
    assert (first.rows_read, first.details["corrupt_rows"], first.details["start_offsets"]) == (300, 0, None)
    assert sum(first.details["end_offsets"]["clicks-once"].values()) == 300
    assert first.details["checkpoint"] == checkpoint_path(config.paths.lake, "bronze", "clicks")

    version = table_version(spark, f"{config.paths.lake}/bronze/clicks")
    second = drain(spark, config)
    assert table_version(spark, f"{config.paths.lake}/bronze/clicks") == version
    assert (second.rows_read, second.delta_versions, second.details["batches"]) == (0, {}, [])

    produce(broker, "clicks-once", [event(n) for n in range(300, 320)])
    third = drain(spark, config)
    assert third.rows_read == 20
    assert third.details["start_offsets"] == first.details["end_offsets"]
    assert bronze(spark, config).count() == 320


def test_a_lost_commit_of_the_checkpoint_replays_its_batch_without_duplicates(spark, broker, tmp_path):
    config = kafka_config(broker, tmp_path, "clicks-replay", **{"sources.clicks.max_offsets_per_trigger": 60})
    produce(broker, "clicks-replay", [event(n) for n in range(150)])
    first = drain(spark, config)
    assert len(first.details["batches"]) >= 3  # 150 offsets, at most 60 a batch
    commits = Path(checkpoint_path(config.paths.lake, "bronze", "clicks")) / "commits"
    last = max((p for p in commits.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    last.unlink()  # as if the run died after Delta's commit, before the checkpoint's
    (commits / f".{last.name}.crc").unlink(missing_ok=True)
    version = table_version(spark, f"{config.paths.lake}/bronze/clicks")

    drain(spark, config)

    assert last.exists()  # the batch ran again, with the offsets the checkpoint had logged for it,
    assert table_version(spark, f"{config.paths.lake}/bronze/clicks") == version  # and Delta skipped it
    rows = bronze(spark, config)
    assert rows.count() == 150
    assert rows.select(KAFKA_PARTITION, KAFKA_OFFSET).distinct().count() == 150


MALFORMED = {
    "not JSON": b"GET /p/1 HTTP/1.1",
    "truncated": b'{"event_id": "M1", "event_ts": "2026-03-0',
    "a JSON number": b"42",
    "a JSON array": b'[{"event_id": "M2"}]',
    "a JSON string": b'"page_view"',
    "JSON null": b"null",
    "empty": b"",
    "binary": bytes(range(256)),
    "huge": b"x" * 400_000,
}


def test_malformed_messages_are_kept_as_corrupt_records_and_counted(spark, broker, tmp_path):
    config = kafka_config(broker, tmp_path, "clicks-malformed")
    wrong_field_types = (
        b'{"event_id": 7, "quantity": "many", "utm": [1, 2], "device": "phone", "extra": {"a": 1}}'
    )
    produce(broker, "clicks-malformed", [event(1), *MALFORMED.values(), wrong_field_types, event(2)])

    result = drain(spark, config)

    rows = bronze(spark, config)
    assert rows.count() == len(MALFORMED) + 3
    corrupt = rows.where(F.col(CORRUPT_RECORD).isNotNull())
    assert corrupt.count() == len(MALFORMED)
    assert (result.details["rows"], result.details["corrupt_rows"], result.details["rescued_rows"]) == (
        len(MALFORMED) + 3,
        len(MALFORMED),
        1,
    )
    kept = {r[0] for r in corrupt.select(CORRUPT_RECORD).collect()}
    assert {"GET /p/1 HTTP/1.1", "42", '"page_view"', "null", "", "x" * 400_000} <= kept
    # A field of the wrong type is no corrupt message: bronze keeps its text, silver decides.
    typed = rows.where(F.col("event_id") == "7").first()
    assert (typed.quantity, typed.utm, typed.device, typed._rescued_data) == (
        "many",
        "[1,2]",
        "phone",
        '{"extra":"{\\"a\\":1}"}',
    )
    # The stream goes on: a later message is read by the next run.
    produce(broker, "clicks-malformed", [event(3)])
    assert drain(spark, config).rows_read == 1


def test_silver_clicks_from_kafka_equals_silver_clicks_from_files(spark, broker, tmp_path, base_config):
    landing = tmp_path / "landing"
    generate_landing(landing, start=dt.date(2026, 3, 2), days=2, scale=0.002, seed=11)
    sent = produce_lines(broker.bootstrap_servers, "clicks-same", click_messages(landing))
    clicks_jobs = [*select_jobs("bronze", "clicks"), *select_jobs("silver", "clicks")]

    from_files = base_config.with_paths(landing=str(landing), lake=str(tmp_path / "lake-files"))
    run_jobs(spark, from_files, clicks_jobs, [None])
    from_kafka = kafka_config(broker, tmp_path / "k", "clicks-same", **{"paths.landing": str(landing)})
    run_jobs(spark, from_kafka, clicks_jobs, [None])

    bronze_files = read_table(spark, f"{from_files.paths.lake}/bronze/clicks")
    assert bronze(spark, from_kafka).count() == bronze_files.count() == sent
    silver_files, silver_kafka = (
        read_table(spark, f"{c.paths.lake}/silver/clicks").drop(*LINEAGE) for c in (from_files, from_kafka)
    )
    assert silver_files.count() > 0.9 * sent
    assert_df_equality(silver_kafka, silver_files, ignore_row_order=True, ignore_nullable=True)
    runs = read_table(spark, f"{from_kafka.paths.lake}/ops/pipeline_runs").where(
        F.col("job") == "bronze.clicks"
    )
    assert "end_offsets" in runs.select("details").first()[0]
    # Nothing published since: the runner asks the broker for the end offsets and skips both jobs.
    again = run_jobs(spark, from_kafka, clicks_jobs, [None])
    assert [(o.job, o.status) for o in again] == [("bronze.clicks", SKIPPED), ("silver.clicks", SKIPPED)]


def test_offsets_deleted_before_they_were_read_fail_the_run_clearly(spark, broker, tmp_path):
    config = kafka_config(broker, tmp_path, "clicks-retention")
    produce(broker, "clicks-retention", [event(n) for n in range(30)])
    assert drain(spark, config).rows_read == 30
    produce(broker, "clicks-retention", [event(n) for n in range(30, 60)])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    partitions = admin.list_topics("clicks-retention", timeout=10).topics["clicks-retention"].partitions
    deleted = admin.delete_records([TopicPartition("clicks-retention", p, OFFSET_END) for p in partitions])
    for future in deleted.values():
        future.result(timeout=30)  # as retention would: the 30 unread messages are gone

    with pytest.raises(
        JobFailedError, match="offsets that bronze had not read yet are no longer in the topic"
    ):
        drain(spark, config)
    assert bronze(spark, config).count() == 30
