"""Gold fact_sessions: one row per visit, from silver.clicks.

A session is keyed by silver's ``session_id`` (delivered by the tracker, or derived by the
inactivity gap in silver), so a visit crossing midnight stays ONE session, dated by its
first event. "First" and "last" order events by ``event_ts`` then ``event_id``, so ties
resolve the same way on every run.

Funnel steps, lowest first: 1 ``page_view``; 2 ``product_view`` (also ``search``);
3 ``add_to_cart``; 4 ``begin_checkout``; 5 ``purchase``. Any other event type
(``remove_from_cart``, a new type) counts as a visit, step 1.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline_lib.gold.dimensions import date_key
from pipeline_lib.gold.schemas import FACT_SESSIONS_SCHEMA, conform_to

FUNNEL_STEPS = ("page_view", "product_view", "add_to_cart", "begin_checkout", "purchase")
EVENT_FUNNEL_STEP = {
    "page_view": 1,
    "product_view": 2,
    "search": 2,
    "add_to_cart": 3,
    "begin_checkout": 4,
    "purchase": 5,
}


# --- Column functions ------------------------------------------------------------------------


def funnel_step_no(event_type: str | Column) -> Column:
    """The funnel step (1..5) an event reaches; 1 for any other or a null event type."""
    column = F.col(event_type) if isinstance(event_type, str) else event_type
    step = F.lit(1)
    for name, number in EVENT_FUNNEL_STEP.items():
        step = F.when(column == name, F.lit(number)).otherwise(step)
    return step


def _in_time_order(*fields: str) -> Column:
    """A struct that orders events by time (null times last), then event_id, carrying ``fields``."""
    return F.struct(F.col("event_ts").isNull().alias("_no_time"), "event_ts", "event_id", *fields)


def _count_of(event_type: str) -> Column:
    return F.count_if(F.col("event_type") == event_type)


# --- DataFrame transformations ---------------------------------------------------------------


def build_fact_sessions(clicks: DataFrame) -> DataFrame:
    """fact_sessions: aggregate the events of each session.

    Args:
        clicks: silver.clicks (deduplicated events). Requires ``session_id``, ``event_id``,
            ``event_ts``, ``event_date``, ``event_type``, ``anonymous_id``, ``customer_id``,
            ``order_id``, ``page_url``, ``utm_source``, ``utm_medium``, ``utm_campaign``,
            ``device_type``, ``is_session_derived``. Rows with a null ``session_id``
            (silver never has them) are ignored.

    Returns:
        :data:`FACT_SESSIONS_SCHEMA`, one row per ``session_id``:

        - ``anonymous_id``, ``landing_page`` (its ``page_url``), ``device_type`` and
          ``session_date_key`` (its ``event_date``) come from the first event;
        - ``customer_id`` is the last non-null one by time (null if never logged in);
        - ``utm_source``/``utm_medium``/``utm_campaign`` come together from the first
          event that has a ``utm_source``;
        - ``duration_s`` is whole seconds from first to last event (0 for one event);
        - ``purchases`` counts distinct orders (``order_id``, or the event when it has
          none) of ``purchase`` events, and ``converted`` is ``purchases > 0``;
        - ``funnel_step``/``funnel_step_no`` is the furthest step reached.
    """
    first_utm = F.when(
        F.col("utm_source").isNotNull(), _in_time_order("utm_source", "utm_medium", "utm_campaign")
    )
    last_customer = F.when(F.col("customer_id").isNotNull(), _in_time_order("customer_id"))
    purchased_order = F.when(
        F.col("event_type") == "purchase", F.coalesce(F.col("order_id"), F.col("event_id"))
    )
    sessions = (
        clicks.where(F.col("session_id").isNotNull())
        .groupBy("session_id")
        .agg(
            F.min(_in_time_order("anonymous_id", "page_url", "device_type", "event_date")).alias("_first"),
            F.max(last_customer).alias("_last_customer"),
            F.min(first_utm).alias("_first_utm"),
            F.min("event_ts").alias("start_ts"),
            F.max("event_ts").alias("end_ts"),
            F.count(F.lit(1)).alias("events"),
            _count_of("page_view").alias("page_views"),
            _count_of("product_view").alias("product_views"),
            _count_of("search").alias("searches"),
            _count_of("add_to_cart").alias("add_to_carts"),
            _count_of("begin_checkout").alias("checkouts"),
            F.count_distinct(purchased_order).alias("purchases"),
            F.max(funnel_step_no("event_type")).alias("funnel_step_no"),
            F.bool_or(F.coalesce("is_session_derived", F.lit(False))).alias("is_session_derived"),
        )
    )
    micros = F.unix_micros("end_ts") - F.unix_micros("start_ts")
    session_date = F.coalesce(F.col("_first.event_date"), F.to_date("start_ts"))
    facts = sessions.select(
        "*",
        F.col("_first.anonymous_id").alias("anonymous_id"),
        F.col("_last_customer.customer_id").alias("customer_id"),
        F.floor(micros / F.lit(1_000_000)).alias("duration_s"),
        date_key(session_date).alias("session_date_key"),
        (F.col("purchases") > 0).alias("converted"),
        F.element_at(F.array(*map(F.lit, FUNNEL_STEPS)), F.col("funnel_step_no")).alias("funnel_step"),
        F.col("_first.page_url").alias("landing_page"),
        F.col("_first_utm.utm_source").alias("utm_source"),
        F.col("_first_utm.utm_medium").alias("utm_medium"),
        F.col("_first_utm.utm_campaign").alias("utm_campaign"),
        F.col("_first.device_type").alias("device_type"),
    )
    return conform_to(facts, FACT_SESSIONS_SCHEMA)


def session_dates(clicks: DataFrame, sessions: DataFrame) -> DataFrame:
    """The ``event_date`` values that hold an event of any of ``sessions``' ``session_id``.

    A changed session is rebuilt from all its events, which may lie in any partition (a
    session past midnight, a session id the tracker reused); this finds those partitions
    from two columns of ``clicks``, so that the whole rows are read from them only.

    Args:
        clicks: Silver click events (``session_id``, ``event_date``).
        sessions: One column, ``session_id``.

    Returns:
        One column, ``event_date``, one row per date (null when such an event has none).
    """
    return (
        clicks.select("session_id", "event_date")
        .join(sessions, on="session_id", how="left_semi")
        .select("event_date")
        .distinct()
    )
