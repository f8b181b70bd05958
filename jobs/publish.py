"""The job ``publish.postgres``: the gold tables copied into a PostgreSQL schema for BI tools.

``ecom-pipeline publish --to postgresql://user@host:port/db`` (or ``publish.url``,
``ECOM_PUBLISH_DB``); the password from ``ECOM_PUBLISH_DB_PASSWORD``, ``PGPASSWORD`` or
``~/.pgpass``. For each gold table:

1. its latest Delta version is compared with the one recorded in ``<schema>._ecom_published``:
   the same table at the same version is already published, and is skipped (``--force``
   publishes it again);
2. that version's rows are loaded into a staging table, keyed on the table's grain
   (:data:`pipeline_lib.gold.catalog.GOLD_KEYS`);
3. one transaction swaps the staging table in, with the documented comments, and records
   the version. A BI reader sees the old table or the new one, never a partial one.

A table that fails leaves its published version in place; the job then fails after trying
the others. See docs/postgres.md.
"""

from __future__ import annotations

from jobs.graph import JobSpec
from pipeline_lib.gold.catalog import GOLD_KEYS, TABLE_COMMENTS, column_comments
from pipeline_lib.io.delta import read_table, table_version
from pipeline_lib.io.postgres import DatabaseError, load_staging, publish_database, published_tables, swap_in
from pipeline_lib.ops.context import JobContext, JobResult

PUBLISH_JOB = JobSpec(
    layer="publish",
    name="postgres",
    target="jobs.publish:publish",
    inputs=tuple(f"gold.{table}" for table in GOLD_KEYS),
    outputs=(),
    description="copy the gold tables into a PostgreSQL schema, each swapped in atomically",
)


def publish(ctx: JobContext) -> JobResult:
    """Publish every gold table whose Delta version is not the one published (all with
    ``ctx.full_refresh``)."""
    settings = ctx.config.publish
    application = f"ecom-pipeline {PUBLISH_JOB.qualified_name}"
    db = publish_database(settings)
    published = published_tables(db, settings.schema, application=application)
    outcome: dict[str, object] = {}
    versions: dict[str, int] = {}
    failures: list[str] = []
    rows_read = 0
    for table, keys in GOLD_KEYS.items():
        path = ctx.path("gold", table)
        version = table_version(ctx.spark, path)
        before = published.get(table)
        if version is None:
            outcome[table] = "not built"
            continue
        if (
            not ctx.full_refresh
            and before is not None
            and (before.lake_table, before.delta_version) == (path, version)
        ):
            outcome[table] = f"unchanged (version {version}, {before.rows} rows)"
            continue
        rows = read_table(ctx.spark, path, version=version)
        try:
            staging = load_staging(
                rows,
                db,
                schema=settings.schema,
                table=table,
                keys=keys,
                batch_size=settings.batch_size,
                partitions=settings.partitions,
                application=application,
            )
            count = swap_in(
                db,
                schema=settings.schema,
                table=table,
                staging=staging,
                lake_table=path,
                delta_version=version,
                run_id=ctx.run_id,
                table_comment=TABLE_COMMENTS.get(table),
                column_comments=column_comments(table, rows.columns),
                application=application,
            )
        except DatabaseError as err:
            failures.append(str(err))
            outcome[table] = f"failed: {err}"
            ctx.progress(f"publish: {table}: {err}")
            continue
        rows_read += count
        versions[f"{settings.schema}.{table}"] = version
        outcome[table] = f"published version {version}, {count} rows"
        ctx.progress(f"publish: {settings.schema}.{table}: {outcome[table]}")
    if failures:
        raise DatabaseError(f"{len(failures)} table(s) not published; first: {failures[0]}")
    return JobResult(
        rows_read=rows_read,
        rows_written=rows_read,
        details={
            "database": str(db.url),
            "schema": settings.schema,
            "published": versions,
            "tables": outcome,
        },
    )
