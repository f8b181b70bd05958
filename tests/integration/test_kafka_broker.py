"""The real Kafka broker of tools/kafka_broker.py: topics, an idempotent producer, a consumer, stop.

No Spark here: these tests check the broker that the click-event stream's tests will read from.
One broker (a JVM of about 300 MiB) serves the module on a free port under a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tools.kafka_broker import Broker, KafkaBrokerError, free_port, port_is_free, start_broker

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TOPIC = "click-events"
PARTITIONS = 3
MESSAGES = 1_000
USERS = 37


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with start_broker(tmp_path_factory.mktemp("kafka")) as running:
        yield running


def consume(bootstrap_servers: str, topic: str, expected: int, timeout: float = 60.0) -> list[dict]:
    """Read ``expected`` messages of ``topic`` from the start, in a new consumer group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"test-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < expected and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            received.append(
                {
                    "key": message.key().decode(),
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "value": json.loads(message.value()),
                }
            )
    finally:
        consumer.close()
    return received


def test_created_topic_has_the_requested_partitions(broker: Broker) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    futures = admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])

    futures[TOPIC].result(timeout=30)

    actual = admin.list_topics(topic=TOPIC, timeout=10).topics[TOPIC]
    assert actual.error is None
    assert sorted(actual.partitions) == list(range(PARTITIONS))


def test_idempotent_producer_messages_come_back_in_order_per_key(broker: Broker) -> None:
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True, "linger.ms": 5}
    )
    delivered: list[tuple[str, int]] = []
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(str(error))
        else:
            delivered.append((message.key().decode(), message.partition()))

    expected_order: dict[str, list[int]] = defaultdict(list)
    for seq in range(MESSAGES):
        user = f"user-{seq % USERS:03d}"
        expected_order[user].append(seq)
        value = json.dumps({"user_id": user, "seq": seq}).encode()
        producer.produce(TOPIC, key=user.encode(), value=value, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    assert failures == []
    assert len(delivered) == MESSAGES

    received = consume(broker.bootstrap_servers, TOPIC, MESSAGES)

    assert len(received) == MESSAGES
    assert Counter(m["key"] for m in received) == Counter({k: len(v) for k, v in expected_order.items()})
    assert all(m["value"]["user_id"] == m["key"] for m in received)
    actual_order: dict[str, list[int]] = defaultdict(list)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for message in received:
        actual_order[message["key"]].append(message["value"]["seq"])
        partitions_of[message["key"]].add(message["partition"])
    assert actual_order == expected_order
    assert all(len(p) == 1 for p in partitions_of.values()), "a key was spread over partitions"
    assert {m["partition"] for m in received} == set(range(PARTITIONS))
    # No duplicates: one offset per message in each partition.
    assert len({(m["partition"], m["offset"]) for m in received}) == MESSAGES


def test_start_refuses_a_folder_whose_broker_runs(broker: Broker) -> None:
    with pytest.raises(KafkaBrokerError, match="already runs from"):
        start_broker(broker.kafka_dir)


def test_start_refuses_a_port_in_use(broker: Broker, tmp_path: Path) -> None:
    with pytest.raises(KafkaBrokerError, match=f"port {broker.port} on 127.0.0.1 is in use"):
        start_broker(tmp_path / "kafka", port=broker.port)


def test_stop_ends_the_process_and_frees_the_port(broker: Broker) -> None:
    assert broker.is_running()

    broker.stop()

    assert not broker.is_running()
    with pytest.raises(ProcessLookupError):
        os.kill(broker.pid, 0)
    assert port_is_free(broker.port)
    assert not broker.pid_file.exists()
    broker.stop()  # a no-op once stopped


def run_cli(action: str, kafka_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "kafka_broker.py"), action],
        env={**os.environ, "KAFKA_DIR": str(kafka_dir), "KAFKA_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_up_status_down_keeps_the_data_for_the_next_up(tmp_path: Path) -> None:
    kafka_dir = tmp_path / "kafka"
    port = free_port()
    try:
        up = run_cli("up", kafka_dir, port)
        assert up.returncode == 0, up.stderr
        assert f"running at 127.0.0.1:{port}" in up.stdout
        assert run_cli("status", kafka_dir, port).returncode == 0
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "enable.idempotence": True})
        producer.produce("kept", key=b"user-1", value=json.dumps({"seq": 1}).encode())
        assert producer.flush(30) == 0

        assert run_cli("down", kafka_dir, port).returncode == 0
        assert run_cli("status", kafka_dir, port).returncode == 1
        assert port_is_free(port)
        assert run_cli("down", kafka_dir, port).returncode == 0  # a no-op when not running

        port = free_port()
        assert run_cli("up", kafka_dir, port).returncode == 0
        received = consume(f"127.0.0.1:{port}", "kept", expected=1)
    finally:
        run_cli("down", kafka_dir, port)

    assert [(m["key"], m["value"]) for m in received] == [("user-1", {"seq": 1})]
    assert (kafka_dir / "logs" / "server.log").stat().st_size > 0
