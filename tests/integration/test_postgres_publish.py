"""``ecom-pipeline publish`` against a real PostgreSQL server (tests/pg_server.py).

Small gold tables are written to a lake (three of the eight; the others are "not built"),
published with the command line, and read back over psycopg: the rows, the primary keys on
the grain and the comments are there; a second publish changes nothing; a reader counting
a table in another connection while a new version is swapped in sees the old count or the
new one, nothing else; and the password is in no output, error or run record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.cli import main
from pipeline_lib.gold.schemas import GOLD_SCHEMAS
from pipeline_lib.io.delta import read_table, table_path, write_table
from pipeline_lib.ops.schemas import RUNS_TABLE
from tests.pg_server import PostgresServer, running_postgres

pytestmark = pytest.mark.slow

LINES = 30_000
SCHEMA = "bi"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with running_postgres() as running:
        yield running


def gold_rows(spark: SparkSession, table: str, rows: int, **columns: Any) -> DataFrame:
    """``rows`` rows of a gold contract: ``columns`` as given (SQL over ``id``), the rest null."""
    ids = spark.range(rows)
    return ids.select(
        *[
            (F.expr(columns[f.name]) if f.name in columns else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in GOLD_SCHEMAS[table].fields
        ]
    )


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("publish") / "lake")
    tables = {
        "fact_order_lines": gold_rows(
            spark,
            "fact_order_lines",
            LINES,
            order_id="concat('o', cast(id div 3 as string))",
            line_no="id % 3 + 1",
            quantity="id % 5 + 1",
            net_amount_base="cast(id % 997 as decimal(18,2)) / 10",
            order_ts="timestamp'2026-03-01 10:00:00' + make_interval(0, 0, 0, 0, 0, id % 600, 0)",
            is_revenue="id % 7 <> 0",
        ),
        "fact_orders": gold_rows(
            spark, "fact_orders", LINES // 3, order_id="concat('o', cast(id as string))"
        ),
        "dim_date": gold_rows(
            spark, "dim_date", 365, date_key="20260101 + id", date="date'2026-01-01' + cast(id as int)"
        ),
    }
    for table, rows in tables.items():
        write_table(rows, table_path(root, "gold", table), mode="overwrite")
    return root


def publish(
    server: PostgresServer,
    lake: str,
    monkeypatch: pytest.MonkeyPatch,
    *extra: str,
    password: str | None = None,
) -> int:
    monkeypatch.setenv("ECOM_PUBLISH_DB_PASSWORD", server.password if password is None else password)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    return main(["publish", "--to", server.url(), "--schema", SCHEMA, "--lake", lake, *extra])


def query(server: PostgresServer, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with server.connect() as connection:
        return connection.execute(sql, params).fetchall()


def published(server: PostgresServer) -> dict[str, tuple[int, int]]:
    rows = query(server, f"SELECT table_name, delta_version, rows FROM {SCHEMA}._ecom_published")
    return {name: (version, count) for name, version, count in rows}


def test_publish_loads_gold_with_keys_and_comments(server, lake, spark, monkeypatch, capsys):
    assert publish(server, lake, monkeypatch) == 0

    assert published(server) == {
        "fact_order_lines": (0, LINES),
        "fact_orders": (0, LINES // 3),
        "dim_date": (0, 365),
    }
    expected = sorted(
        (r.order_id, r.line_no, r.net_amount_base)
        for r in read_table(spark, table_path(lake, "gold", "fact_order_lines")).collect()
    )
    actual = query(server, f"SELECT order_id, line_no, net_amount_base FROM {SCHEMA}.fact_order_lines")
    assert sorted(actual) == expected
    keys = query(
        server,
        "SELECT c.conrelid::regclass::text, array_agg(a.attname ORDER BY k.n) FROM pg_constraint c "
        "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY k(attnum, n) "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
        "WHERE c.contype = 'p' AND c.connamespace = %s::regnamespace GROUP BY 1",
        SCHEMA,
    )
    assert dict(keys) == {
        f"{SCHEMA}.fact_order_lines": ["order_id", "line_no"],
        f"{SCHEMA}.fact_orders": ["order_id"],
        f"{SCHEMA}.dim_date": ["date_key"],
        f"{SCHEMA}._ecom_published": ["table_name"],
    }
    comments = query(
        server,
        "SELECT obj_description(%s::regclass), col_description(%s::regclass, 1)",
        f"{SCHEMA}.fact_orders",
        f"{SCHEMA}.dim_date",
    )
    assert comments == [("one order, current state", "yyyymmdd")]
    types = dict(
        query(
            server,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'fact_order_lines'",
            SCHEMA,
        )
    )
    assert types["order_ts"] == "timestamp with time zone" and types["net_amount_base"] == "numeric"
    # only the published tables: no staging table left behind
    assert {t for (t,) in query(server, "SELECT tablename FROM pg_tables WHERE schemaname = %s", SCHEMA)} == {
        "fact_order_lines",
        "fact_orders",
        "dim_date",
        "_ecom_published",
    }
    out = capsys.readouterr()
    assert "not built" in out.out and server.password not in out.out + out.err


def test_a_second_publish_changes_nothing(server, lake, monkeypatch, capsys):
    publish(server, lake, monkeypatch)  # whatever an earlier test left
    capsys.readouterr()
    before = query(
        server,
        f"SELECT table_name, published_at, to_regclass(%s)::oid FROM {SCHEMA}._ecom_published",
        f"{SCHEMA}.fact_orders",
    )
    assert publish(server, lake, monkeypatch) == 0

    after = query(
        server,
        f"SELECT table_name, published_at, to_regclass(%s)::oid FROM {SCHEMA}._ecom_published",
        f"{SCHEMA}.fact_orders",
    )
    assert sorted(after) == sorted(before)
    assert capsys.readouterr().out.count("unchanged") == 3


def test_a_reader_sees_the_old_table_or_the_new_one(server, lake, spark, monkeypatch):
    publish(server, lake, monkeypatch)
    orders = table_path(lake, "gold", "fact_orders")
    old = LINES // 3
    new_orders = gold_rows(spark, "fact_orders", 500, order_id="concat('n', cast(id as string))")
    write_table(new_orders, orders, mode="append")
    counts: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def count_while_publishing() -> None:
        try:
            with server.connect(autocommit=True) as connection:
                while not stop.is_set():
                    counts.append(
                        connection.execute(f"SELECT count(*) FROM {SCHEMA}.fact_orders").fetchone()[0]
                    )
                    time.sleep(0.002)
        except BaseException as err:  # reported below
            errors.append(err)

    reader = threading.Thread(target=count_while_publishing)
    reader.start()
    try:
        assert publish(server, lake, monkeypatch) == 0
        time.sleep(0.1)
    finally:
        stop.set()
        reader.join()

    assert not errors
    assert set(counts) <= {old, old + 500} and counts[-1] == old + 500
    assert published(server)["fact_orders"] == (1, old + 500)
    assert published(server)["fact_order_lines"] == (0, LINES)  # not published again


def test_the_password_is_nowhere(server, lake, spark, monkeypatch, capsys):
    wrong = "Wrong-Secret-9f3b"
    assert publish(server, lake, monkeypatch, "--force", password=wrong) != 0
    failed = capsys.readouterr()
    assert "password authentication failed" in failed.err
    assert publish(server, lake, monkeypatch, "--force") == 0
    succeeded = capsys.readouterr()

    records = read_table(spark, table_path(lake, "ops", RUNS_TABLE)).where("layer = 'publish'").collect()
    assert {r.status for r in records} == {"failed", "succeeded"}
    text = failed.out + failed.err + succeeded.out + succeeded.err + repr(records)
    assert wrong not in text and server.password not in text


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h:1/db", "is not a postgresql://user@host:port/db URL"),
        ("postgresql://u:pw@h:1/db", "the URL holds a password"),
    ],
)
def test_a_bad_url_is_one_line_and_writes_nothing(server, lake, monkeypatch, capsys, url, message):
    monkeypatch.setenv("ECOM_PUBLISH_DB_PASSWORD", server.password)
    assert main(["publish", "--to", url, "--lake", lake]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "pw@" not in err
