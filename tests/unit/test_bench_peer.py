"""The benchmark's DuckDB peer computes the same gold aggregates as Spark, and its equality check can fail.

The benchmark (``bench/``) times ``customer_segments`` and ``product_popularity`` in DuckDB
over the silver tables and refuses a result that differs from Spark's. These tests keep
that check honest in CI: on the session's reference lake (read-only) the peer equals the
gold tables the jobs wrote and the pure Spark transforms at another as-of date; on literal
tables, the comparison reports changed, missing and duplicated rows and type mismatches,
and the peer's scores follow the documented tie rule.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from bench.peer_duckdb import (
    PeerInputError,
    compare_tables,
    read_gold_partition,
    read_silver,
    run_peer,
)
from pipeline_lib.config import PipelineConfig
from tests.support import REFERENCE_DAYS, REFERENCE_START


def _peer_settings(config: PipelineConfig) -> dict:
    return {
        "score_buckets": config.segments.score_buckets,
        "mapping": [(rule.segment, rule.when) for rule in config.segments.mapping],
        "windows_days": config.pipeline.popularity_windows_days,
    }


@pytest.fixture(scope="module")
def silver(reference_lake: PipelineConfig) -> dict[str, pa.Table]:
    return read_silver(Path(reference_lake.paths.lake))


@pytest.mark.slow
def test_peer_equals_the_gold_tables_spark_wrote(reference_lake: PipelineConfig, silver) -> None:
    from deltalake import DeltaTable

    lake = Path(reference_lake.paths.lake)
    stored = DeltaTable(str(lake / "gold" / "customer_segments")).to_pyarrow_table(columns=["as_of_date"])
    as_of = stored.column("as_of_date")[0].as_py()

    actual = run_peer(silver, as_of=as_of, **_peer_settings(reference_lake))

    for table in ("customer_segments", "product_popularity"):
        expected = read_gold_partition(lake, table, as_of)
        diff = compare_tables(expected, actual[table])
        assert expected.num_rows >= 10, f"gold.{table} as of {as_of} is too small to prove anything"
        assert diff.equal, f"{table}: {diff.summary()} {diff.examples}"


@pytest.mark.slow
def test_peer_equals_the_spark_transforms_at_an_earlier_as_of(
    spark, reference_lake: PipelineConfig, silver
) -> None:
    from pipeline_lib.gold.popularity import product_popularity
    from pipeline_lib.gold.segments import customer_segments
    from pipeline_lib.io.delta import read_table

    lake = reference_lake.paths.lake
    settings = _peer_settings(reference_lake)
    # Mid-run: later orders and events must be ignored, and the 7-day window is cut at the start.
    as_of = REFERENCE_START + dt.timedelta(days=REFERENCE_DAYS // 2)
    orders, order_items, clicks, products = (
        read_table(spark, f"{lake}/silver/{name}") for name in ("orders", "order_items", "clicks", "products")
    )
    expected = {
        "customer_segments": customer_segments(
            orders,
            order_items=order_items,
            as_of=as_of,
            score_buckets=settings["score_buckets"],
            mapping=settings["mapping"],
        ).toArrow(),
        "product_popularity": product_popularity(
            clicks,
            orders=orders,
            order_items=order_items,
            products=products,
            as_of=as_of,
            windows_days=settings["windows_days"],
        ).toArrow(),
    }

    actual = run_peer(silver, as_of=as_of, **settings)

    for table, rows in expected.items():
        diff = compare_tables(rows, actual[table])
        assert rows.num_rows >= 5, f"{table} as of {as_of} is too small to prove anything"
        assert diff.equal, f"{table}: {diff.summary()} {diff.examples}"


# --- The comparison itself (no Spark) ------------------------------------------------------------

ROWS_SCHEMA = pa.schema(
    [
        ("product_id", pa.string()),
        ("units", pa.int64()),
        ("revenue", pa.decimal128(22, 6)),
        ("rate", pa.float64()),
    ]
)


def _rows(*rows: tuple) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(ROWS_SCHEMA.names, row, strict=True)) for row in rows], ROWS_SCHEMA)


BASE_ROWS = (
    ("P1", 3, Decimal("10.500000"), 0.25),
    ("P2", 1, Decimal("4.000000"), None),
    (None, 0, Decimal("0.000000"), 1 / 3),
)


def test_comparison_accepts_the_same_rows_in_another_order_and_tiny_float_noise() -> None:
    expected = _rows(*BASE_ROWS)
    actual = _rows((*BASE_ROWS[2][:3], 1 / 3 + 1e-15), BASE_ROWS[0], BASE_ROWS[1])

    diff = compare_tables(expected, actual)

    assert diff.equal, diff.summary()


@pytest.mark.parametrize(
    ("actual_rows", "only_expected", "only_actual"),
    [
        pytest.param((("P1", 3, Decimal("10.500001"), 0.25), *BASE_ROWS[1:]), 1, 1, id="decimal off by 1e-6"),
        pytest.param((("P1", 3, Decimal("10.500000"), 0.2500001), *BASE_ROWS[1:]), 1, 1, id="double off"),
        pytest.param(BASE_ROWS[:2], 1, 0, id="missing row"),
        pytest.param((*BASE_ROWS, BASE_ROWS[0]), 0, 1, id="duplicated row"),
        pytest.param((("P2", 1, Decimal("4.000000"), 0.0), *BASE_ROWS[::2]), 1, 1, id="null versus zero"),
    ],
)
def test_comparison_reports_changed_missing_and_duplicated_rows(
    actual_rows, only_expected, only_actual
) -> None:
    diff = compare_tables(_rows(*BASE_ROWS), _rows(*actual_rows))

    assert not diff.equal
    assert (diff.only_expected, diff.only_actual) == (only_expected, only_actual)
    assert diff.examples


def test_comparison_reports_a_column_of_another_type_or_missing() -> None:
    expected = _rows(*BASE_ROWS)
    retyped = expected.set_column(1, "units", expected.column("units").cast(pa.int32()))
    missing = expected.drop_columns(["rate"])

    assert compare_tables(expected, retyped).column_problems == ["column units: int64 vs int32"]
    assert compare_tables(expected, missing).column_problems == ["column rate missing in DuckDB"]


# --- The peer's rules on literal silver tables (no Spark) -----------------------------------------


def _literal_silver(frequencies: list[int], *, as_of: dt.date) -> dict[str, pa.Table]:
    orders, items = [], []
    for number, frequency in enumerate(frequencies):
        for n in range(frequency):
            order_id = f"O{number}-{n}"
            orders.append(
                {
                    "order_id": order_id,
                    "customer_id": f"C{number}",
                    "order_status": "paid",
                    "order_date": as_of,
                }
            )
            items.append(
                {
                    "order_id": order_id,
                    "line_no": 1,
                    "product_id": "P1",
                    "quantity": 1,
                    "net_amount_base": Decimal("5.000000"),
                }
            )
    # Not revenue, or too late: none of these count.
    orders += [
        {"order_id": "X1", "customer_id": "C0", "order_status": "CANCELLED", "order_date": as_of},
        {"order_id": "X2", "customer_id": "C0", "order_status": None, "order_date": as_of},
        {
            "order_id": "X3",
            "customer_id": "C0",
            "order_status": "paid",
            "order_date": as_of + dt.timedelta(days=1),
        },
    ]
    orders_schema = pa.schema(
        [
            ("order_id", pa.string()),
            ("customer_id", pa.string()),
            ("order_status", pa.string()),
            ("order_date", pa.date32()),
        ]
    )
    items_schema = pa.schema(
        [
            ("order_id", pa.string()),
            ("line_no", pa.int32()),
            ("product_id", pa.string()),
            ("quantity", pa.int32()),
            ("net_amount_base", pa.decimal128(22, 6)),
        ]
    )
    return {
        "orders": pa.Table.from_pylist(orders, orders_schema),
        "order_items": pa.Table.from_pylist(items, items_schema),
        "clicks": pa.table(
            {
                "product_id": pa.array([], pa.string()),
                "event_date": pa.array([], pa.date32()),
                "event_type": pa.array([], pa.string()),
            }
        ),
        "products": pa.table(
            {
                "product_id": ["P1"],
                "category_l1": ["Toys"],
                "valid_from": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.UTC)], pa.timestamp("us", "UTC")),
            }
        ),
    }


def test_peer_scores_share_ties_as_documented() -> None:
    as_of = dt.date(2026, 3, 10)
    # docs/segments_and_popularity.md: frequencies 1x6, 2x2, 3, 5 give f-scores 1x6, 4x2, 5, 5.
    silver = _literal_silver([1, 1, 1, 1, 1, 1, 2, 2, 3, 5], as_of=as_of)

    result = run_peer(silver, as_of=as_of, score_buckets=5, mapping=[("All", "true")], windows_days=[7])

    scores = sorted(
        zip(
            result["customer_segments"].column("frequency").to_pylist(),
            result["customer_segments"].column("f_score").to_pylist(),
            strict=True,
        )
    )
    assert scores == [(1, 1)] * 6 + [(2, 4), (2, 4), (3, 5), (5, 5)]
    popularity = result["product_popularity"].to_pylist()
    assert [
        (r["product_id"], r["purchases"], r["units"], r["revenue"], r["category_l1"]) for r in popularity
    ] == [("P1", 18, 18, Decimal("90.000000"), "Toys")]


def test_peer_refuses_unusable_settings() -> None:
    silver = _literal_silver([1], as_of=dt.date(2026, 3, 10))

    with pytest.raises(PeerInputError, match="windows must be"):
        run_peer(
            silver, as_of=dt.date(2026, 3, 10), score_buckets=5, mapping=[("All", "true")], windows_days=[]
        )
    with pytest.raises(PeerInputError, match="score buckets"):
        run_peer(
            silver, as_of=dt.date(2026, 3, 10), score_buckets=0, mapping=[("All", "true")], windows_days=[7]
        )
