"""Gold campaigns: audiences with consent and control groups, and the measured results.

Pure transformations (no I/O); definitions and formulas in ``docs/campaigns_and_stock.md``.

* **Targeting.** A campaign (``conf/campaigns.yaml``, :class:`~pipeline_lib.config.Campaign`)
  names RFM segments and/or an ``rfm`` SQL condition over ``r``, ``f``, ``m`` and the other
  columns of ``customer_segments``; both must hold when both are given.
* **Consent.** Only customers whose customer version says ``marketing_opt_in = true`` are
  members: the *current* version for an audience (so an opt-out after the segment's date
  counts), the version valid at the start for the launch audience that results measure. A
  customer unknown to the CRM (no version: never delivered, or erased) never appears.
* **Groups.** Each member is in ``control`` (held out, not contacted) when a uniform number
  drawn from the SHA-256 of ``<campaign>|<customer_id>`` is below the campaign's
  ``control_share``, else in ``treatment``: the same customer is always in the same group of
  a campaign, whatever the date, the run or the other members (:func:`assignment_draw`).
* **Results.** The launch audience (segments as of the day before the start, consent at the
  start) is followed for ``measurement_days`` days from the start: buyers, revenue orders and
  revenue per group, conversion, and treatment minus control with a normal-approximation
  interval (difference of two proportions; Welch's difference of means for revenue).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.config import Campaign
from pipeline_lib.gold.schemas import CAMPAIGN_AUDIENCES_SCHEMA, CAMPAIGN_RESULTS_SCHEMA, conform_to
from pipeline_lib.gold.segments import filter_revenue_orders
from pipeline_lib.io.frames import local_frame
from pipeline_lib.privacy.pii import normalize_email, sha256_hex
from pipeline_lib.silver.schemas import BASE_MONEY

__all__ = [
    "CONTROL",
    "EXPORT_COLUMNS",
    "GROUPS",
    "TREATMENT",
    "assignment_draw",
    "campaign_audiences",
    "campaign_results",
    "consenting_customers",
    "experiment_group",
    "launch_window",
    "targeted_customers",
    "treatment_to_export",
    "with_contact_details",
]

TREATMENT, CONTROL = "treatment", "control"
GROUPS = (TREATMENT, CONTROL)
# The first 13 hex digits of the digest: 52 bits, exact in a double.
_DRAW_HEX_DIGITS = 13
_DRAW_RANGE = float(16**_DRAW_HEX_DIGITS)


def _col(column: str | Column) -> Column:
    return F.col(column) if isinstance(column, str) else column


# ---------------------------------------------------------------------------------------
# Column helpers (Column -> Column)
# ---------------------------------------------------------------------------------------
def assignment_draw(campaign: str | Column, customer_id: str | Column) -> Column:
    """A number in ``[0, 1)`` fixed by the campaign and the customer: the first 13 hex digits
    of SHA-256(``<campaign>|<customer_id>``, UTF-8) divided by ``16**13``.

    Equal to ``int(hashlib.sha256(f"{campaign}|{customer_id}".encode()).hexdigest()[:13], 16)
    / 16**13`` in Python; null when either is null.
    """
    digest = F.sha2(F.concat(_col(campaign), F.lit("|"), _col(customer_id)), 256)
    return F.conv(F.substring(digest, 1, _DRAW_HEX_DIGITS), 16, 10).cast("long") / F.lit(_DRAW_RANGE)


def experiment_group(
    campaign: str | Column, customer_id: str | Column, control_share: float | Column
) -> Column:
    """``control`` when :func:`assignment_draw` is below ``control_share``, else ``treatment``."""
    share = control_share if isinstance(control_share, Column) else F.lit(float(control_share))
    return F.when(assignment_draw(campaign, customer_id) < share, F.lit(CONTROL)).otherwise(F.lit(TREATMENT))


# ---------------------------------------------------------------------------------------
# DataFrame transformations (DataFrame -> DataFrame)
# ---------------------------------------------------------------------------------------
def consenting_customers(customers: DataFrame, *, at: dt.datetime | None = None) -> DataFrame:
    """Customers whose version says they accept marketing.

    Args:
        customers: silver.customers (SCD2); requires ``customer_id``, ``marketing_opt_in``,
            ``country``, ``valid_from``, ``valid_to``, ``is_current``.
        at: None for the current version (``is_current``); an instant (aware datetime) for the
            version valid then (``valid_from <= at < valid_to``, ``valid_to`` null = open).

    Returns:
        ``customer_id``, ``country``: one row per customer whose chosen version has
        ``marketing_opt_in = true`` (null is no consent). Customers without such a version
        (unknown to the CRM, erased, or not yet signed up at ``at``) have no row.
    """
    if at is None:
        versions = customers.where(F.col("is_current"))
    else:
        moment = F.lit(at).cast("timestamp")
        versions = customers.where(
            (F.col("valid_from") <= moment) & (F.col("valid_to").isNull() | (F.col("valid_to") > moment))
        )
    consents = F.coalesce(F.col("marketing_opt_in"), F.lit(False)) & F.col("customer_id").isNotNull()
    return versions.where(consents).select("customer_id", "country")


def targeted_customers(segments: DataFrame, *, campaigns: Sequence[Campaign]) -> DataFrame:
    """The customers each campaign targets, before consent.

    Args:
        segments: customer_segments rows of one as-of date (``customer_id``, ``segment``,
            ``r_score``, ``f_score``, ``m_score``, ``recency_days``, ``frequency``, ``monetary``).
        campaigns: Resolved campaigns (``control_share`` set).

    Returns:
        ``segments``' columns plus ``campaign``, ``channel``, ``control_share``: one row per
        campaign and customer whose segment is in the campaign's ``segments`` (when given) and
        for whom its ``rfm`` condition holds (when given; it sees ``r``, ``f``, ``m`` and every
        column of ``segments``; a null result does not match).

    Raises:
        ValueError: A campaign has no control share (pass ``CampaignsConfig.resolved()``).
    """
    scored = segments.withColumns({"r": F.col("r_score"), "f": F.col("f_score"), "m": F.col("m_score")})
    frames = []
    for campaign in campaigns:
        if campaign.control_share is None:
            raise ValueError(f"campaign {campaign.name!r} has no control share: resolve the config first")
        condition = F.lit(True)
        if campaign.segments:
            condition = condition & F.col("segment").isin(*campaign.segments)
        if campaign.rfm and campaign.rfm.strip():
            condition = condition & F.coalesce(F.expr(campaign.rfm), F.lit(False))
        frames.append(
            scored.where(condition).withColumns(
                {
                    "campaign": F.lit(campaign.name),
                    "channel": F.lit(campaign.channel),
                    "control_share": F.lit(float(campaign.control_share)),
                }
            )
        )
    if not frames:
        empty = {"campaign": F.lit(None).cast("string"), "channel": F.lit(None).cast("string")}
        frames.append(scored.where(F.lit(False)).withColumns({**empty, "control_share": F.lit(0.0)}))
    return functools.reduce(DataFrame.unionByName, frames).drop("r", "f", "m")


def campaign_audiences(
    segments: DataFrame, *, consenting: DataFrame, campaigns: Sequence[Campaign], as_of: dt.date
) -> DataFrame:
    """The members of every campaign as of a date, with their group.

    Args:
        segments: customer_segments rows as of ``as_of`` (see :func:`targeted_customers`).
        consenting: :func:`consenting_customers` (``customer_id``, ``country``).
        campaigns: Resolved campaigns.
        as_of: The date of ``segments``, written as ``as_of_date``.

    Returns:
        Schema :data:`CAMPAIGN_AUDIENCES_SCHEMA`: one row per campaign and targeted customer
        who consents, with ``group`` from :func:`experiment_group`. No personal data.
    """
    return (
        segments.transform(targeted_customers, campaigns=campaigns)
        .join(consenting, on="customer_id", how="inner")
        .withColumns(
            {
                "group": experiment_group("campaign", "customer_id", F.col("control_share")),
                "as_of_date": F.lit(as_of),
            }
        )
        .transform(conform_to, CAMPAIGN_AUDIENCES_SCHEMA)
    )


def launch_window(campaign: Campaign, *, as_of: dt.date) -> tuple[dt.date, int] | None:
    """The last day measured and the number of days, or None before the campaign starts.

    The window is ``[start_date, start_date + measurement_days - 1]``, cut at ``as_of``.

    Raises:
        ValueError: The campaign has no measurement window (pass ``CampaignsConfig.resolved()``).
    """
    if campaign.measurement_days is None:
        raise ValueError(f"campaign {campaign.name!r} has no measurement window: resolve the config first")
    if campaign.start_date > as_of:
        return None
    end = min(campaign.start_date + dt.timedelta(days=campaign.measurement_days - 1), as_of)
    return end, (end - campaign.start_date).days + 1


_WINDOW_SCHEMA = T.StructType(
    [
        T.StructField("campaign", T.StringType(), False),
        T.StructField("channel", T.StringType(), False),
        T.StructField("start_date", T.DateType(), False),
        T.StructField("end_date", T.DateType(), False),
        T.StructField("days_measured", T.IntegerType(), False),
        T.StructField("group", T.StringType(), False),
    ]
)


def campaign_results(
    launch_audiences: DataFrame,
    *,
    orders: DataFrame,
    order_items: DataFrame,
    campaigns: Sequence[Campaign],
    as_of: dt.date,
    z: float,
    confidence_level: float,
) -> DataFrame:
    """Per started campaign and group: customers, buyers, orders, revenue, and the uplift.

    Args:
        launch_audiences: The audience each campaign started with (:func:`campaign_audiences`
            columns ``campaign``, ``customer_id``, ``group``), one row per member.
        orders: silver.orders (``order_id``, ``customer_id``, ``order_status``, ``order_date``).
        order_items: silver.order_items (``order_id``, ``net_amount_base``).
        campaigns: Resolved campaigns; those starting after ``as_of`` give no rows.
        as_of: The last day counted.
        z: The two-sided standard normal quantile of ``confidence_level`` (1.96 for 95 %).
        confidence_level: Written beside the intervals.

    Returns:
        Schema :data:`CAMPAIGN_RESULTS_SCHEMA`: two rows (``treatment``, ``control``) per
        campaign started on or before ``as_of``, even with no members. A buyer is a member
        with a revenue order (status neither cancelled nor returned) dated in the window;
        revenue is those orders' ``net_amount_base``. With ``p`` the conversion rates and
        ``n`` the group sizes, the treatment row carries ``conversion_uplift = p_t - p_c``
        and ``± z * sqrt(p_t (1 - p_t) / n_t + p_c (1 - p_c) / n_c)``, and the difference of
        revenue per customer ``± z * sqrt(s_t^2 / n_t + s_c^2 / n_c)`` (``s`` the sample
        standard deviations); null when a group is empty (or, for revenue, smaller than 2).
    """
    spark = launch_audiences.sparkSession
    rows = []
    for campaign in campaigns:
        window = launch_window(campaign, as_of=as_of)
        if window is not None:
            end, days = window
            rows += [(campaign.name, campaign.channel, campaign.start_date, end, days, g) for g in GROUPS]
    groups = local_frame(spark, rows, _WINDOW_SCHEMA)
    windows = groups.where(F.col("group") == TREATMENT).select("campaign", "start_date", "end_date")
    order_revenue = order_items.groupBy("order_id").agg(F.sum("net_amount_base").alias("__revenue"))
    customer_orders = (
        orders.transform(filter_revenue_orders, as_of=as_of)
        .where(F.col("customer_id").isNotNull())
        .join(order_revenue, on="order_id", how="left")
        .select("order_id", "customer_id", "order_date", F.coalesce("__revenue", F.lit(0)).alias("__revenue"))
    )
    members = launch_audiences.select("campaign", "customer_id", "group").join(
        windows, on="campaign", how="inner"
    )
    in_window = F.col("order_date").between(F.col("start_date"), F.col("end_date"))
    bought = (
        members.join(customer_orders, on="customer_id", how="inner")
        .where(in_window)
        .groupBy("campaign", "group", "customer_id")
        .agg(F.count("order_id").alias("__orders"), F.sum("__revenue").alias("__revenue"))
    )
    per_member = members.join(bought, on=["campaign", "group", "customer_id"], how="left")
    revenue = F.coalesce(F.col("__revenue"), F.lit(0)).cast(BASE_MONEY)
    per_group = per_member.groupBy("campaign", "group").agg(
        F.count(F.lit(1)).alias("customers"),
        F.count_if(F.col("__orders") > 0).alias("buyers"),
        F.coalesce(F.sum("__orders"), F.lit(0)).alias("orders"),
        F.sum(revenue).alias("revenue"),
        F.sum(revenue * revenue).alias("__revenue_squares"),
    )
    stats = (
        groups.join(per_group, on=["campaign", "group"], how="left")
        .withColumns(
            {
                "customers": F.coalesce(F.col("customers"), F.lit(0)).cast("long"),
                "buyers": F.coalesce(F.col("buyers"), F.lit(0)).cast("long"),
                "orders": F.coalesce(F.col("orders"), F.lit(0)).cast("long"),
                "revenue": F.coalesce(F.col("revenue"), F.lit(0)).cast(BASE_MONEY),
                "__revenue_squares": F.coalesce(F.col("__revenue_squares").cast("double"), F.lit(0.0)),
            }
        )
        .withColumns(
            {
                "conversion_rate": _ratio(F.col("buyers"), F.col("customers")),
                "revenue_per_customer": _ratio(F.col("revenue"), F.col("customers")),
                "__revenue_variance": _sample_variance(
                    F.col("customers"), F.col("revenue"), F.col("__revenue_squares")
                ),
            }
        )
    )
    control = stats.where(F.col("group") == CONTROL).select(
        "campaign",
        F.col("customers").alias("__n_c"),
        F.col("conversion_rate").alias("__p_c"),
        F.col("revenue_per_customer").alias("__m_c"),
        F.col("__revenue_variance").alias("__v_c"),
    )
    return (
        stats.join(control, on="campaign", how="left")
        .transform(_with_uplift, z=z)
        .withColumns({"as_of_date": F.lit(as_of), "confidence_level": F.lit(float(confidence_level))})
        .transform(conform_to, CAMPAIGN_RESULTS_SCHEMA)
    )


def _ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator > 0, numerator.cast("double") / denominator.cast("double"))


def _sample_variance(count: Column, total: Column, squares: Column) -> Column:
    """``(n * sum(x^2) - sum(x)^2) / (n (n - 1))`` from exact sums; null below two values."""
    n = count.cast("double")
    total = total.cast("double")
    return F.when(count >= 2, F.greatest((n * squares - total * total) / (n * (n - 1)), F.lit(0.0)))


def _with_uplift(stats: DataFrame, *, z: float) -> DataFrame:
    """Treatment minus control and its interval, on the treatment rows (null on control rows)."""
    is_treatment = F.col("group") == TREATMENT
    p_t, n_t = F.col("conversion_rate"), F.col("customers").cast("double")
    p_c, n_c = F.col("__p_c"), F.col("__n_c").cast("double")
    conversion_diff = F.when(is_treatment & (n_c > 0), p_t - p_c)
    conversion_se = F.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    revenue_diff = F.when(is_treatment & (n_c > 0), F.col("revenue_per_customer") - F.col("__m_c"))
    revenue_se = F.sqrt(F.col("__revenue_variance") / n_t + F.col("__v_c") / n_c)
    low, high = conversion_diff - F.lit(z) * conversion_se, conversion_diff + F.lit(z) * conversion_se
    return stats.withColumns(
        {
            "conversion_uplift": conversion_diff,
            "conversion_uplift_ci_low": low,
            "conversion_uplift_ci_high": high,
            "revenue_uplift_per_customer": revenue_diff,
            "revenue_uplift_ci_low": revenue_diff - F.lit(z) * revenue_se,
            "revenue_uplift_ci_high": revenue_diff + F.lit(z) * revenue_se,
            "is_significant": F.when(is_treatment, F.coalesce((low > 0) | (high < 0), F.lit(False))),
        }
    )


# ---------------------------------------------------------------------------------------
# Exports (ecom-pipeline export-audience)
# ---------------------------------------------------------------------------------------
EXPORT_COLUMNS = ("customer_id", "campaign", "as_of_date", "channel", "segment", "country")
# Contact columns an export with --with-contact adds, per channel: what the channel needs, no more.
CONTACT_COLUMNS = {
    "email": ("email", "email_sha256"),
    "sms": ("phone", "email_sha256"),
    "ads": ("email_sha256",),
}


def treatment_to_export(
    audiences: DataFrame, *, consenting: DataFrame, campaign: str, as_of: dt.date
) -> DataFrame:
    """The treatment group of one campaign and as-of date that may be contacted today.

    Args:
        audiences: gold.campaign_audiences.
        consenting: :func:`consenting_customers` now: a member who has opted out (or was
            erased) since the audience was built is left out.
        campaign: The campaign's name.
        as_of: The audience's as-of date.

    Returns:
        :data:`EXPORT_COLUMNS`, one row per treatment member who still consents, by ``customer_id``.
    """
    members = audiences.where(
        (F.col("campaign") == F.lit(campaign))
        & (F.col("as_of_date") == F.lit(as_of))
        & (F.col("group") == F.lit(TREATMENT))
    )
    still_consenting = consenting.select("customer_id")
    return members.join(still_consenting, on="customer_id", how="left_semi").select(*EXPORT_COLUMNS)


def with_contact_details(members: DataFrame, *, customers: DataFrame, channel: str) -> DataFrame:
    """Add the contact details the channel needs, from the customers' current versions.

    ``email`` is the address trimmed and lower-cased (:func:`~pipeline_lib.privacy.normalize_email`);
    ``email_sha256`` its SHA-256 (hex), the form ad platforms match on; ``phone`` as delivered.
    ``email`` goes to the e-mail channel only, ``phone`` to SMS only; ads get the hash alone
    (:data:`CONTACT_COLUMNS`).

    Args:
        members: Output of :func:`treatment_to_export`.
        customers: silver.customers (``customer_id``, ``email``, ``phone``, ``is_current``).
        channel: The campaign's channel.

    Returns:
        ``members``' columns then the channel's contact columns; a member without a current
        version keeps null contact details (never another version's).

    Raises:
        ValueError: An unknown channel.
    """
    if channel not in CONTACT_COLUMNS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {sorted(CONTACT_COLUMNS)}")
    current = customers.where(F.col("is_current")).select(
        "customer_id",
        normalize_email("email").alias("email"),
        F.col("phone").alias("phone"),
    )
    contact = current.withColumn("email_sha256", sha256_hex("email"))
    return members.join(contact, on="customer_id", how="left").select(
        *members.columns, *CONTACT_COLUMNS[channel]
    )
