"""Clicks from Kafka without a broker: settings, the source's options and secrets, offsets read (no Spark)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from ecom_generator.kafka import click_messages
from pipeline_lib.bronze.kafka import offsets_read
from pipeline_lib.config import ConfigError, load_config, parse_bootstrap_servers
from pipeline_lib.io.kafka import KafkaSourceError, described_options, kafka_source_options
from pipeline_lib.session import KafkaJarsMissingError, kafka_jars

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"


def _load(environ: dict[str, str] | None = None, **overrides: object):
    return load_config("local", conf_dir=CONF, environ=environ or {}, overrides=overrides)


def test_clicks_come_from_files_by_default():
    clicks = _load().sources.clicks
    assert (clicks.kind, clicks.topic, clicks.starting_offsets, clicks.bootstrap_servers) == (
        "files",
        "clicks",
        "earliest",
        None,
    )
    assert not _load().sources.is_kafka("clicks")


def test_ecom_clicks_kafka_sets_the_brokers_and_the_kind():
    config = _load({"ECOM_CLICKS_KAFKA": "127.0.0.1:9092, kafka-2.internal:19092"})
    assert config.sources.clicks.kind == "kafka"
    assert config.sources.clicks.bootstrap_servers == "127.0.0.1:9092,kafka-2.internal:19092"
    assert config.sources.is_kafka("clicks")
    assert not config.sources.is_kafka("orders")
    assert not config.sources.is_database("clicks")
    topic = _load({"ECOM_CLICKS_KAFKA": "h:1"}, **{"sources.clicks.topic": "web.clicks-v2"})
    assert topic.sources.clicks.topic == "web.clicks-v2"


@pytest.mark.parametrize(
    ("environ", "overrides", "message"),
    [
        ({"ECOM_CLICKS_KAFKA": "localhost"}, {}, r"bootstrap_servers.*host:port.*set by ECOM_CLICKS_KAFKA"),
        ({"ECOM_CLICKS_KAFKA": "h:99999"}, {}, r"'h:99999' is not host:port"),
        ({}, {"sources.clicks.kind": "kafka"}, r"need its brokers: set ECOM_CLICKS_KAFKA"),
        ({}, {"sources.clicks.kind": "stream"}, r"sources.clicks.kind.*one of 'files' or 'kafka'"),
        ({}, {"sources.clicks.topic": "two words"}, r"expected a Kafka topic name"),
        ({}, {"sources.clicks.max_offsets_per_trigger": 0}, r"a positive number of offsets"),
        ({}, {"sources.clicks.starting_offsets": "yesterday"}, r"one of 'earliest' or 'latest'"),
        ({}, {"sources.clicks.options": {"subscribe": "x"}}, r"only Kafka client settings"),
        ({}, {"sources.clicks.options": {"kafka.bootstrap.servers": "x:1"}}, r"set by the pipeline"),
        ({}, {"sources.clicks.options": {"kafka.sasl.jaas.config": "x"}}, r"holds a secret.*environment"),
        ({}, {"sources.clicks.options": {"kafka.ssl.key.password": "x"}}, r"holds a secret"),
        (
            {"ECOM_CLICKS_KAFKA": "h:1"},
            {"sources.clicks.options": {"kafka.security.protocol": "SASL_SSL"}},
            r"needs kafka.sasl.mechanism",
        ),
    ],
)
def test_bad_kafka_settings_are_refused_with_the_key_and_the_reason(environ, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _load(environ, **overrides)


def test_a_secret_value_is_never_repeated_in_the_error():
    with pytest.raises(ConfigError) as caught:
        _load({}, **{"sources.clicks.options": {"kafka.sasl.jaas.config": "password=hunter2"}})
    assert "hunter2" not in str(caught.value)


def test_bootstrap_servers_parse():
    assert parse_bootstrap_servers("a:1,[::1]:9092") == ("a:1", "[::1]:9092")
    with pytest.raises(ValueError, match="not host:port"):
        parse_bootstrap_servers("a:1,")


def test_the_source_options_read_everything_and_fail_on_data_loss():
    settings = _load(
        {"ECOM_CLICKS_KAFKA": "h:1"},
        **{"sources.clicks.max_offsets_per_trigger": 500, "sources.clicks.options": {"kafka.client.id": "x"}},
    ).sources.clicks
    options = kafka_source_options(settings, environ={})
    assert options == {
        "kafka.bootstrap.servers": "h:1",
        "subscribe": "clicks",
        "startingOffsets": "earliest",
        "failOnDataLoss": "true",
        "includeHeaders": "false",
        "maxOffsetsPerTrigger": "500",
        "kafka.client.id": "x",
    }


def test_the_sasl_password_comes_from_the_environment_only_and_is_redacted():
    overrides = {
        "sources.clicks.sasl_username": "tracker",
        "sources.clicks.options": {
            "kafka.security.protocol": "SASL_SSL",
            "kafka.sasl.mechanism": "SCRAM-SHA-512",
        },
    }
    settings = _load({"ECOM_CLICKS_KAFKA": "h:1"}, **overrides).sources.clicks
    with pytest.raises(KafkaSourceError, match="ECOM_CLICKS_KAFKA_PASSWORD is not"):
        kafka_source_options(settings, environ={})
    options = kafka_source_options(settings, environ={"ECOM_CLICKS_KAFKA_PASSWORD": 'pa"ss'})
    assert options["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="tracker" password="pa\\"ss";'
    )
    described = described_options(options)
    assert "pa" + '\\"ss' not in str(described) and "redacted" in described["kafka.sasl.jaas.config"]
    assert described["kafka.security.protocol"] == "SASL_SSL"


def test_offsets_read_sum_the_batches_that_read_messages():
    progress = [
        {
            "batchId": 0,
            "numInputRows": 3,
            "sources": [{"startOffset": None, "endOffset": '{"clicks":{"0":2,"1":1}}'}],
            "observedMetrics": {"m": {"rows": 3, "corrupt_rows": 1, "rescued_rows": 0}},
        },
        {
            "batchId": 1,
            "numInputRows": 2,
            "sources": [
                {"startOffset": {"clicks": {"0": 2, "1": 1}}, "endOffset": {"clicks": {"0": 3, "1": 2}}}
            ],
            "observedMetrics": {"m": {"rows": 2, "corrupt_rows": 0, "rescued_rows": 1}},
        },
        {"batchId": 2, "numInputRows": 0, "sources": [{"startOffset": None, "endOffset": None}]},
    ]
    assert offsets_read(progress, metrics_name="m") == {
        "batches": [0, 1],
        "rows": 5,
        "corrupt_rows": 1,
        "rescued_rows": 1,
        "start_offsets": None,
        "end_offsets": {"clicks": {"0": 3, "1": 2}},
    }
    assert offsets_read([], metrics_name="m")["end_offsets"] is None


def test_click_messages_are_the_delivered_lines_keyed_by_anonymous_id(tmp_path):
    day1, day2 = (
        tmp_path / "clicks" / "ingest_date=2026-03-01",
        tmp_path / "clicks" / "ingest_date=2026-03-02",
    )
    day1.mkdir(parents=True)
    day2.mkdir(parents=True)
    (day2 / "clicks.jsonl").write_bytes(b'{"event_id":"3","anonymous_id":"a2"}\n')
    with gzip.open(day1 / "clicks.jsonl.gz", "wb") as out:
        out.write(b'{"event_id":"1","anonymous_id":"a1"}\n\n{"event_id":"2"\n[1]\n\xff{}\n')
    assert list(click_messages(tmp_path)) == [
        (b"a1", b'{"event_id":"1","anonymous_id":"a1"}'),
        (None, b'{"event_id":"2"'),
        (None, b"[1]"),
        (None, b"\xff{}"),
        (b"a2", b'{"event_id":"3","anonymous_id":"a2"}'),
    ]


def test_a_missing_connector_names_make_setup(tmp_path):
    with pytest.raises(KafkaJarsMissingError, match="make setup"):
        kafka_jars(tmp_path)
