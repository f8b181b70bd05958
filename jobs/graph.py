"""The job graph: every job, what it reads and what it writes, declared once.

The runner's order, ``ecom-pipeline jobs``, the idle-job check, the containment of failures
and the Airflow DAG (``airflow/dags/ecom_pipeline.py``) all read this module; nothing is
registered by an import's side effect and no dependency is written anywhere else.

A job reads **inputs**: ``landing.<source>`` (delivery files), or tables ``<layer>.<table>``
(``<lake>/<layer>/<table>``, Delta). It writes **outputs**, tables of the lake. A job
depends on the jobs that write its inputs. This module imports nothing but the standard
library, so a scheduler's own environment (Airflow's) can read it without Spark.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

LAYER_ORDER = ("bronze", "silver", "gold")
LANDING = "landing"


@dataclass(frozen=True)
class JobSpec:
    """One job: where its code is, what it reads and writes.

    Attributes:
        layer: ``bronze``, ``silver`` or ``gold``.
        name: The job's name within its layer; ``<layer>.<name>`` is its qualified name.
        target: ``module:function`` of the job, a ``(ctx, **options) -> JobResult`` function
            (or the function itself, for a job defined elsewhere, such as a test's).
        options: Keyword arguments for the function (a bronze job's ``source``).
        inputs: What it reads: ``landing.<source>`` or ``<layer>.<table>``.
        outputs: The tables it writes, ``<layer>.<table>``.
        description: One line for ``ecom-pipeline jobs`` and the docs.
        uses_as_of: True when ``--as-of`` changes its output for the same inputs (the gold
            aggregates compute an as-of partition); the idle check then compares it too.
        settings: The job-specific config sections it reads
            (:data:`pipeline_lib.config.JOB_SPECIFIC_SECTIONS`); the idle check compares those
            and every other section, so a change to another job's section does not run it.
    """

    layer: str
    name: str
    target: str | Callable[..., Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    description: str
    options: tuple[tuple[str, str], ...] = ()
    uses_as_of: bool = False
    settings: tuple[str, ...] = ()

    @property
    def qualified_name(self) -> str:
        return f"{self.layer}.{self.name}"

    def load(self) -> Callable[..., Any]:
        """The job's function (imports its module: Spark and the library)."""
        if callable(self.target):
            return self.target
        module, _, function = self.target.partition(":")
        func = getattr(importlib.import_module(module), function)
        return partial(func, **dict(self.options)) if self.options else func


def _bronze(source: str, fmt: str) -> JobSpec:
    return JobSpec(
        "bronze",
        source,
        "jobs.bronze:ingest",
        inputs=(f"{LANDING}.{source}",),
        outputs=(f"bronze.{source}",),
        description=f"Ingest new {source} deliveries ({fmt}) into bronze.{source}.",
        options=(("source", source),),
    )


def _silver(name: str, target: str, inputs: Sequence[str], description: str) -> JobSpec:
    return JobSpec(
        "silver",
        name,
        target,
        inputs=tuple(inputs),
        outputs=(f"silver.{name}", f"quarantine.{name}"),
        description=description,
    )


def _gold(
    name: str,
    target: str,
    inputs: Sequence[str],
    description: str,
    *,
    uses_as_of: bool = False,
    settings: Sequence[str] = (),
) -> JobSpec:
    return JobSpec(
        "gold",
        name,
        target,
        inputs=tuple(inputs),
        outputs=(f"gold.{name}",),
        description=description,
        uses_as_of=uses_as_of,
        settings=tuple(settings),
    )


_RECOMMENDATION_INPUTS = (
    "silver.orders",
    "silver.order_items",
    "silver.clicks",
    "silver.products",
    "silver.customers",
)

# In run order: every job after the jobs that write its inputs (checked by topological_order).
JOB_GRAPH: tuple[JobSpec, ...] = (
    _bronze("orders", "csv"),
    _bronze("order_items", "csv"),
    _bronze("customers", "csv"),
    _bronze("clicks", "json"),
    _bronze("catalogue", "json"),
    _bronze("fx_rates", "csv"),
    _bronze("inventory", "csv"),
    _silver(
        "fx_rates",
        "jobs.silver:fx_rates",
        ["bronze.fx_rates"],
        "Reference rates: one per date and currency, the latest delivery's.",
    ),
    _silver(
        "customers",
        "jobs.silver:customers",
        ["bronze.customers"],
        "Customers as SCD type 2; personal data in clear only here, and out of column statistics.",
    ),
    _silver(
        "products",
        "jobs.silver:products",
        ["bronze.catalogue"],
        "Products as SCD type 2 from full catalogue snapshots; a missing product is delisted.",
    ),
    _silver(
        "orders",
        "jobs.silver:orders",
        ["bronze.orders", "silver.fx_rates"],
        "Orders, current state: the tie rule picks the version, valued at the order date's rate.",
    ),
    _silver(
        "order_items",
        "jobs.silver:order_items",
        ["bronze.order_items", "bronze.orders", "silver.orders", "silver.products"],
        "Order lines of each order's latest version with net amounts; retried once their order arrives.",
    ),
    _silver(
        "clicks",
        "jobs.silver_clicks:silver_clicks",
        ["bronze.clicks"],
        "Click events: typed, deduplicated, sessionized and stitched; one row per event_id.",
    ),
    _silver(
        "inventory",
        "jobs.silver_inventory:inventory",
        ["bronze.inventory", "silver.products"],
        "Stock snapshots: one per product, location and time, the latest delivery's; a missing day stays so.",
    ),
    _gold(
        "dim_date",
        "jobs.gold:dim_date",
        ["silver.orders", "silver.clicks"],
        "Calendar days of every year with orders or click events.",
    ),
    _gold(
        "dim_customer",
        "jobs.gold:dim_customer",
        ["silver.customers", "silver.orders"],
        "Customer versions (SCD2) without personal data, plus unknown and inferred members.",
    ),
    _gold(
        "dim_product",
        "jobs.gold:dim_product",
        ["silver.products", "silver.order_items"],
        "Product versions (SCD2), plus unknown and inferred members.",
    ),
    _gold(
        "fact_order_lines",
        "jobs.gold:fact_order_lines",
        ["silver.orders", "silver.order_items", "gold.dim_customer", "gold.dim_product"],
        "Order lines (current state) with point-in-time customer and product keys.",
    ),
    _gold(
        "fact_orders",
        "jobs.gold:fact_orders",
        ["silver.orders", "silver.order_items", "gold.dim_customer"],
        "Orders (current state) with line totals in the base currency and the revenue flag.",
    ),
    _gold(
        "fact_sessions",
        "jobs.gold:fact_sessions",
        ["silver.clicks"],
        "Visits: one row per click session, with funnel counts and conversion.",
    ),
    _gold(
        "customer_segments",
        "jobs.gold_aggregates:build_customer_segments",
        ["silver.orders", "silver.order_items"],
        "RFM scores and segment per customer as of a date.",
        uses_as_of=True,
        settings=("segments",),
    ),
    _gold(
        "product_popularity",
        "jobs.gold_aggregates:build_product_popularity",
        ["silver.orders", "silver.order_items", "silver.clicks", "silver.products"],
        "Views, carts, purchases, revenue and ranks per product and window as of a date.",
        uses_as_of=True,
    ),
    _gold(
        "fact_inventory_daily",
        "jobs.gold_stock:fact_inventory_daily",
        ["silver.inventory"],
        "Closing stock per product, location and day that has a snapshot (a missing day is no row).",
    ),
    _gold(
        "stock_signals",
        "jobs.gold_stock:build_stock_signals",
        ["gold.fact_inventory_daily", "silver.orders", "silver.order_items"],
        "Stock, demand over in-stock days, cover, lost sales and a reorder point per product as of a date.",
        uses_as_of=True,
        settings=("stock",),
    ),
    _gold(
        "campaign_audiences",
        "jobs.gold_campaigns:build_campaign_audiences",
        ["silver.orders", "silver.order_items", "silver.customers"],
        "Members of each campaign as of a date: targeted segment, current consent, stable group.",
        uses_as_of=True,
        settings=("segments", "campaigns"),
    ),
    _gold(
        "campaign_results",
        "jobs.gold_campaigns:build_campaign_results",
        ["silver.orders", "silver.order_items", "silver.customers"],
        "Buyers, orders and revenue per campaign group after the start, with the uplift and its interval.",
        uses_as_of=True,
        settings=("segments", "campaigns"),
    ),
    _gold(
        "product_affinity",
        "jobs.gold_recommendations:build_product_affinity",
        ["silver.orders", "silver.order_items", "silver.clicks"],
        "Products bought together (same order) and viewed together (same session), as of a date.",
        uses_as_of=True,
        settings=("recommendations",),
    ),
    _gold(
        "recommendations",
        "jobs.gold_recommendations:build_recommendations",
        _RECOMMENDATION_INPUTS,
        "Top products per customer as of a date: ALS model, co-purchase, then popularity.",
        uses_as_of=True,
        settings=("recommendations",),
    ),
    _gold(
        "recommendation_metrics",
        "jobs.gold_recommendations:build_recommendation_metrics",
        _RECOMMENDATION_INPUTS,
        "Precision, recall, NDCG at k and coverage of the model against its baselines, as of a date.",
        uses_as_of=True,
        settings=("recommendations",),
    ),
)


class GraphError(ValueError):
    """The job graph is inconsistent, or a selection names no job."""


def topological_order(specs: Iterable[JobSpec]) -> list[JobSpec]:
    """``specs`` in an order where each job comes after the jobs writing its inputs.

    Stable: jobs keep their declared order where the graph allows it.

    Raises:
        GraphError: Two jobs write one table, or the inputs form a cycle.
    """
    specs = list(specs)
    writer: dict[str, str] = {}
    for spec in specs:
        for table in spec.outputs:
            if table in writer:
                raise GraphError(f"{table} is written by both {writer[table]} and {spec.qualified_name}")
            writer[table] = spec.qualified_name
    ordered: list[JobSpec] = []
    done: set[str] = set()
    pending = list(specs)
    while pending:
        ready = [
            spec
            for spec in pending
            if all(writer.get(i) in (None, spec.qualified_name) or writer[i] in done for i in spec.inputs)
        ]
        if not ready:
            raise GraphError(f"the inputs of {[s.qualified_name for s in pending]} form a cycle")
        first = ready[0]
        ordered.append(first)
        done.add(first.qualified_name)
        pending.remove(first)
    return ordered


def upstream_jobs(spec: JobSpec, specs: Sequence[JobSpec] = JOB_GRAPH) -> list[str]:
    """The qualified names of the jobs that write ``spec``'s inputs (its direct dependencies)."""
    return [
        other.qualified_name for other in specs if other is not spec and set(other.outputs) & set(spec.inputs)
    ]


def downstream_of(failed: Iterable[str], specs: Sequence[JobSpec] = JOB_GRAPH) -> set[str]:
    """Every job that reads, directly or through others, a table a job of ``failed`` writes."""
    blocked: set[str] = set()
    frontier = set(failed)
    while frontier:
        outputs = {table for spec in specs if spec.qualified_name in frontier for table in spec.outputs}
        frontier = {s.qualified_name for s in specs if set(s.inputs) & outputs} - blocked - set(failed)
        blocked |= frontier
    return blocked


def select_jobs(layer: str, name: str | None = None, specs: Sequence[JobSpec] = JOB_GRAPH) -> list[JobSpec]:
    """The jobs of ``--layer`` (``all`` or one layer) and optional ``--job``, in run order.

    Raises:
        GraphError: The layer or the job name is unknown.
    """
    chosen = topological_order(specs)
    if layer != "all":
        if layer not in LAYER_ORDER:
            raise GraphError(f"unknown layer {layer!r}; expected bronze, silver, gold or all")
        chosen = [s for s in chosen if s.layer == layer]
    if name:
        named = [s for s in chosen if name in (s.name, s.qualified_name)]
        if not named:
            known = ", ".join(s.qualified_name for s in chosen)
            raise GraphError(f"unknown job {name!r} for layer {layer}; known: {known}")
        chosen = named
    return chosen


def check_job_conf(job_conf: Mapping[str, object], specs: Sequence[JobSpec] = JOB_GRAPH) -> None:
    """Refuse a ``spark.job_conf`` that names a job the graph does not have (a typo would
    otherwise leave the job on the shared settings without a word).

    Raises:
        GraphError: Naming the unknown jobs.
    """
    unknown = sorted(set(job_conf) - {spec.qualified_name for spec in specs})
    if unknown:
        raise GraphError(
            f"spark.job_conf names unknown jobs {unknown}; jobs are named <layer>.<job>, "
            "as `ecom-pipeline jobs` lists them"
        )
