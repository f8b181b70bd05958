"""Determinism: the same deliveries, in other files and another order, built with other Spark
settings, give identical tables.

The reference landing zone is copied with every file renamed so that the listing order
within each delivery is reversed (bronze lists ``(ingest_date, path)``, so the files reach
bronze in another order), and with five deliveries (orders, order lines, customers, clicks,
catalogue) each split into two files holding the same rows, the second half under the
lexically first name (the gzip delivery is split into plain JSON Lines). The copy goes
through ``ecom-pipeline run --layer all`` with 7 shuffle partitions and adaptive execution
on, where the reference lake was built in-process with 2 and adaptive execution off. Gold
must be identical to the reference by content; silver, quarantine and bronze too once each
``_source_file`` is mapped back to the reference file it came from.
"""

from __future__ import annotations

import gzip
import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.config import PipelineConfig
from pipeline_lib.landing import list_delivery_files
from pipeline_lib.schemas import LANDING_SOURCES, SOURCE_FILE
from tests.lake_compare import compare_lakes, lake_tables
from tests.support import cli_environment, run_cli

pytestmark = pytest.mark.slow

# Deliveries split into two files with the same rows: (source, ingest_date).
SPLIT = {("orders", "2026-03-02"), ("customers", "2026-03-01"), ("clicks", "2026-03-03")}
SPLIT |= {("catalogue", "2026-03-05"), ("order_items", "2026-03-05")}
SHUFFLE_PARTITIONS = "7"
# Only in the copy's file names: the hash of a row's source file (docs/quality.md).
FILE_NAME_DEPENDENT = {"quarantine": ["_row_key"]}


@dataclass(frozen=True)
class ShuffledBuild:
    landing: str
    lake: str
    origin: dict[str, str]  # copied file's full path -> the reference file's full path
    part: dict[str, int]  # copied file's full path -> 0 (whole file or first half) or 1 (second half)


def copy_landing_reordered(reference: Path, target: Path) -> dict[tuple[str, str, str], tuple[str, int]]:
    """Copy ``reference`` to ``target``, files renamed in reverse order, :data:`SPLIT` deliveries split.

    Returns:
        ``(source, delivery folder, new name) -> (reference name, part)`` for every file
        written; part 1 is the second half of a split file, 0 anything else.
    """
    origin = {}
    for folder in sorted(p for p in reference.glob("*/ingest_date=*") if p.is_dir()):
        source, delivery = folder.parent.name, folder.name
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        (target / source / delivery).mkdir(parents=True)
        for index, name in enumerate(names):
            prefix = chr(ord("z") - index)  # the first file gets the last name
            data = (folder / name).read_bytes()
            if (source, delivery.removeprefix("ingest_date=")) in SPLIT:
                first, second = split_delivery(name, data)
                plain = name.removesuffix(".gz")
                parts = {f"{prefix}2_{plain}": (first, 0), f"{prefix}1_{plain}": (second, 1)}
            else:
                parts = {f"{prefix}_{name}": (data, 0)}
            for new_name, (content, part) in parts.items():
                (target / source / delivery / new_name).write_bytes(content)
                origin[(source, delivery, new_name)] = (name, part)
    return origin


def split_delivery(name: str, data: bytes) -> tuple[bytes, bytes]:
    """Two files with the rows of ``data``: the first and second half (a CSV keeps its header)."""
    text = (gzip.decompress(data) if name.endswith(".gz") else data).decode("utf-8", errors="surrogateescape")
    # Bronze reads both formats line by line (CSV without multiLine), so any line ends a record.
    lines = re.findall(r"[^\n]*\n|[^\n]+$", text)
    header, body = ([lines[0]], lines[1:]) if name.endswith(".csv") else ([], lines)
    middle = len(body) // 2
    assert 0 < middle < len(body), f"{name}: too few rows to split"

    def encode(part: list[str]) -> bytes:
        return "".join(header + part).encode("utf-8", errors="surrogateescape")

    return encode(body[:middle]), encode(body[middle:])


@pytest.fixture(scope="module")
def shuffled_build(
    spark: SparkSession, reference_lake: PipelineConfig, tmp_path_factory: pytest.TempPathFactory
) -> ShuffledBuild:
    root = tmp_path_factory.mktemp("shuffled")
    landing, lake = root / "landing", root / "lake"
    origin_by_name = copy_landing_reordered(Path(reference_lake.paths.landing), landing)
    extra = {"ECOM__SPARK__CONF__SPARK.SQL.SHUFFLE.PARTITIONS": SHUFFLE_PARTITIONS}
    extra["ECOM__SPARK__CONF__SPARK.SQL.ADAPTIVE.ENABLED"] = "true"
    if os.environ.get("ECOM_HMAC_KEY"):  # the reference hashed e-mails with the caller's key
        extra["ECOM_HMAC_KEY"] = os.environ["ECOM_HMAC_KEY"]
    run_cli(
        *("run", "--layer", "all", "--landing", str(landing), "--lake", str(lake)),
        env=cli_environment(**extra),
    )
    # Full paths as the pipeline writes them in _source_file, copy -> reference.
    origin, part = {}, {}
    for source in LANDING_SOURCES:
        reference = {
            (Path(f.path).parent.name, Path(f.path).name): f.path
            for f in list_delivery_files(spark, reference_lake.paths.landing, source).files
        }
        for copied in list_delivery_files(spark, str(landing), source).files:
            delivery, name = Path(copied.path).parent.name, Path(copied.path).name
            reference_name, part[copied.path] = origin_by_name[(source, delivery, name)]
            origin[copied.path] = reference[(delivery, reference_name)]
    return ShuffledBuild(str(landing), str(lake), origin, part)


def test_the_copy_lists_the_same_rows_in_other_files_and_another_order(spark, reference_lake, shuffled_build):
    reordered = 0
    for source in LANDING_SOURCES:
        copied = list_delivery_files(spark, shuffled_build.landing, source).files
        reference = list_delivery_files(spark, reference_lake.paths.landing, source).files
        assert len(copied) == len(reference) + sum(s == source for s, _ in SPLIT)
        assert {shuffled_build.origin[f.path] for f in copied} == {f.path for f in reference}
        # The order in which bronze meets the rows: reference file, then half.
        order = [(shuffled_build.origin[f.path], shuffled_build.part[f.path]) for f in copied]
        reordered += sum(a > b for a, b in itertools.pairwise(order))
    assert reordered >= len(SPLIT) + 1, "the copy's listing order should differ from the reference's"


def test_gold_is_identical_to_the_reference(spark, reference_lake, shuffled_build):
    assert lake_tables(shuffled_build.lake, "gold") == lake_tables(reference_lake.paths.lake, "gold")
    comparisons = compare_lakes(
        spark, shuffled_build.lake, reference_lake.paths.lake, layers=("gold",), ops_tables=()
    )
    assert len(comparisons) == 8
    unequal = [c.describe() for c in comparisons if not c.equal]
    assert not unequal, "\n".join(unequal)


def test_silver_quarantine_and_bronze_are_identical_up_to_file_names(spark, reference_lake, shuffled_build):
    layers = ("bronze", "silver", "quarantine")
    for layer in layers:
        assert lake_tables(shuffled_build.lake, layer) == lake_tables(reference_lake.paths.lake, layer)
    to_reference = _file_mapping(shuffled_build.origin)
    comparisons = compare_lakes(
        spark,
        shuffled_build.lake,
        reference_lake.paths.lake,
        layers=layers,
        ops_tables=(),
        exclude=FILE_NAME_DEPENDENT,
        normalize=dict.fromkeys(layers, to_reference),
    )
    assert len(comparisons) >= 6 + 6 + 2
    unequal = [c.describe() for c in comparisons if not c.equal]
    assert not unequal, "\n".join(unequal)


def _file_mapping(origin: dict[str, str]) -> Callable[[DataFrame], DataFrame]:
    mapping = F.create_map(*[F.lit(v) for pair in origin.items() for v in pair])

    def to_reference(frame: DataFrame) -> DataFrame:
        if SOURCE_FILE not in frame.columns:
            return frame
        # A file name missing from the mapping stays as it is, and shows as a difference.
        return frame.withColumn(SOURCE_FILE, F.coalesce(mapping[F.col(SOURCE_FILE)], F.col(SOURCE_FILE)))

    return to_reference
