"""What an analyst's notebook needs: a Delta session on a lake, its tables by name.

    from pipeline_lib.analysis.notebook import open_lake
    lake = open_lake()                      # the lake of conf/local.yaml, or $ECOM_LAKE
    spark = lake.spark
    spark.table("gold.fact_orders").groupBy("channel").count().show()
    lake.to_pandas(spark.table("gold.customer_segments").groupBy("segment").count())

The session is the same one the jobs use (``pipeline_lib.session``), with Arrow turned on
so that bounded results convert to pandas quickly.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from pipeline_lib.config import PipelineConfig, load_config
from pipeline_lib.io.delta import register_lake_tables
from pipeline_lib.session import build_spark_session

NOTEBOOK_SPARK_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "true",
}
DEFAULT_ROW_LIMIT = 100_000


class ResultTooLargeError(ValueError):
    """A result asked for in pandas has more rows than the limit allows."""


@dataclass(frozen=True)
class Lake:
    """An opened lake: the session, the config, and the tables registered as ``<layer>.<table>``."""

    spark: SparkSession
    config: PipelineConfig
    tables: tuple[str, ...]

    @property
    def root(self) -> str:
        return self.config.paths.lake

    def has(self, name: str) -> bool:
        """True if ``<layer>.<table>`` exists in this lake."""
        return name in self.tables

    def to_pandas(self, frame: DataFrame, *, limit: int = DEFAULT_ROW_LIMIT) -> pd.DataFrame:
        """Convert a bounded result to pandas via Arrow.

        Raises:
            ResultTooLargeError: ``frame`` has more than ``limit`` rows: aggregate first.
        """
        head = frame.limit(limit + 1)
        rows = head.count()
        if rows > limit:
            raise ResultTooLargeError(f"result has more than {limit:,} rows: aggregate it in Spark first")
        return head.toPandas()


def open_lake(lake: str | None = None, *, env: str | None = None) -> Lake:
    """Open the lake that ``lake``, ``$ECOM_LAKE`` or the config names, with every table registered.

    Args:
        lake: Lake root; default from config (``$ECOM_LAKE`` overrides the files).
        env: Config environment (default ``$ECOM_ENV`` or ``local``).
    """
    config = load_config(env, overrides={"paths.lake": lake} if lake else None)
    settings = config.spark
    spark = build_spark_session(
        type(settings)(
            master=settings.master,
            app_name="ecom-notebook",
            jars_dir=settings.jars_dir,
            log_level="ERROR",
            conf={**settings.conf, **NOTEBOOK_SPARK_CONF},
        )
    )
    tables = register_lake_tables(spark, config.paths.lake)
    return Lake(spark=spark, config=config, tables=tuple(tables))
