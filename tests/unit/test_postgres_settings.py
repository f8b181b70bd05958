"""The database ends without a server: URLs, passwords, the extract window (no Spark)."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline_lib.bronze.database import ExtractWindow, format_instant, next_window, parse_instant, source_uri
from pipeline_lib.config import DatabaseUrlError, parse_database_url
from pipeline_lib.io.postgres import Database, find_password

NOW = dt.datetime(2026, 3, 5, 12, 0, tzinfo=dt.UTC)


def test_a_url_is_parsed_and_never_holds_a_password():
    url = parse_database_url("postgresql://etl@db.example:6543/shop?sslmode=require")
    assert (url.user, url.host, url.port, url.database, url.query) == (
        "etl",
        "db.example",
        6543,
        "shop",
        "sslmode=require",
    )
    assert url.location == "postgresql://db.example:6543/shop"
    assert Database(url, "s3cret").jdbc_url() == "jdbc:postgresql://db.example:6543/shop?sslmode=require"
    assert "s3cret" not in repr(Database(url, "s3cret")) + str(Database(url, "s3cret"))
    with pytest.raises(DatabaseUrlError, match="holds a password") as caught:
        parse_database_url("postgresql://etl:s3cret@db/shop")
    assert "s3cret" not in str(caught.value)
    for bad in ("mysql://u@h/db", "postgresql://u@h:port/db", "postgresql://u@h/"):
        with pytest.raises(DatabaseUrlError):
            parse_database_url(bad)


def test_the_password_comes_from_the_variable_then_pgpassword_then_the_password_file(tmp_path):
    url = parse_database_url("postgresql://etl@db:5432/shop")
    assert (
        find_password(url, "ECOM_SOURCE_DB_PASSWORD", {"ECOM_SOURCE_DB_PASSWORD": "a", "PGPASSWORD": "b"})
        == "a"
    )
    assert find_password(url, "ECOM_SOURCE_DB_PASSWORD", {"PGPASSWORD": "b"}) == "b"
    passfile = tmp_path / "pgpass"
    passfile.write_text("other:5432:shop:etl:no\ndb:*:shop:etl:p\\:w\n")
    passfile.chmod(0o600)
    assert find_password(url, "X", {"PGPASSFILE": str(passfile)}) == "p:w"
    passfile.chmod(0o644)  # readable by others: ignored, as libpq does
    assert find_password(url, "X", {"PGPASSFILE": str(passfile)}) is None


def test_the_window_starts_an_overlap_before_the_last_one_ended_and_never_moves_back():
    first = next_window(
        None, now=NOW, overlap_seconds=3600, safety_lag_seconds=60, as_of=None, timezone="UTC"
    )
    assert first == ExtractWindow(None, NOW - dt.timedelta(seconds=60))
    later = NOW + dt.timedelta(hours=2)
    second = next_window(
        first.upper, now=later, overlap_seconds=3600, safety_lag_seconds=60, as_of=None, timezone="UTC"
    )
    assert second == ExtractWindow(first.upper - dt.timedelta(hours=1), later - dt.timedelta(seconds=60))
    assert (
        next_window(
            first.upper, now=NOW, overlap_seconds=0, safety_lag_seconds=60, as_of=None, timezone="UTC"
        )
        is None
    )
    as_of = next_window(
        None,
        now=NOW,
        overlap_seconds=0,
        safety_lag_seconds=0,
        as_of=dt.date(2026, 3, 1),
        timezone="Europe/Berlin",
    )
    assert as_of is not None and as_of.upper == dt.datetime(2026, 3, 1, 23, 0, tzinfo=dt.UTC)
    assert parse_instant(format_instant(NOW)) == NOW
    assert source_uri("postgresql://h:1/db", "public.orders", first) == (
        "postgresql://h:1/db/public.orders?window=..2026-03-05T11:59:00.000000Z"
    )
