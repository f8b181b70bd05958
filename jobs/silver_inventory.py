"""Silver job of the optional ``inventory`` source: stock snapshots, validated and deduplicated.

One row per product, location and snapshot time, the latest delivery's (a re-delivered
snapshot is a correction; two rows of one key in one delivery are a conflict the content
hash decides, also against the recorded row, so an incremental run keeps what a rebuild
keeps). A product unknown to the catalogue is kept and flagged (``product_known``); a day
without a snapshot stays missing. Without deliveries the job does nothing. See
docs/campaigns_and_stock.md and docs/silver.md.

Submit: ``./spark-submit.sh -- run --layer silver --job inventory``.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from pipeline_lib.io.delta import table_exists
from pipeline_lib.ops.context import JobContext, JobResult
from pipeline_lib.silver.common import CONFLICT, DUPLICATE, KEPT, SUPERSEDED, VERSION_OUTCOME, count_outcomes
from pipeline_lib.silver.inventory import (
    INVENTORY_KEYS,
    clean_inventory,
    inventory_version_key,
    rank_inventory,
    to_silver_inventory,
)
from pipeline_lib.silver.steps import (
    check_quality,
    finish,
    new_bronze_rows,
    nothing_to_do,
    recorded_table,
    report_conflicts,
    write_silver,
)


def inventory(ctx: JobContext) -> JobResult:
    """Stock snapshots: one row per product, location and snapshot time, the latest delivery's."""
    batch = new_bronze_rows(ctx, "inventory", "inventory")
    if batch is None:
        return nothing_to_do()
    cleaned = batch.rows.transform(clean_inventory, source_timezone=ctx.config.pipeline.source_timezone)
    references = {"products": recorded_table(ctx, ctx.path("silver", "products"), "products", full=True)}
    valid, quarantined = check_quality(ctx, "inventory", cleaned, references=references)
    ranked = valid.transform(rank_inventory).localCheckpoint()
    outcomes = count_outcomes(ranked)
    snapshots = (
        ranked.where(F.col(VERSION_OUTCOME) == KEPT)
        .drop(VERSION_OUTCOME)
        .transform(to_silver_inventory)
        .localCheckpoint()
    )
    written = snapshots.count()
    path = ctx.path("silver", "inventory")
    if ctx.full_refresh or written or not table_exists(ctx.spark, path):
        # The tie rule against the recorded row too: a later delivery's row, or within one
        # delivery the greater content hash, replaces it (what a rebuild would keep).
        update_when = f"{inventory_version_key('s.')} > {inventory_version_key('t.')}"
        write_silver(
            ctx, snapshots, path, keys=list(INVENTORY_KEYS), update_condition=update_when, state=batch.state
        )
    what = "one product, location and snapshot_ts, other counts, in one delivery"
    report_conflicts(ctx, "inventory", outcomes[CONFLICT], what)
    counts = {
        "duplicates_removed": outcomes[DUPLICATE],
        "conflicts": outcomes[CONFLICT],
        "superseded": outcomes[SUPERSEDED],
    }
    return finish(ctx, "inventory", batch, path, written=written, quarantined=quarantined, counts=counts)
