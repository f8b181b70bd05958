"""Gold ``product_interest_hourly``: views, carts and purchases per product in sliding windows.

The near-real-time table of ``ecom-pipeline stream`` (docs/kafka.md, "Continuous mode"). A
Structured Streaming aggregation over the click topic, refreshed every micro-batch:

* the events are the click events as silver's cleaning types them (``event_ts`` in UTC,
  ``event_type`` lower-cased, blank strings null); an event without ``event_id``,
  ``event_ts`` or ``product_id``, or of another type, counts nowhere;
* a copy of an event (the tracker's retries: same ``event_id``) counts once, as long as the
  copies arrive within the lateness bound of each other (``dropDuplicatesWithinWatermark``);
* windows of ``window_minutes`` starting every ``slide_minutes`` (aligned on the epoch, so
  on UTC hours), each event in every window that holds its ``event_ts``;
* the watermark is the greatest ``event_ts`` seen less ``lateness_minutes``: an event whose
  ``event_ts`` is older when it arrives is dropped (the window it would change is final).

Pure: a function of a DataFrame, streaming or not (a batch DataFrame gives the same counts
without dropping late events, as nothing is late in one batch).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline_lib.gold.schemas import PRODUCT_INTEREST_HOURLY_SCHEMA

__all__ = ["INTEREST_EVENT_TYPES", "INTEREST_KEYS", "product_interest"]

PRODUCT_VIEW, ADD_TO_CART, PURCHASE = "product_view", "add_to_cart", "purchase"
INTEREST_EVENT_TYPES = (PRODUCT_VIEW, ADD_TO_CART, PURCHASE)
# One row per product and window; window_end follows from window_start.
INTEREST_KEYS = ("product_id", "window_start")


def product_interest(
    clicks: DataFrame, *, window_minutes: int, slide_minutes: int, lateness_minutes: int
) -> DataFrame:
    """Views, add-to-carts and purchases per product and sliding window of event time.

    Args:
        clicks: Cleaned click events (:func:`pipeline_lib.silver.clicks.clean_clicks`): at
            least ``event_id``, ``event_ts`` (timestamp), ``event_type`` and ``product_id``.
        window_minutes: The length of a window.
        slide_minutes: A window starts every this many minutes (at most ``window_minutes``).
        lateness_minutes: The watermark's delay: how late (in event time, behind the newest
            event seen) an event may arrive and still count.

    Returns:
        One row per product and window holding at least one counted event, the columns of
        ``PRODUCT_INTEREST_HOURLY_SCHEMA`` but ``updated_at`` (set by the writer). In a
        streaming query with output mode ``update``, each micro-batch gives the windows it
        changed, with their whole counts so far.
    """
    if not 1 <= slide_minutes <= window_minutes:
        raise ValueError(
            f"slide_minutes must be in 1..window_minutes ({window_minutes}), got {slide_minutes}"
        )
    if lateness_minutes < 0:
        raise ValueError(f"lateness_minutes cannot be negative, got {lateness_minutes}")
    is_counted = (
        F.col("event_id").isNotNull()
        & F.col("event_ts").isNotNull()
        & F.col("product_id").isNotNull()
        & F.col("event_type").isin(*INTEREST_EVENT_TYPES)
    )
    counted = (
        clicks.select("event_id", "event_ts", "event_type", "product_id")
        .where(is_counted)
        .withWatermark("event_ts", f"{lateness_minutes} minutes")
    )
    # Spark allows the watermark-bounded deduplication on streams only; a batch has no late rows.
    events = (
        counted.dropDuplicatesWithinWatermark(["event_id"])
        if counted.isStreaming
        else counted.dropDuplicates(["event_id"])
    )
    window = F.window("event_ts", f"{window_minutes} minutes", f"{slide_minutes} minutes")
    columns = [f.name for f in PRODUCT_INTEREST_HOURLY_SCHEMA.fields if f.name != "updated_at"]
    return (
        events.groupBy("product_id", window.alias("window"))
        .agg(
            F.count_if(F.col("event_type") == PRODUCT_VIEW).alias("views"),
            F.count_if(F.col("event_type") == ADD_TO_CART).alias("add_to_carts"),
            F.count_if(F.col("event_type") == PURCHASE).alias("purchases"),
        )
        .select(
            "product_id",
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
            "views",
            "add_to_carts",
            "purchases",
        )
        .select(*[F.col(c).cast(PRODUCT_INTEREST_HOURLY_SCHEMA[c].dataType) for c in columns])
    )
