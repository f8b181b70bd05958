"""The progress line's lag: offsets published but not read yet, from a Kafka progress report."""

from __future__ import annotations

from pipeline_lib.io.kafka import lag_behind_latest


def test_lag_is_the_latest_offsets_less_the_batch_end_summed_over_partitions():
    report = {
        "sources": [
            {
                "endOffset": '{"clicks": {"0": 10, "1": 7}}',
                "latestOffset": '{"clicks": {"0": 15, "1": 7, "2": 3}}',
            }
        ]
    }
    assert lag_behind_latest(report) == 5 + 0 + 3


def test_lag_is_unknown_without_both_offsets():
    assert lag_behind_latest({}) is None
    no_latest = {"sources": [{"endOffset": '{"clicks": {"0": 1}}', "latestOffset": None}]}
    assert lag_behind_latest(no_latest) is None
