"""The test broker's KRaft cluster id: Kafka's form, and never one its storage tool misreads."""

from __future__ import annotations

import base64
import re

from tools.kafka_broker import new_cluster_id


def test_cluster_ids_are_kafka_uuids_and_never_start_with_a_dash():
    # One random id in 64 starts with "-"; "kafka-storage format --cluster-id -Xy..." then took
    # the id for an option and the broker did not start (a CI run failed so). 4,000 draws miss
    # the dash with probability (63/64) ** 4000, about 2e-28.
    ids = [new_cluster_id() for _ in range(4_000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id) for cluster_id in ids)
    assert all(len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 for cluster_id in ids)
    assert len(set(ids)) == len(ids)
