"""``ecom-pipeline export-audience``: a campaign's treatment group as one file for the CRM.

    ecom-pipeline export-audience winback_email --as-of 2026-03-03 --out winback.csv
    ecom-pipeline export-audience second_order_ads --as-of 2026-03-03 --out ads.parquet --with-contact

A recipe (docs/campaigns_and_stock.md, "Exports"):

1. read the treatment group of the campaign's ``as_of_date`` partition of
   ``gold.campaign_audiences`` (refused when the partition was never built);
2. keep only members whose *current* customer version still consents (read from
   ``silver.customers``: an opt-out or an erasure since the audience was built wins);
3. without ``--with-contact``: ``customer_id`` and non-personal attributes, for the CRM to
   join; with it: also the contact details the channel needs, from ``silver.customers``
   (e-mails trimmed, lower-cased and SHA-256 hashed as ad platforms expect), in a file only
   its owner can read;
4. write one file, then append who exported what to ``<lake>/ops/audience_exports`` and
   print that line.

The exported file is outside the lake: ``forget-customer`` cannot erase it, and says which
exports held the customer (docs/erasure.md).
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from collections.abc import Callable

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline_lib.config import PipelineConfig
from pipeline_lib.gold.campaigns import (
    TREATMENT,
    consenting_customers,
    treatment_to_export,
    with_contact_details,
)
from pipeline_lib.io.delta import read_table, table_exists, table_path
from pipeline_lib.io.exports import ExportError, ExportRecord, log_export, write_single_file


def export_audience(
    spark: SparkSession,
    config: PipelineConfig,
    campaign_name: str,
    *,
    as_of: dt.date,
    destination: str,
    with_contact: bool = False,
    progress: Callable[[str], None] = print,
) -> ExportRecord:
    """Write the treatment group of ``campaign_name`` as of ``as_of`` to ``destination``.

    Returns:
        The export's record (also appended to ``ops/audience_exports``).

    Raises:
        ConfigError: The campaign is not configured.
        ExportError: No audience partition for that date, or a bad destination.
    """
    campaign = config.campaigns.named(campaign_name)
    lake = config.paths.lake
    audiences_path = table_path(lake, "gold", "campaign_audiences")
    customers_path = table_path(lake, "silver", "customers")
    if not table_exists(spark, audiences_path) or not table_exists(spark, customers_path):
        raise ExportError(
            "no gold.campaign_audiences (or silver.customers) in this lake: run the pipeline first"
        )
    audiences = read_table(spark, audiences_path)
    on_date = audiences.where(F.col("as_of_date") == F.lit(as_of))
    if on_date.isEmpty():  # an audience of no member at all is indistinguishable from none built
        raise ExportError(
            f"no audience of {campaign.name} as of {as_of} in gold.campaign_audiences: build it with "
            f"`ecom-pipeline run --layer gold --job campaign_audiences --as-of {as_of}`"
        )
    built = on_date.where(F.col("campaign") == campaign.name)
    customers = read_table(spark, customers_path)
    members = audiences.transform(
        treatment_to_export, consenting=consenting_customers(customers), campaign=campaign.name, as_of=as_of
    ).localCheckpoint()
    treatment = built.where(F.col("group") == TREATMENT).count()
    if with_contact:
        members = members.transform(with_contact_details, customers=customers, channel=campaign.channel)
    rows = members.count()
    write_single_file(members, destination, private=with_contact)
    record = ExportRecord(
        exported_by=getpass.getuser(),
        host=socket.gethostname(),
        campaign=campaign.name,
        as_of_date=as_of,
        group=TREATMENT,
        rows=rows,
        left_out_without_consent=treatment - rows,
        with_contact=with_contact,
        columns=tuple(members.columns),
        destination=destination,
        exported_at=dt.datetime.now(dt.UTC),
    )
    log_export(spark, lake, record)
    progress(record.line())
    return record


__all__ = ["ExportError", "export_audience"]
