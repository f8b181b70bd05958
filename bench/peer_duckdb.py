"""The peer: ``customer_segments`` and ``product_popularity`` in DuckDB, from the same silver data.

The silver Delta tables are read through the ``deltalake`` package into Arrow (only the
columns the aggregates need, as Spark's column pruning does), the two aggregates are one
DuckDB SQL statement each, and the results are written as Delta tables with ``deltalake``,
so both sides pay read, compute and write. The SQL replicates the rules of
``pipeline_lib.gold.segments`` and ``pipeline_lib.gold.popularity``
(``docs/segments_and_popularity.md``) exactly:

* revenue order: status not ``cancelled``/``returned`` in any case, null status excluded,
  known ``order_date`` on or before the as-of date;
* score ``1 + floor(buckets * (rank() - 1) / n)`` ranked worst first (ties share a score),
  segment = first condition of the configured mapping that holds (no default);
* popularity windows ``as_of - (w - 1) .. as_of``, ranks by revenue, units, views desc then
  ``product_id``, category of the product version valid at the end of the as-of date.

The mapping's conditions are used as written: they are plain SQL booleans over ``r``, ``f``
and ``m`` that Spark and DuckDB read alike (a condition using a Spark-only function would
need translating). :func:`compare_tables` checks that the peer's rows equal Spark's gold
rows as multisets (decimals exact, doubles to 12 decimal places, same columns and types).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# The silver columns each aggregate reads (column pruning, as Spark does).
SILVER_COLUMNS: dict[str, list[str]] = {
    "orders": ["order_id", "customer_id", "order_status", "order_date"],
    "order_items": ["order_id", "line_no", "product_id", "quantity", "net_amount_base"],
    "clicks": ["product_id", "event_date", "event_type"],
    "products": ["product_id", "category_l1", "valid_from"],
}
NON_REVENUE_STATUSES = ("cancelled", "returned")  # pipeline_lib.gold.facts.NON_REVENUE_STATUSES
BASE_MONEY_SQL = "DECIMAL(22, 6)"  # pipeline_lib.silver.schemas.BASE_MONEY
FLOAT_DIGITS = 12


class PeerInputError(ValueError):
    """The peer cannot run: a silver table is missing, or the windows or mapping are unusable."""


def read_silver(lake: Path) -> dict[str, pa.Table]:
    """The silver tables the aggregates need, as Arrow tables (current versions).

    Raises:
        PeerInputError: A table is missing.
    """
    from deltalake import DeltaTable

    tables = {}
    for table, columns in SILVER_COLUMNS.items():
        path = lake / "silver" / table
        if not (path / "_delta_log").is_dir():
            raise PeerInputError(f"no Delta table silver.{table} at {path}: run the silver layer first")
        tables[table] = DeltaTable(str(path)).to_pyarrow_table(columns=columns)
    return tables


def _date(as_of: dt.date) -> str:
    return f"DATE '{as_of.isoformat()}'"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _revenue_orders(as_of: dt.date, from_date: dt.date | None = None) -> str:
    statuses = ", ".join(_quote(s) for s in NON_REVENUE_STATUSES)
    lower_bound = "" if from_date is None else f" AND order_date >= {_date(from_date)}"
    return (
        f"SELECT order_id, customer_id, order_date FROM orders "
        f"WHERE coalesce(lower(order_status) NOT IN ({statuses}), false) "
        f"AND order_date IS NOT NULL AND order_date <= {_date(as_of)}{lower_bound}"
    )


def _score(column: str, buckets: int, *, higher_is_better: bool) -> str:
    worst_first = "ASC NULLS FIRST" if higher_is_better else "DESC NULLS FIRST"
    return (
        f"CAST(1 + floor({buckets} * (rank() OVER (ORDER BY {column} {worst_first}) - 1) "
        f"/ CAST(count(*) OVER () AS DOUBLE)) AS INTEGER)"
    )


def customer_segments_sql(as_of: dt.date, *, score_buckets: int, mapping: Sequence[tuple[str, str]]) -> str:
    """The DuckDB statement for one as-of date of ``customer_segments`` (tables: orders, order_items).

    Raises:
        PeerInputError: ``score_buckets`` below 1, or an empty or blank mapping.
    """
    if score_buckets < 1:
        raise PeerInputError(f"score buckets must be at least 1, got {score_buckets}")
    if not mapping or any(not segment or not str(when).strip() for segment, when in mapping):
        raise PeerInputError("the segment mapping must be a non-empty list of (segment, condition) pairs")
    cases = " ".join(f"WHEN ({when}) THEN {_quote(segment)}" for segment, when in mapping)
    return f"""
WITH revenue_orders AS ({_revenue_orders(as_of)} AND customer_id IS NOT NULL),
order_revenue AS (
    SELECT order_id, sum(net_amount_base) AS order_revenue FROM order_items GROUP BY order_id
),
rfm AS (
    SELECT o.customer_id,
           count(DISTINCT o.order_id) AS frequency,
           coalesce(sum(r.order_revenue), 0) AS monetary,
           min(o.order_date) AS first_order_date,
           max(o.order_date) AS last_order_date,
           date_diff('day', max(o.order_date), {_date(as_of)}) AS recency_days
    FROM revenue_orders AS o LEFT JOIN order_revenue AS r ON o.order_id = r.order_id
    GROUP BY o.customer_id
),
scored AS (
    SELECT *,
           {_score("recency_days", score_buckets, higher_is_better=False)} AS r_score,
           {_score("frequency", score_buckets, higher_is_better=True)} AS f_score,
           {_score("monetary", score_buckets, higher_is_better=True)} AS m_score
    FROM rfm
),
named AS (SELECT *, r_score AS r, f_score AS f, m_score AS m FROM scored)
SELECT CAST(customer_id AS VARCHAR) AS customer_id,
       {_date(as_of)} AS as_of_date,
       CAST(recency_days AS INTEGER) AS recency_days,
       CAST(frequency AS BIGINT) AS frequency,
       CAST(monetary AS {BASE_MONEY_SQL}) AS monetary,
       r_score, f_score, m_score,
       CASE {cases} END AS segment,
       first_order_date, last_order_date
FROM named
"""


def _check_windows(windows_days: Sequence[int]) -> tuple[int, ...]:
    windows = tuple(sorted(set(int(w) for w in windows_days)))
    if not windows or windows[0] < 1:
        raise PeerInputError(
            f"windows must be a non-empty list of positive day counts, got {list(windows_days)}"
        )
    return windows


def product_popularity_sql(as_of: dt.date, *, windows_days: Sequence[int]) -> str:
    """The DuckDB statement for one as-of date of ``product_popularity``
    (tables: clicks, orders, order_items, products).

    Raises:
        PeerInputError: No window, or a window below one day.
    """
    windows = _check_windows(windows_days)
    first_day = as_of - dt.timedelta(days=windows[-1] - 1)
    days_before = f"date_diff('day', {{date}}, {_date(as_of)})"
    in_window = f"{days_before} >= 0 AND {days_before} < w.window_days"
    order_by = (
        "revenue DESC NULLS LAST, units DESC NULLS LAST, views DESC NULLS LAST, product_id ASC NULLS LAST"
    )
    return f"""
WITH windows AS (SELECT CAST(unnest([{", ".join(str(w) for w in windows)}]) AS INTEGER) AS window_days),
click_activity AS (
    SELECT c.product_id, w.window_days,
           count(*) FILTER (WHERE c.event_type = 'product_view') AS views,
           count(*) FILTER (WHERE c.event_type = 'add_to_cart') AS add_to_carts
    FROM clicks AS c JOIN windows AS w ON {in_window.format(date="c.event_date")}
    WHERE c.product_id IS NOT NULL AND c.event_type IN ('product_view', 'add_to_cart')
    GROUP BY c.product_id, w.window_days
),
revenue_lines AS (
    SELECT o.order_id, o.order_date, i.product_id, i.quantity, i.net_amount_base
    FROM ({_revenue_orders(as_of, first_day)}) AS o JOIN order_items AS i ON o.order_id = i.order_id
    WHERE i.product_id IS NOT NULL
),
sales AS (
    SELECT l.product_id, w.window_days,
           count(DISTINCT l.order_id) AS purchases,
           coalesce(sum(l.quantity), 0) AS units,
           coalesce(sum(l.net_amount_base), 0) AS revenue
    FROM revenue_lines AS l JOIN windows AS w ON {in_window.format(date="l.order_date")}
    GROUP BY l.product_id, w.window_days
),
activity AS (
    SELECT coalesce(c.product_id, s.product_id) AS product_id,
           coalesce(c.window_days, s.window_days) AS window_days,
           coalesce(c.views, 0) AS views,
           coalesce(c.add_to_carts, 0) AS add_to_carts,
           coalesce(s.purchases, 0) AS purchases,
           coalesce(s.units, 0) AS units,
           coalesce(s.revenue, 0) AS revenue
    FROM click_activity AS c
    FULL OUTER JOIN sales AS s ON c.product_id = s.product_id AND c.window_days = s.window_days
),
versions AS (
    SELECT product_id, category_l1,
           row_number() OVER (
               PARTITION BY product_id
               ORDER BY CASE WHEN CAST(valid_from AS DATE) <= {_date(as_of)} THEN valid_from END
                            DESC NULLS LAST,
                        valid_from ASC NULLS LAST, category_l1 ASC NULLS LAST
           ) AS preference
    FROM products WHERE product_id IS NOT NULL
),
categorized AS (
    SELECT a.*, v.category_l1
    FROM activity AS a LEFT JOIN versions AS v ON a.product_id = v.product_id AND v.preference = 1
)
SELECT CAST(product_id AS VARCHAR) AS product_id,
       {_date(as_of)} AS as_of_date,
       window_days,
       CAST(views AS BIGINT) AS views,
       CAST(add_to_carts AS BIGINT) AS add_to_carts,
       CAST(purchases AS BIGINT) AS purchases,
       CAST(units AS BIGINT) AS units,
       CAST(revenue AS {BASE_MONEY_SQL}) AS revenue,
       CASE WHEN views <> 0 THEN CAST(add_to_carts AS DOUBLE) / views END AS view_to_cart_rate,
       CASE WHEN add_to_carts <> 0 THEN CAST(purchases AS DOUBLE) / add_to_carts END AS cart_to_purchase_rate,
       CAST(row_number() OVER (PARTITION BY window_days, category_l1 ORDER BY {order_by}) AS INTEGER)
           AS rank_in_category,
       CAST(row_number() OVER (PARTITION BY window_days ORDER BY {order_by}) AS INTEGER) AS rank_overall,
       CAST(category_l1 AS VARCHAR) AS category_l1
FROM categorized
"""


def connect(silver: dict[str, pa.Table]) -> Any:
    """A DuckDB connection in UTC (as the pipeline's Spark session) with the silver tables registered."""
    import duckdb

    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    for name, table in silver.items():
        connection.register(name, table)
    return connection


def run_peer(
    silver: dict[str, pa.Table],
    *,
    as_of: dt.date,
    score_buckets: int,
    mapping: Sequence[tuple[str, str]],
    windows_days: Sequence[int],
) -> dict[str, pa.Table]:
    """Both aggregates of one as-of date: ``{"customer_segments": ..., "product_popularity": ...}``."""
    connection = connect(silver)
    try:
        segments_sql = customer_segments_sql(as_of, score_buckets=score_buckets, mapping=mapping)
        popularity_sql = product_popularity_sql(as_of, windows_days=windows_days)
        return {
            "customer_segments": connection.sql(segments_sql).fetch_arrow_table(),
            "product_popularity": connection.sql(popularity_sql).fetch_arrow_table(),
        }
    finally:
        connection.close()


def read_gold_partition(lake: Path, table: str, as_of: dt.date) -> pa.Table:
    """One as-of partition of a gold aggregate written by Spark, read through ``deltalake``."""
    from deltalake import DeltaTable

    dataset = DeltaTable(str(lake / "gold" / table)).to_pyarrow_dataset()
    return dataset.to_table(filter=pc.field("as_of_date") == pa.scalar(as_of, pa.date32()))


# --- Equality --------------------------------------------------------------------------------


@dataclass
class TableDiff:
    """How two tables differ as multisets of rows.

    Attributes:
        rows_expected, rows_actual: Row counts.
        column_problems: Columns missing, extra, out of order or of another type.
        only_expected, only_actual: Rows (after rounding doubles) found on one side only,
            counted with multiplicity.
        examples: A few of those rows, for the report.
    """

    rows_expected: int
    rows_actual: int
    column_problems: list[str] = field(default_factory=list)
    only_expected: int = 0
    only_actual: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.column_problems and self.only_expected == 0 and self.only_actual == 0

    def summary(self) -> str:
        if self.equal:
            return f"equal ({self.rows_expected} rows)"
        parts = [f"{self.rows_expected} rows vs {self.rows_actual}"]
        parts += self.column_problems
        parts.append(f"{self.only_expected} rows only in Spark, {self.only_actual} only in DuckDB")
        return "; ".join(parts)


def _canonical(data_type: pa.DataType) -> str:
    if (
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_string_view(data_type)
    ):
        return "string"
    return str(data_type)


def compare_tables(expected: pa.Table, actual: pa.Table, *, float_digits: int = FLOAT_DIGITS) -> TableDiff:
    """Compare two tables as multisets of rows (row order ignored, duplicates counted).

    Columns must match by name, order and type (string kinds are alike). Decimals and
    integers compare exactly; doubles after rounding to ``float_digits`` decimal places.
    """
    import duckdb

    diff = TableDiff(rows_expected=expected.num_rows, rows_actual=actual.num_rows)
    expected_types = {f.name: _canonical(f.type) for f in expected.schema}
    actual_types = {f.name: _canonical(f.type) for f in actual.schema}
    for name in expected.column_names:
        if name not in actual_types:
            diff.column_problems.append(f"column {name} missing in DuckDB")
        elif expected_types[name] != actual_types[name]:
            diff.column_problems.append(f"column {name}: {expected_types[name]} vs {actual_types[name]}")
    diff.column_problems += [
        f"extra column {n} in DuckDB" for n in actual.column_names if n not in expected_types
    ]
    if not diff.column_problems and expected.column_names != actual.column_names:
        diff.column_problems.append("columns in another order")
    if diff.column_problems:
        return diff
    columns = ", ".join(
        f'round("{f.name}", {float_digits}) AS "{f.name}"' if pa.types.is_floating(f.type) else f'"{f.name}"'
        for f in expected.schema
    )
    connection = duckdb.connect()
    try:
        connection.register("expected_rows", expected)
        connection.register("actual_rows", actual)
        for side, first, second in (
            ("Spark", "expected_rows", "actual_rows"),
            ("DuckDB", "actual_rows", "expected_rows"),
        ):
            only = connection.sql(
                f"SELECT {columns} FROM {first} EXCEPT ALL SELECT {columns} FROM {second}"
            ).fetchall()
            if side == "Spark":
                diff.only_expected = len(only)
            else:
                diff.only_actual = len(only)
            diff.examples += [f"only in {side}: {row}" for row in only[:3]]
    finally:
        connection.close()
    return diff


# --- The timed peer run ------------------------------------------------------------------------


def peer_benchmark(
    lake: Path,
    out: Path,
    *,
    as_of: dt.date,
    score_buckets: int,
    mapping: Sequence[tuple[str, str]],
    windows_days: Sequence[int],
) -> dict[str, Any]:
    """Read silver, compute both aggregates in DuckDB, write them as Delta under ``out``, timed;
    then compare them with the gold partitions Spark wrote (not timed).

    Returns:
        Seconds per step (``read_s``, ``compute_s``, ``write_s``, ``total_s``), rows per table,
        and per table the comparison (``equal`` and a one-line ``summary``).
    """
    from deltalake import write_deltalake

    clock = time.monotonic()
    silver = read_silver(lake)
    read_s = time.monotonic() - clock
    clock = time.monotonic()
    results = run_peer(
        silver, as_of=as_of, score_buckets=score_buckets, mapping=mapping, windows_days=windows_days
    )
    compute_s = time.monotonic() - clock
    clock = time.monotonic()
    for table, rows in results.items():
        write_deltalake(str(out / table), rows, mode="overwrite", partition_by=["as_of_date"])
    write_s = time.monotonic() - clock
    comparisons = {}
    for table, rows in results.items():
        diff = compare_tables(read_gold_partition(lake, table, as_of), rows)
        comparisons[table] = {"equal": diff.equal, "summary": diff.summary(), "examples": diff.examples}
    return {
        "as_of_date": as_of.isoformat(),
        "silver_rows": {name: table.num_rows for name, table in silver.items()},
        "read_s": round(read_s, 3),
        "compute_s": round(compute_s, 3),
        "write_s": round(write_s, 3),
        "total_s": round(read_s + compute_s + write_s, 3),
        "rows": {table: rows.num_rows for table, rows in results.items()},
        "comparison": comparisons,
        "equal": all(c["equal"] for c in comparisons.values()),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.peer_duckdb --lake DIR --as-of YYYY-MM-DD --out DIR [--set key=value ...]``.

    Prints the result of :func:`peer_benchmark` as one JSON line. The segment mapping,
    score buckets and windows come from the pipeline's config (with the same overrides).
    """
    import argparse
    import json
    import sys

    from pipeline_lib.config import load_config, parse_assignment

    parser = argparse.ArgumentParser(prog="python -m bench.peer_duckdb", description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True, type=Path)
    parser.add_argument("--as-of", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--out", required=True, type=Path, help="folder for the peer's Delta tables")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    config = load_config(None, overrides=dict(parse_assignment(item) for item in args.set))
    try:
        result = peer_benchmark(
            args.lake,
            args.out,
            as_of=args.as_of,
            score_buckets=config.segments.score_buckets,
            mapping=[(rule.segment, rule.when) for rule in config.segments.mapping],
            windows_days=config.pipeline.popularity_windows_days,
        )
    except PeerInputError as err:
        print(f"peer: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    # Leave without the interpreter's shutdown: deltalake's threads can abort a normal exit
    # ("terminate called without an active exception", delta-io/delta-rs#2184).
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
