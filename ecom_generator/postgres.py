"""The generated shop's order system as a PostgreSQL database: orders, order lines, customers.

``ecom-pipeline generate ... --to-postgres URL`` writes the landing zone, then applies its
``orders``, ``order_items`` and ``customers`` deliveries to three tables, **day by day,
oldest first**: a delivery's new rows are inserted and its changed rows (an order's later
status, a customer who moved) update the row the table holds, as the shop's order system
would have. So the database ends in the shop's current state, and a run of the pipeline
between two days sees what the shop's database held that day (``--through DATE`` stops
after that day's delivery; applying a day again changes nothing).

A database types its columns: a delivered value that does not fit its column (the
generator's ``wrong_type`` defect, a row without key or ``updated_at``) is not loaded and is
counted in :attr:`LoadReport.skipped`. Naive timestamps (the ``naive_timestamp`` defect) are
read as Europe/Berlin wall time, the generator's time zone. A row never replaces a newer
one (greatest ``updated_at`` wins, a later delivery on a tie); an order's lines are replaced
by those delivered with the version of the order the table holds.

Plain SQL through a psycopg 3 connection the caller opens (``pipeline_lib.io.postgres``
resolves the URL and the password); no Spark.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE_TIMEZONE = "Europe/Berlin"  # the generator's naive timestamps are wall time here
LOADED_SOURCES = ("customers", "orders", "order_items")  # the order a day's deliveries are applied
_DELIVERY = re.compile(r"ingest_date=(\d{4}-\d{2}-\d{2})")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")

# The shop's tables: the contract's columns, typed, keyed, with an index on updated_at (each
# extract reads a window of it).
TABLES: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    "orders": (
        (
            ("order_id", "text"),
            ("customer_id", "text"),
            ("order_status", "text"),
            ("order_ts", "timestamptz"),
            ("updated_at", "timestamptz"),
            ("currency", "text"),
            ("channel", "text"),
            ("ship_country", "text"),
            ("ship_city", "text"),
            ("payment_type", "text"),
            ("shipping_fee", "numeric(20,4)"),
        ),
        ("order_id",),
    ),
    "order_items": (
        (
            ("order_id", "text"),
            ("line_no", "integer"),
            ("product_id", "text"),
            ("quantity", "integer"),
            ("unit_price", "numeric(20,4)"),
            ("discount_amount", "numeric(20,4)"),
        ),
        ("order_id", "line_no"),
    ),
    "customers": (
        (
            ("customer_id", "text"),
            ("email", "text"),
            ("first_name", "text"),
            ("last_name", "text"),
            ("phone", "text"),
            ("country", "text"),
            ("city", "text"),
            ("postal_code", "text"),
            ("signup_ts", "timestamptz"),
            ("updated_at", "timestamptz"),
            ("marketing_opt_in", "boolean"),
        ),
        ("customer_id",),
    ),
}

# Casts that give null instead of failing, for the rows a typed table cannot hold.
_TRY_CASTS = {
    sql_type: f"""CREATE OR REPLACE FUNCTION pg_temp.ecom_try_{name}(v text) RETURNS {sql_type}
LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN v::{sql_type}; EXCEPTION WHEN others THEN RETURN NULL; END $$"""
    for name, sql_type in (
        ("timestamptz", "timestamptz"),
        ("integer", "integer"),
        ("numeric", "numeric(20,4)"),
        ("boolean", "boolean"),
    )
}
_VERSIONS = "ecom_delivered_order_versions"
_CAST_NAMES = {
    "timestamptz": "timestamptz",
    "integer": "integer",
    "numeric(20,4)": "numeric",
    "boolean": "boolean",
}


@dataclass(frozen=True)
class LoadReport:
    """What a load applied.

    Attributes:
        days: Delivery days applied.
        rows: Delivered rows per source that the tables now hold as delivered (inserted or
            updated; a re-applied row that changes nothing is not counted).
        skipped: Delivered rows per source the typed tables cannot hold.
        seconds: Wall-clock duration.
    """

    days: tuple[dt.date, ...]
    rows: dict[str, int]
    skipped: dict[str, int]
    seconds: float


def create_tables(connection: Any, *, schema: str = "public") -> None:
    """Create the three tables (and ``schema``) if missing; existing ones are left as they are."""
    _check_name(schema)
    with connection.transaction():
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table, (columns, key) in TABLES.items():
            body = ", ".join(f"{name} {sql_type}" for name, sql_type in columns)
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {schema}.{table} ({body}, PRIMARY KEY ({', '.join(key)}))"
            )
            if "updated_at" in dict(columns):
                connection.execute(
                    f"CREATE INDEX IF NOT EXISTS {table}_updated_at ON {schema}.{table} (updated_at)"
                )


def load_into_postgres(
    landing: str | Path,
    connection: Any,
    *,
    through: dt.date | None = None,
    schema: str = "public",
    progress: Callable[[str], None] | None = None,
) -> LoadReport:
    """Apply the orders, order_items and customers deliveries of ``landing`` to the database.

    Args:
        landing: A landing zone written by :func:`ecom_generator.generate_landing`.
        connection: An open psycopg 3 connection (not in a transaction); each delivery day is
            applied in one transaction of it.
        through: The last delivery date to apply (default: every delivery).
        schema: The tables' schema, created with them if missing.

    Returns:
        What was applied.
    """
    began = time.monotonic()
    create_tables(connection, schema=schema)
    days = _delivery_days(Path(landing), through)
    rows: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for day, folders in days:
        with connection.transaction():
            connection.execute(f"SET LOCAL TimeZone = '{SOURCE_TIMEZONE}'")
            for statement in _TRY_CASTS.values():
                connection.execute(statement)
            # The order versions this day delivers (filled by the orders): their lines follow them.
            connection.execute(
                f"CREATE TEMP TABLE {_VERSIONS} (order_id text, updated_at timestamptz) ON COMMIT DROP"
            )
            for source in LOADED_SOURCES:
                applied, bad = _apply(connection, schema, source, folders.get(source, []))
                rows[source] += applied
                skipped[source] += bad
        if progress is not None:
            progress(f"applied the deliveries of {day} to the database")
    return LoadReport(
        tuple(day for day, _ in days),
        {s: rows[s] for s in LOADED_SOURCES},
        {s: skipped[s] for s in LOADED_SOURCES},
        time.monotonic() - began,
    )


def _delivery_days(landing: Path, through: dt.date | None) -> list[tuple[dt.date, dict[str, list[Path]]]]:
    by_day: dict[dt.date, dict[str, list[Path]]] = {}
    for source in LOADED_SOURCES:
        root = landing / source
        if not root.is_dir():
            continue
        for folder in root.iterdir():
            match = _DELIVERY.fullmatch(folder.name)
            if not match or not folder.is_dir():
                continue
            day = dt.date.fromisoformat(match.group(1))
            if through is None or day <= through:
                files = sorted(p for p in folder.iterdir() if p.suffix == ".csv" and p.stat().st_size > 0)
                by_day.setdefault(day, {}).setdefault(source, []).extend(files)
    return sorted(by_day.items())


def _apply(connection: Any, schema: str, source: str, files: Sequence[Path]) -> tuple[int, int]:
    """Apply one source's delivery files of one day; returns (rows applied, rows skipped)."""
    if not files:
        return 0, 0
    columns, key = TABLES[source]
    stage = f"ecom_stage_{source}"
    connection.execute(f"DROP TABLE IF EXISTS pg_temp.{stage}")
    connection.execute(
        f"CREATE TEMP TABLE {stage} (__n bigserial, {', '.join(f'{n} text' for n, _ in columns)}) "
        "ON COMMIT DROP"
    )
    for path in files:
        _copy(connection, stage, path, [name for name, _ in columns])
    typed = {name: _typed(name, sql_type) for name, sql_type in columns}
    fits = " AND ".join(
        f"({name} IS NULL OR btrim({name}) = '' OR {typed[name]} IS NOT NULL)"
        for name, sql_type in columns
        if sql_type != "text"
    )
    required = " AND ".join(f"nullif(btrim({k}), '') IS NOT NULL" for k in key)
    if "updated_at" in typed:
        required += f" AND {typed['updated_at']} IS NOT NULL"
    delivered = connection.execute(f"SELECT count(*) FROM {stage}").fetchone()[0]
    connection.execute(
        f"CREATE TEMP TABLE {stage}_typed ON COMMIT DROP AS "
        f"SELECT DISTINCT ON ({', '.join(typed[k] for k in key)}) "
        f"{', '.join(f'{typed[n]} AS {n}' for n, _ in columns)} FROM {stage} WHERE {fits} AND {required} "
        f"ORDER BY {', '.join(typed[k] for k in key)}"
        + (f", {typed['updated_at']} DESC" if "updated_at" in typed else "")
        + ", __n DESC"
    )
    loadable = connection.execute(f"SELECT count(*) FROM {stage}_typed").fetchone()[0]
    target = f"{schema}.{source}"
    names = [name for name, _ in columns]
    updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in names if n not in key)
    newer = "t.updated_at <= EXCLUDED.updated_at AND " if "updated_at" in typed else ""
    if source == "order_items":
        # The lines of the order versions the table holds now: this delivery's, unless the table
        # has a newer version of the order (a day applied again).
        connection.execute(
            f"DELETE FROM {stage}_typed s WHERE NOT EXISTS (SELECT 1 FROM {schema}.orders o "
            f"JOIN {_VERSIONS} v ON v.order_id = o.order_id AND v.updated_at = o.updated_at "
            "WHERE o.order_id = s.order_id)"
        )
        connection.execute(
            f"DELETE FROM {target} i WHERE i.order_id IN (SELECT DISTINCT order_id FROM {stage}_typed) "
            f"AND (i.order_id, i.line_no) NOT IN (SELECT order_id, line_no FROM {stage}_typed)"
        )
    applied = connection.execute(
        f"INSERT INTO {target} AS t ({', '.join(names)}) SELECT {', '.join(names)} FROM {stage}_typed "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates} "
        f"WHERE {newer}ROW(t.*) IS DISTINCT FROM ROW(EXCLUDED.*)"
    ).rowcount
    if source == "orders":  # the versions delivered today, for their lines
        connection.execute(f"INSERT INTO {_VERSIONS} SELECT order_id, updated_at FROM {stage}_typed")
    return applied, delivered - loadable


def _typed(name: str, sql_type: str) -> str:
    if sql_type == "text":
        return f"nullif({name}, '')"
    return f"pg_temp.ecom_try_{_CAST_NAMES[sql_type]}(nullif(btrim({name}), ''))"


def _copy(connection: Any, stage: str, path: Path, contract: Sequence[str]) -> None:
    """Copy a delivered CSV into the text staging table, by header name (extra columns dropped)."""
    data = path.read_bytes()
    header = next(csv.reader(io.StringIO(data.split(b"\n", 1)[0].decode("utf-8-sig"))), [])
    names = [name.strip().lower() for name in header]
    if not names:
        return
    extras = [f"__extra_{i}" for i, name in enumerate(names) if name not in contract]
    for extra in extras:
        connection.execute(f"ALTER TABLE {stage} ADD COLUMN IF NOT EXISTS {extra} text")
    targets = [name if name in contract else f"__extra_{i}" for i, name in enumerate(names)]
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY {stage} ({', '.join(targets)}) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
    ):
        copy.write(data)


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"schema {name!r} is not a plain lower-case SQL name")
