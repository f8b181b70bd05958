"""PostgreSQL at the edges: the shop's tables read into bronze, gold published into a schema.

Rows move through Spark's JDBC source and writer (the PostgreSQL JDBC driver that ``make
setup`` puts beside Delta's jars, so no start needs the network); the few statements the
driver process runs itself (the database's clock, the checks of a source table and its
columns, the staging table's DDL, the keys, the swap, the publish record) go through psycopg
3. Every read of one extract window uses the same bounds, computed once by the job
(:mod:`pipeline_lib.bronze.database`).

**Credentials.** A URL is ``postgresql://user@host:port/db[?sslmode=...]`` and never holds
a password (the config refuses one). The password comes from the environment only:
``ECOM_SOURCE_DB_PASSWORD`` (the source) or ``ECOM_PUBLISH_DB_PASSWORD`` (the publish
target), else ``PGPASSWORD``, else the password file (``PGPASSFILE`` or ``~/.pgpass``, read
as libpq reads it). It is handed to psycopg and to the JDBC driver as a property, never put
in a URL, a message, a run record or a log line: :class:`DatabaseError` messages name the
database by its URL (without password) and scrub the password should a driver repeat it.

**Publishing a table** (:func:`load_staging`, then :func:`swap_in`): the rows are loaded
into ``<schema>._ecom_stage_<table>`` (created here with types from the Spark schema), its
primary key is built on the grain columns, then ONE transaction drops the published table,
renames the staging table (and its key) into its place, sets the comments and records the
Delta version published in ``<schema>._ecom_published``. A reader sees the old table or the
new one: PostgreSQL's DDL is transactional, and a query waiting on the old table's lock
resolves the name again once the swap commits.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from pipeline_lib.bronze.database import ORDER_UPDATED_AT, ExtractWindow, format_instant
from pipeline_lib.bronze.schemas import LANDING_SOURCES, SOURCE_KEYS
from pipeline_lib.config import (
    PUBLISH_DB_ENV,
    SOURCE_DB_ENV,
    DatabaseUrl,
    PublishConfig,
    SourcesConfig,
    parse_database_url,
)

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "JDBC_DRIVER",
    "PUBLISHED_TABLE",
    "Database",
    "DatabaseError",
    "PublishedTable",
    "SourceTableRef",
    "database_now",
    "find_password",
    "load_staging",
    "publish_database",
    "published_tables",
    "quote_name",
    "read_keys",
    "read_window",
    "resolve_source_table",
    "source_database",
    "source_database_at",
    "swap_in",
]

JDBC_DRIVER = "org.postgresql.Driver"
APPLICATION = "ecom-pipeline"
SOURCE_PASSWORD_ENV = f"{SOURCE_DB_ENV}_PASSWORD"
PUBLISH_PASSWORD_ENV = f"{PUBLISH_DB_ENV}_PASSWORD"
CONNECT_TIMEOUT_S = 10
# What the target schema records of each published table: the lake table and Delta version.
PUBLISHED_TABLE = "_ecom_published"
STAGING_PREFIX = "_ecom_stage_"
VERSION_COLUMN = "updated_at"
_TIMESTAMP_TYPES = {"timestamp with time zone": False, "timestamp without time zone": True}  # -> wall time


class DatabaseError(RuntimeError):
    """A database cannot be reached, or lacks a table or column, or refuses a load: one line
    naming it, never a password."""


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database and the credentials to reach it (the password is never shown)."""

    url: DatabaseUrl
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return str(self.url)

    def jdbc_url(self) -> str:
        """``jdbc:postgresql://host:port/db[?params]``: no user, no password (they are properties)."""
        query = f"?{self.url.query}" if self.url.query else ""
        return f"jdbc:postgresql://{self.url.host}:{self.url.port}/{quote(self.url.database)}{query}"

    def jdbc_properties(self, application: str, **extra: str) -> dict[str, str]:
        """Properties for Spark's JDBC source or writer: user, password, driver and ``extra``."""
        properties = {"driver": JDBC_DRIVER, "ApplicationName": application[:63], **extra}
        if self.url.user:
            properties["user"] = self.url.user
        if self.password is not None:
            properties["password"] = self.password
        return properties

    def scrub(self, text: str) -> str:
        """``text`` with the password replaced, should a driver ever repeat it."""
        return text.replace(self.password, "***") if self.password else text

    @contextmanager
    def connect(
        self, application: str = APPLICATION, *, autocommit: bool = True
    ) -> Iterator[psycopg.Connection[Any]]:
        """A psycopg connection, closed on exit.

        Raises:
            DatabaseError: The server cannot be reached or refuses the credentials.
        """
        import psycopg

        options: dict[str, Any] = dict(parse_qsl(self.url.query))
        try:
            connection = psycopg.connect(
                host=self.url.host,
                port=self.url.port,
                dbname=self.url.database,
                user=self.url.user,
                password=self.password,
                application_name=application[:63],
                connect_timeout=CONNECT_TIMEOUT_S,
                autocommit=autocommit,
                **options,
            )
        except psycopg.Error as err:
            raise DatabaseError(f"cannot connect to {self.url}: {self.scrub(_first_line(err))}") from None
        try:
            yield connection
        finally:
            connection.close()


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def find_password(url: DatabaseUrl, env_var: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The password for ``url``: ``env_var``, else ``PGPASSWORD``, else the password file.

    The password file is ``PGPASSFILE`` or ``~/.pgpass``, lines ``host:port:db:user:password``
    (``*`` matches anything, ``\\:`` and ``\\\\`` escape); as libpq, a file that group or others
    may read is ignored, and the first matching line wins. None: connect without one.
    """
    environ = os.environ if environ is None else environ
    for name in (env_var, "PGPASSWORD"):
        if environ.get(name):
            return environ[name]
    path = Path(environ.get("PGPASSFILE") or Path(environ.get("HOME") or Path.home()) / ".pgpass")
    try:
        if not path.is_file() or path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            return None
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    wanted = (url.host, str(url.port), url.database, url.user or "")
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) == 5 and all(f in ("*", w) for f, w in zip(fields[:4], wanted, strict=True)):
            return fields[4]
    return None


def _pgpass_fields(line: str) -> list[str]:
    fields: list[str] = []
    current: list[str] = []
    escaped = False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def source_database(sources: SourcesConfig, environ: Mapping[str, str] | None = None) -> Database:
    """The shop's database of ``sources.url``, with its password from the environment.

    Raises:
        DatabaseError: No URL is configured.
    """
    if not sources.url:
        raise DatabaseError(f"no source database: set {SOURCE_DB_ENV} or sources.url")
    url = parse_database_url(sources.url)
    return Database(url, find_password(url, SOURCE_PASSWORD_ENV, environ))


def source_database_at(url: str, environ: Mapping[str, str] | None = None) -> Database:
    """The shop's database at ``url`` (``generate --to-postgres``), its password as the source's."""
    parsed = parse_database_url(url)
    return Database(parsed, find_password(parsed, SOURCE_PASSWORD_ENV, environ))


def publish_database(
    publish: PublishConfig, url: str | None = None, environ: Mapping[str, str] | None = None
) -> Database:
    """The publish target (``url``, else ``publish.url``), with its password from the environment.

    Raises:
        DatabaseError: No target is configured.
    """
    text = url or publish.url
    if not text:
        raise DatabaseError(
            f"no publish target: give --to postgresql://user@host:port/db or set {PUBLISH_DB_ENV}"
        )
    parsed = parse_database_url(text)
    return Database(parsed, find_password(parsed, PUBLISH_PASSWORD_ENV, environ))


def quote_name(name: str) -> str:
    """A SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


# --- Extracting the shop's tables ---------------------------------------------------------------


@dataclass(frozen=True)
class SourceTableRef:
    """A source table found in the database, with what the extract needs to know of it.

    Attributes:
        source: The landing source it stands for (``orders``...).
        label: ``schema.table`` as the database names it (lineage, messages).
        sql: The table quoted for SQL.
        wall_time: The window's column is ``timestamp without time zone`` (read in
            ``pipeline.source_timezone``), not ``timestamptz``.
        orders: For ``order_items``, the orders table (lines are windowed by their order).
    """

    source: str
    label: str
    sql: str
    wall_time: bool
    orders: SourceTableRef | None = None


def resolve_source_table(
    db: Database, sources: SourcesConfig, source: str, *, application: str = APPLICATION
) -> SourceTableRef:
    """Find ``sources.<source>.table`` and check it has the contract's columns.

    ``order_items`` also needs the orders table (``order_id``, ``updated_at``): a line changes
    with its order, so lines are read by their order's ``updated_at``.

    Raises:
        DatabaseError: The database cannot be reached, or the table or a column is missing,
            or ``updated_at`` is not a timestamp; the message names which.
    """
    with db.connect(application) as connection:
        ref = _resolve(connection, db, sources.table_of(source), source, LANDING_SOURCES[source].fields)
        if source == "order_items":
            orders = _resolve(
                connection, db, sources.table_of("orders"), "orders", ("order_id", VERSION_COLUMN)
            )
            ref = SourceTableRef(source, ref.label, ref.sql, orders.wall_time, orders)
    return ref


def _resolve(
    connection: psycopg.Connection[Any], db: Database, table: str, source: str, columns: Sequence[str]
) -> SourceTableRef:
    found = connection.execute(
        "SELECT n.nspname, c.relname, c.oid FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        (table,),
    ).fetchone()
    if found is None:
        raise DatabaseError(f"sources.{source}: no table {table} in {db.url}")
    schema, name, oid = found
    label = f"{schema}.{name}"
    types = dict(
        connection.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
            "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
            (oid,),
        ).fetchall()
    )
    missing = [c for c in columns if c not in types]
    if missing:
        raise DatabaseError(f"sources.{source}: table {label} in {db.url} lacks columns {missing}")
    wall_time = _TIMESTAMP_TYPES.get(types.get(VERSION_COLUMN, ""), None)
    if VERSION_COLUMN in columns and wall_time is None:
        raise DatabaseError(
            f"sources.{source}: {label}.{VERSION_COLUMN} in {db.url} is {types[VERSION_COLUMN]}, "
            "not a timestamp"
        )
    return SourceTableRef(source, label, f"{quote_name(schema)}.{quote_name(name)}", bool(wall_time))


def database_now(db: Database, *, application: str = APPLICATION) -> dt.datetime:
    """The database's clock (``statement_timestamp()``), an aware UTC datetime."""
    with db.connect(application) as connection:
        row = connection.execute("SELECT statement_timestamp()").fetchone()
    assert row is not None
    return row[0].astimezone(dt.UTC)


def _bound(instant: dt.datetime, *, wall_time: bool, timezone: str) -> str:
    """A window bound as SQL: the instant, or for a ``timestamp`` column the wall time it is in
    ``timezone`` (so the comparison can use an index on the column)."""
    literal = f"'{format_instant(instant)}'::timestamptz"
    if not wall_time:
        return literal
    zone = timezone.replace("'", "''")
    return f"({literal} AT TIME ZONE '{zone}')"


def _window_predicate(column: str, window: ExtractWindow, *, wall_time: bool, timezone: str) -> str:
    upper = f"{column} < {_bound(window.upper, wall_time=wall_time, timezone=timezone)}"
    if window.lower is None:
        return upper
    return f"{column} >= {_bound(window.lower, wall_time=wall_time, timezone=timezone)} AND {upper}"


def _slices(key: str, partitions: int) -> list[str]:
    """One predicate per parallel read: rows by the hash of their key (any key distribution)."""
    if partitions == 1:
        return ["TRUE"]
    return [f"(hashtext({key}::text) & 2147483647) % {partitions} = {i}" for i in range(partitions)]


def _window_table(ref: SourceTableRef, alias: str = "ecom_source") -> tuple[str, str]:
    """The query Spark reads (the contract's columns only), named ``alias``, and the window's
    column in it."""
    fields = LANDING_SOURCES[ref.source].fields
    if ref.orders is None:
        columns = ", ".join(quote_name(c) for c in fields)
        return f"(SELECT {columns} FROM {ref.sql}) AS {alias}", quote_name(VERSION_COLUMN)
    columns = ", ".join(f"i.{quote_name(c)}" for c in fields)
    query = (
        f"(SELECT {columns}, o.{quote_name(VERSION_COLUMN)} AS {quote_name(ORDER_UPDATED_AT)} "
        f"FROM {ref.sql} i JOIN {ref.orders.sql} o ON o.{quote_name('order_id')} = i.{quote_name('order_id')}"
        f") AS {alias}"
    )
    return query, quote_name(ORDER_UPDATED_AT)


def read_window(
    spark: SparkSession,
    db: Database,
    ref: SourceTableRef,
    window: ExtractWindow,
    *,
    timezone: str,
    partitions: int,
    fetch_size: int,
    application: str = APPLICATION,
) -> DataFrame:
    """The rows of ``ref`` in ``window``, read in ``partitions`` parallel queries with the same bounds.

    Returns:
        The contract's columns as the JDBC source types them; for ``order_items`` also
        ``order_updated_at``, the ``updated_at`` of the line's order (lines of an order that is
        not in the orders table are not read).
    """
    table, column = _window_table(ref)
    where = _window_predicate(column, window, wall_time=ref.wall_time, timezone=timezone)
    key = quote_name(SOURCE_KEYS[ref.source][0])
    predicates = [f"{where} AND {part}" for part in _slices(key, partitions)]
    properties = db.jdbc_properties(application, fetchsize=str(fetch_size))
    return spark.read.jdbc(db.jdbc_url(), table, predicates=predicates, properties=properties)


def _key_table(ref: SourceTableRef, alias: str = "ecom_keys") -> str:
    """The query of every key of ``ref`` (for ``order_items``: of lines whose order exists,
    the lines :func:`read_window` can read)."""
    keys = SOURCE_KEYS[ref.source]
    if ref.orders is None:
        return f"(SELECT {', '.join(quote_name(k) for k in keys)} FROM {ref.sql}) AS {alias}"
    columns = ", ".join(f"i.{quote_name(k)}" for k in keys)
    order_id = quote_name("order_id")
    return (
        f"(SELECT {columns} FROM {ref.sql} i JOIN {ref.orders.sql} o ON o.{order_id} = i.{order_id}"
        f") AS {alias}"
    )


def read_keys(
    spark: SparkSession,
    db: Database,
    ref: SourceTableRef,
    *,
    partitions: int,
    fetch_size: int,
    application: str = APPLICATION,
) -> DataFrame:
    """Every key of ``ref`` now (the key snapshot that detects deletions), key columns only,
    read in ``partitions`` parallel queries (slices of the key's hash, as :func:`read_window`).

    Its cost is one scan of the table's key (an index-only scan where the primary key allows),
    whatever the window: see docs/postgres.md, "Deletes".
    """
    key = quote_name(SOURCE_KEYS[ref.source][0])
    predicates = _slices(key, partitions)
    properties = db.jdbc_properties(application, fetchsize=str(fetch_size))
    return spark.read.jdbc(db.jdbc_url(), _key_table(ref), predicates=predicates, properties=properties)


# --- Publishing gold ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedTable:
    """What ``<schema>._ecom_published`` records of one published table."""

    lake_table: str
    delta_version: int
    rows: int


def published_tables(
    db: Database, schema: str, *, application: str = APPLICATION
) -> dict[str, PublishedTable]:
    """The tables published in ``schema``, creating the schema and its record table if absent.

    Only tables that still exist count (one dropped by hand is published again).
    """
    record = f"{quote_name(schema)}.{quote_name(PUBLISHED_TABLE)}"
    with db.connect(application) as connection:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_name(schema)}")
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {record} (table_name text PRIMARY KEY, lake_table text NOT NULL, "
            "delta_version bigint NOT NULL, rows bigint NOT NULL, run_id text, "
            "published_at timestamptz NOT NULL DEFAULT now())"
        )
        found = connection.execute(
            f"SELECT p.table_name, p.lake_table, p.delta_version, p.rows FROM {record} p "
            "WHERE to_regclass(format('%%I.%%I', %s::text, p.table_name)) IS NOT NULL",
            (schema,),
        ).fetchall()
    return {name: PublishedTable(lake, int(version), int(rows)) for name, lake, version, rows in found}


def _pg_type(data_type: T.DataType, column: str) -> str:
    simple: dict[type[T.DataType], str] = {
        T.StringType: "text",
        T.IntegerType: "integer",
        T.LongType: "bigint",
        T.ShortType: "smallint",
        T.ByteType: "smallint",
        T.DoubleType: "double precision",
        T.FloatType: "real",
        T.BooleanType: "boolean",
        T.DateType: "date",
        T.TimestampType: "timestamptz",
        T.TimestampNTZType: "timestamp",
    }
    if isinstance(data_type, T.DecimalType):
        return f"numeric({data_type.precision},{data_type.scale})"
    if type(data_type) in simple:
        return simple[type(data_type)]
    raise DatabaseError(
        f"column {column} of type {data_type.simpleString()} has no PostgreSQL column type here"
    )


def load_staging(
    rows: DataFrame,
    db: Database,
    *,
    schema: str,
    table: str,
    keys: Sequence[str],
    batch_size: int,
    partitions: int,
    application: str = APPLICATION,
) -> str:
    """Load ``rows`` into a fresh staging table of ``schema`` with its primary key on ``keys``.

    The staging table is created here (types from the Spark schema: ``timestamp`` as
    ``timestamptz``, decimals with their precision), filled by Spark's JDBC writer in up to
    ``partitions`` connections, keyed and analysed. Nobody reads it until :func:`swap_in`.

    Returns:
        The staging table's name (in ``schema``).

    Raises:
        DatabaseError: The database refuses the load, or the key columns hold a null or a
            duplicate (the staging table is dropped then; the published table is untouched).
    """
    staging = f"{STAGING_PREFIX}{table}"
    qualified = f"{quote_name(schema)}.{quote_name(staging)}"
    columns = ", ".join(f"{quote_name(f.name)} {_pg_type(f.dataType, f.name)}" for f in rows.schema.fields)
    with db.connect(application) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {qualified}")
        connection.execute(f"CREATE TABLE {qualified} ({columns})")
    properties = db.jdbc_properties(
        application, batchsize=str(batch_size), numPartitions=str(partitions), reWriteBatchedInserts="true"
    )
    try:
        rows.write.jdbc(db.jdbc_url(), qualified, mode="append", properties=properties)
    except Exception as err:
        _drop_quietly(db, qualified, application)
        raise DatabaseError(
            f"loading {schema}.{table} into {db.url} failed: {db.scrub(_first_line(err))}"
        ) from None
    import psycopg

    with db.connect(application) as connection:
        try:
            key_list = ", ".join(quote_name(k) for k in keys)
            constraint = quote_name(f"{staging}_pkey")
            connection.execute(
                f"ALTER TABLE {qualified} ADD CONSTRAINT {constraint} PRIMARY KEY ({key_list})"
            )
            connection.execute(f"ANALYZE {qualified}")
        except psycopg.Error as err:
            connection.execute(f"DROP TABLE IF EXISTS {qualified}")
            raise DatabaseError(
                f"{schema}.{table}: no primary key on ({', '.join(keys)}): {db.scrub(_first_line(err))}"
            ) from None
    return staging


def _drop_quietly(db: Database, qualified: str, application: str) -> None:
    try:
        with db.connect(application) as connection:
            connection.execute(f"DROP TABLE IF EXISTS {qualified}")
    except DatabaseError:
        pass


def swap_in(
    db: Database,
    *,
    schema: str,
    table: str,
    staging: str,
    lake_table: str,
    delta_version: int,
    run_id: str,
    table_comment: str | None = None,
    column_comments: Mapping[str, str] | None = None,
    application: str = APPLICATION,
) -> int:
    """Replace ``schema.table`` by the staging table in ONE transaction, and record the version.

    Returns:
        The rows of the table now published.
    """
    target = f"{quote_name(schema)}.{quote_name(table)}"
    staged = f"{quote_name(schema)}.{quote_name(staging)}"
    record = f"{quote_name(schema)}.{quote_name(PUBLISHED_TABLE)}"
    with db.connect(application, autocommit=False) as connection, connection.transaction():
        count = connection.execute(f"SELECT count(*) FROM {staged}").fetchone()
        rows = int(count[0]) if count else 0
        connection.execute(f"DROP TABLE IF EXISTS {target}")
        connection.execute(f"ALTER TABLE {staged} RENAME TO {quote_name(table)}")
        staged_key, key = quote_name(f"{staging}_pkey"), quote_name(f"{table}_pkey")
        connection.execute(f"ALTER TABLE {target} RENAME CONSTRAINT {staged_key} TO {key}")
        if table_comment:
            connection.execute(f"COMMENT ON TABLE {target} IS {_literal(table_comment)}")
        for column, comment in (column_comments or {}).items():
            connection.execute(f"COMMENT ON COLUMN {target}.{quote_name(column)} IS {_literal(comment)}")
        connection.execute(
            f"INSERT INTO {record} (table_name, lake_table, delta_version, rows, run_id, published_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (table_name) DO UPDATE SET "
            "lake_table = EXCLUDED.lake_table, delta_version = EXCLUDED.delta_version, "
            "rows = EXCLUDED.rows, run_id = EXCLUDED.run_id, published_at = EXCLUDED.published_at",
            (table, lake_table, delta_version, rows, run_id, dt.datetime.now(dt.UTC)),
        )
    return rows


def _literal(text: str) -> str:
    # COMMENT ON takes a literal, not a parameter.
    return "'" + text.replace("'", "''") + "'"
