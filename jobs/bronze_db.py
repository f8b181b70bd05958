"""Bronze from the shop's database: the rows of a PostgreSQL table changed in one window.

The job ``bronze.<source>`` of ``orders``, ``order_items`` and ``customers`` when
``sources.<source>.kind`` is ``jdbc`` (``ECOM_SOURCE_DB``; :func:`jobs.bronze.ingest`
dispatches here). A run:

1. checks the table and its columns (nothing is written when one is missing);
2. fixes the window once: from the previous extract's upper bound (recorded in the bronze
   commit that appended its rows) less the overlap, to the database's clock less the safety
   lag (and the end of ``--as-of``'s day); the clock is the one the runner read at the start
   of the run (``ctx.source_clock``: the three extracts of a run share one upper bound), or
   read here for a job run alone; :mod:`pipeline_lib.bronze.database` explains why;
3. reads the window in parallel JDBC queries, all with those bounds;
4. drops the rows bronze already holds (read again by the overlap);
5. reads the table's whole key set (the key snapshot) and turns every key bronze holds as
   live but the table no longer does into a tombstone row (refused, with nothing written,
   when that is more than ``sources.max_delete_fraction`` of the live keys);
6. appends the rows and tombstones in ONE Delta commit that also records the window: a crash
   before it leaves nothing, after it nothing is missing, and the next run starts from that
   window.

Nothing new, no commit. See docs/postgres.md.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline_lib.bronze.database import (
    ORDER_UPDATED_AT,
    ExtractWindow,
    deleted_keys,
    deletion_guard,
    extract_record,
    format_instant,
    live_keys,
    next_window,
    parse_extract_record,
    parse_instant,
    source_prefix,
    source_uri,
    to_bronze_rows,
    to_tombstones,
    upper_in_uri,
    window_details,
    without_known_rows,
)
from pipeline_lib.bronze.schemas import INGEST_DATE, LANDING_SOURCES, SOURCE_FILE, SOURCE_KEYS, LandingSource
from pipeline_lib.io.delta import read_table, recent_commits, table_exists, table_version, write_table
from pipeline_lib.io.frames import local_frame
from pipeline_lib.io.postgres import (
    Database,
    SourceTableRef,
    database_now,
    read_keys,
    read_window,
    resolve_source_table,
    source_database,
)
from pipeline_lib.ops.context import JobContext, JobResult
from pipeline_lib.ops.watermarks import CDF_PROPERTIES

# Commits searched back for the last extract's window before reading it from the rows.
COMMITS_SEARCHED = 200


def extract(ctx: JobContext, *, source: str) -> JobResult:
    """The job ``bronze.<source>`` reading the shop's database: one window into bronze."""
    sources, contract = ctx.config.sources, LANDING_SOURCES[source]
    settings = sources.of(source)
    assert settings is not None
    application = f"ecom-pipeline bronze.{source}"
    db = source_database(sources)
    ref = resolve_source_table(db, sources, source, application=application)
    location, path = db.url.location, ctx.path("bronze", source)
    prefix = source_prefix(location, ref.label)
    previous = _previous_upper(ctx, path, source=source, table=ref.label, location=location, prefix=prefix)
    window = next_window(
        previous,
        now=ctx.source_clock or database_now(db, application=application),
        overlap_seconds=sources.overlap_seconds,
        safety_lag_seconds=sources.safety_lag_seconds,
        as_of=ctx.as_of,
        timezone=ctx.config.pipeline.source_timezone,
    )
    details: dict[str, object] = {"database": location, "table": ref.label, "partitions": settings.partitions}
    if window is None:
        assert previous is not None
        ctx.progress(f"bronze.{source}: {ref.label} already extracted up to {format_instant(previous)}")
        return JobResult(details={**details, "window": None, "extracted_up_to": format_instant(previous)})

    uri, ingested_at = source_uri(location, ref.label, window), dt.datetime.now(dt.UTC)
    read = (
        read_window(
            ctx.spark,
            db,
            ref,
            window,
            timezone=ctx.config.pipeline.source_timezone,
            partitions=settings.partitions,
            fetch_size=settings.fetch_size,
            application=application,
        )
        .transform(
            to_bronze_rows,
            source=contract,
            uri=uri,
            window=window,
            ingested_at=ingested_at,
            run_id=ctx.run_id,
            extra=(ORDER_UPDATED_AT,) if ref.orders is not None else (),
        )
        .localCheckpoint()  # the database is read once per window
    )
    rows_read = read.count()
    known_all = _known_rows(ctx, path, prefix, contract)
    known = _of_window(known_all, window)
    batch = read.transform(without_known_rows, known=known, source=contract).localCheckpoint()
    new_rows = batch.count()
    tombstones, live = _tombstones(
        ctx, db, ref, known_all, uri=uri, window=window, ingested_at=ingested_at, application=application
    )
    deleted = tombstones.count()
    deletion_guard(deleted=deleted, live=live, max_fraction=sources.max_delete_fraction, table=ref.label)
    appended = new_rows + deleted
    if appended:
        record = extract_record(
            source=source, table=ref.label, location=location, window=window, rows=appended, run_id=ctx.run_id
        )
        write_table(
            batch.unionByName(tombstones) if deleted else batch,
            path,
            mode="append",
            partition_by=[INGEST_DATE],
            properties=CDF_PROPERTIES,
            user_metadata=record,
        )
    ctx.progress(
        f"bronze.{source}: {ref.label} window {window.label}: {rows_read} rows read, {new_rows} new, "
        f"{deleted} deleted (of {live} live keys)" + ("" if appended else "; nothing to commit")
    )
    version = table_version(ctx.spark, path)
    return JobResult(
        rows_read=rows_read,
        rows_written=appended,
        delta_versions={} if version is None or not appended else {path: version},
        details={
            **details,
            "window": window_details(window, rows=rows_read, new_rows=new_rows, deleted=deleted),
        },
    )


def _tombstones(
    ctx: JobContext,
    db: Database,
    ref: SourceTableRef,
    known: DataFrame,
    *,
    uri: str,
    window: ExtractWindow,
    ingested_at: dt.datetime,
    application: str,
) -> tuple[DataFrame, int]:
    """Tombstones of the keys bronze holds as live that the table no longer has, and the
    number of live keys (the key snapshot is read here, after the window)."""
    settings = ctx.config.sources.of(ref.source)
    assert settings is not None
    keys = SOURCE_KEYS[ref.source]
    live = known.transform(live_keys, keys=keys).localCheckpoint()
    live_count = live.count()
    if not live_count:
        return local_frame(ctx.spark, [], LANDING_SOURCES[ref.source].bronze_schema), 0
    snapshot = read_keys(
        ctx.spark,
        db,
        ref,
        partitions=settings.partitions,
        fetch_size=settings.fetch_size,
        application=application,
    )
    tombstones = (
        live.transform(deleted_keys, snapshot=snapshot, keys=keys)
        .transform(
            to_tombstones,
            source=LANDING_SOURCES[ref.source],
            keys=keys,
            uri=uri,
            window=window,
            ingested_at=ingested_at,
            run_id=ctx.run_id,
        )
        .localCheckpoint()  # the snapshot is read once
    )
    return tombstones, live_count


def _previous_upper(
    ctx: JobContext, path: str, *, source: str, table: str, location: str, prefix: str
) -> dt.datetime | None:
    """The upper bound of the last extract of this table in bronze: recorded in its commit,
    or (commits cleaned up, or many maintenance commits since) read from its rows' lineage."""
    if not table_exists(ctx.spark, path):
        return None
    for commit in recent_commits(ctx.spark, path, limit=COMMITS_SEARCHED):
        upper = parse_extract_record(
            commit.info.get("userMetadata"), source=source, table=table, location=location
        )
        if upper is not None:
            return upper
    latest = (
        read_table(ctx.spark, path)
        .where(F.col(SOURCE_FILE).startswith(prefix))
        .agg(F.max(upper_in_uri(SOURCE_FILE)))
        .first()
    )
    return None if latest is None or latest[0] is None else parse_instant(latest[0])


def _known_rows(ctx: JobContext, path: str, prefix: str, contract: LandingSource) -> DataFrame:
    """Bronze's rows of earlier extracts of this table (none before the first)."""
    if not table_exists(ctx.spark, path):
        return local_frame(ctx.spark, [], contract.bronze_schema)
    return read_table(ctx.spark, path).where(F.col(SOURCE_FILE).startswith(prefix))


def _of_window(known: DataFrame, window: ExtractWindow) -> DataFrame:
    """The rows that can hold this window's again: those of its dates (partition pruning)."""
    if window.lower is None:
        return known
    return known.where(F.col(INGEST_DATE) >= F.lit(window.lower.astimezone(dt.UTC).date()))
