"""Spark ML models the public API cannot build: made on the JVM, here at the I/O boundary.

:func:`restrict_items` is the one: an ALS model that ranks a subset of its items
(:mod:`pipeline_lib.gold.recommendations` ranks the sellable products only).
"""

from __future__ import annotations

from typing import Any

from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

__all__ = ["restrict_items"]


def restrict_items(model: ALSModel, items: DataFrame) -> ALSModel:
    """``model`` with the same factors, ranking only ``items`` (their ``item`` ids).

    ALS ranks every item it was trained on, and a shop's catalogue turns over: at scale 5,
    4,407 of the 14,349 products in the window could no longer be sold. Asking ALS for that
    many more items per customer, so that ``top_n`` sellable ones remain, made its top-k
    selection (a bounded priority queue per customer, one task) the run's longest task:
    755 s. ``ALSModel`` has no public way to rank a subset of items; this builds the model on
    the JVM from the user factors and the kept item factors (the constructor ``ALS.fit`` uses)
    with the same columns, so the factors, and each kept item's score, are unchanged.
    """
    java: Any = model._java_obj
    kept = model.itemFactors.join(items.select(F.col("item").alias("id")), on="id", how="left_semi")
    # JVM handle: ALSModel has no public constructor or item filter in PySpark; its Scala
    # constructor (uid, rank, userFactors, itemFactors) is the one ALS.fit calls.
    jvm: Any = kept.sparkSession._jvm
    restricted = jvm.org.apache.spark.ml.recommendation.ALSModel(
        java.uid(), java.rank(), java.userFactors(), kept._jdf
    )
    restricted = (
        restricted.setUserCol(java.getUserCol())
        .setItemCol(java.getItemCol())
        .setBlockSize(java.getBlockSize())
        .setColdStartStrategy(java.getColdStartStrategy())
    )
    return ALSModel(restricted)
