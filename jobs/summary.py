"""``ecom-pipeline summary``: what the lake holds, and the gold tables' headline numbers.

Every number printed is a small aggregate computed by Spark; nothing unbounded is
collected to the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.io.delta import register_lake_tables, table_version

HIGHLIGHTS: dict[str, Callable[[DataFrame], DataFrame]] = {
    "gold.fact_orders": lambda t: (
        t.groupBy("channel")
        .agg(
            F.count(F.lit(1)).alias("orders"),
            F.round(
                F.sum(F.when(~F.col("order_status").isin("cancelled", "returned"), F.col("net_amount_base"))),
                2,
            ).alias("revenue_base"),
        )
        .orderBy("channel")
    ),
    "gold.customer_segments": lambda t: (
        t.where(F.col("as_of_date") == _latest(t, "as_of_date"))
        .groupBy("as_of_date", "segment")
        .agg(F.count(F.lit(1)).alias("customers"), F.round(F.sum("monetary"), 2).alias("revenue_base"))
        .orderBy(F.desc("customers"))
    ),
    "gold.product_popularity": lambda t: (
        t.where((F.col("as_of_date") == _latest(t, "as_of_date")) & (F.col("rank_overall") <= 5))
        .select(
            "window_days",
            "rank_overall",
            "product_id",
            "views",
            "purchases",
            F.round("revenue", 2).alias("revenue"),
        )
        .orderBy("window_days", "rank_overall")
    ),
    "gold.recommendation_metrics": lambda t: (
        t.where(F.col("as_of_date") == _latest(t, "as_of_date"))
        .select(
            "as_of_date",
            "method",
            "k",
            "precision_at_k",
            "recall_at_k",
            "ndcg_at_k",
            "coverage",
            "test_users",
        )
        .orderBy("method")
    ),
    "gold.fact_sessions": lambda t: t.agg(
        F.count(F.lit(1)).alias("sessions"),
        F.round(F.avg(F.col("converted").cast("double")), 4).alias("conversion_rate"),
        F.round(F.avg("duration_s"), 1).alias("avg_duration_s"),
    ),
}


def print_summary(spark: SparkSession, lake: str) -> None:
    """Print each table of the lake with its rows and Delta version, then the gold highlights."""
    names = register_lake_tables(spark, lake)
    if not names:
        print(f"no Delta tables under {lake} yet: run `ecom-pipeline run --layer all` first")
        return
    print(f"lake {lake}")
    print(f"{'table':36} {'rows':>12} {'version':>8}")
    for name in names:
        layer, table = name.split(".")
        rows = spark.table(name).count()
        print(f"{name:36} {rows:>12,} {table_version(spark, f'{lake}/{layer}/{table}'):>8}")
    for name, highlight in HIGHLIGHTS.items():
        if name in names:
            print(f"\n{name}:")
            highlight(spark.table(name)).show(truncate=False)


def _latest(table: DataFrame, column: str) -> Any:
    """The greatest value of ``column`` (one aggregate row); None for an empty table."""
    row = table.agg(F.max(column)).first()
    return None if row is None else row[0]
