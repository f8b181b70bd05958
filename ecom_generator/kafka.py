"""The generated click deliveries as Kafka messages: the tracker publishing to a topic.

``ecom-pipeline generate ... --to-kafka host:port`` writes the landing zone, then sends every
line of its click deliveries, day by day and in file order, as one message (the value is the
line's bytes exactly, so duplicates, late events and malformed lines arrive as they do in the
files; the key is the event's ``anonymous_id``, so one visitor's events stay in order in one
partition). A line that is not a JSON object with an ``anonymous_id`` has no key. The producer
(``pipeline_lib.io.kafka.produce_lines``) is idempotent. No Spark.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

_DELIVERY = re.compile(r"ingest_date=(\d{4}-\d{2}-\d{2})")


def click_files(landing: str | Path) -> list[Path]:
    """The click delivery files of ``landing``, oldest delivery first, then by name."""
    root = Path(landing) / "clicks"
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _DELIVERY.fullmatch(p.name))
    return [
        f
        for folder in folders
        for f in sorted(folder.iterdir())
        if f.is_file() and not f.name.startswith((".", "_"))
    ]


def click_messages(landing: str | Path) -> Iterator[tuple[bytes | None, bytes]]:
    """``(key, value)`` per line of the click deliveries: ``anonymous_id`` (or None) and the line.

    Blank lines hold no event (JSON Lines allows them) and are not sent; the line break is not
    part of the value.
    """
    for path in click_files(landing):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as lines:
            for raw in lines:
                value = raw.rstrip(b"\r\n")
                if value.strip():
                    yield _key_of(value), value


def _key_of(value: bytes) -> bytes | None:
    try:
        event = json.loads(value)
    except ValueError:  # malformed JSON, invalid UTF-8: sent without a key, as a tracker bug would
        return None
    anonymous_id = event.get("anonymous_id") if isinstance(event, dict) else None
    return anonymous_id.encode() if isinstance(anonymous_id, str) and anonymous_id else None
