"""``ecom-pipeline recommend``: a customer's current recommendations, read from gold only.

    ecom-pipeline recommend --customer-id C0000042 [--as-of 2026-03-30] [--lake DIR]

Reads the customer's rows of ``gold.recommendations`` (the latest as-of date unless
``--as-of`` says otherwise) and the products' names from ``gold.dim_product``: two small
reads, no model training. Exit 0 with the list; 1 with a one-line reason when the table
is missing or the customer has no list that day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.analysis.queries import current_products, customer_recommendations
from pipeline_lib.io.delta import read_table, table_exists, table_path


class NoRecommendationsError(ValueError):
    """The lake holds no list for the customer (no table, no as-of date, or not in it)."""


def collect_recommendations(
    spark: SparkSession, lake: str, customer_id: str, as_of: dt.date | None = None
) -> tuple[dt.date, list[Row]]:
    """The as-of date and the customer's rows (at most ``top_n``: bounded), in rank order.

    Raises:
        NoRecommendationsError: No table, no as-of date, or no list for the customer.
    """
    path = table_path(lake, "gold", "recommendations")
    if not table_exists(spark, path):
        raise NoRecommendationsError(
            f"no table gold.recommendations in {lake}: run `ecom-pipeline run --layer gold` first"
        )
    recommendations = read_table(spark, path)
    if as_of is None:
        as_of = recommendations.agg(F.max("as_of_date")).first()[0]  # type: ignore[index]
        if as_of is None:
            raise NoRecommendationsError("gold.recommendations is empty: no as-of date has been computed")
    products_path = table_path(lake, "gold", "dim_product")
    products = (
        current_products(read_table(spark, products_path))
        if table_exists(spark, products_path)
        else spark.createDataFrame([], "product_id string, name string, brand string, category_l1 string")
    )
    rows = customer_recommendations(
        recommendations, products=products, customer_id=customer_id, as_of=as_of
    ).collect()
    if not rows:
        raise NoRecommendationsError(
            f"customer {customer_id} has no recommendations as of {as_of} (no order or login by then, "
            "or an id gold does not know)"
        )
    return as_of, rows


def format_recommendations(customer_id: str, as_of: dt.date, rows: list[Row]) -> str:
    """The list as text: one line per product with its source and the reason it is there."""
    lines = [f"recommendations for {customer_id} as of {as_of} ({len(rows)} products)"]
    for row in rows:
        name = row["name"] or "(name unknown)"
        category = f" [{row['category_l1']}]" if row["category_l1"] else ""
        lines.append(f"{row['rank']:>3}. {row['product_id']}  {name}{category}")
        lines.append(f"     {row['source']}, score {row['score']:.4f}: {row['reason'] or row['source']}")
    return "\n".join(lines)


def print_recommendations(
    spark: SparkSession,
    lake: str,
    customer_id: str,
    *,
    as_of: dt.date | None = None,
    write: Callable[[str], None] = print,
) -> None:
    """Print a customer's list (see :func:`format_recommendations`).

    Raises:
        ValueError: ``customer_id`` is blank.
        NoRecommendationsError: The lake holds no list for the customer.
    """
    customer_id = customer_id.strip()
    if not customer_id:
        raise ValueError("--customer-id must not be blank")
    found_as_of, rows = collect_recommendations(spark, lake, customer_id, as_of)
    write(format_recommendations(customer_id, found_as_of, rows))
