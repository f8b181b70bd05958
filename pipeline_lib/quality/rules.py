"""The data-quality engine: rules declared as data, checked with Spark built-ins, no I/O.

Rules come from ``conf/quality.yaml`` as :class:`~pipeline_lib.config.QualityRule` records
(see ``docs/quality.md``). The engine is three pure steps and one bounded check:

1. :func:`with_rule_results` evaluates every rule on every row and lists, per row, the
   rules it failed: ``_failed_rules`` (``quarantine`` and ``fail`` rules) and ``_dq_flags``
   (``flag`` rules). Both are ``array<string>``, empty when the row passed everything.
2. :func:`split_by_quality` splits the checked rows into valid and quarantined ones.
3. :func:`quality_metrics` counts, per delivery (source file) and rule, rows checked,
   failed and passed: a small frame of ``deliveries x rules`` rows.
4. :func:`enforce_thresholds` collects those metrics and raises
   :class:`QualityThresholdError` when a ``fail`` rule's bad share in a delivery exceeds
   its threshold.

Rule kinds:

- ``row``: ``expr`` is a Spark SQL boolean, true when the row passes. A false result
  fails; a null result fails too, unless ``null_passes``.
- ``unique``: ``columns`` must not repeat *within one delivery* (``delivery_col``, the
  delivery folder's ``_ingest_date``; across the whole input when the frame has no such
  column). In each group of rows sharing a key, the first row by a deterministic order (the
  SHA-256 of the row's content, lineage that differs per run or file excluded) passes and
  every other row fails, so exactly one row of a repeated key survives the rule and the
  result depends neither on partitioning, nor on the run, nor on how a delivery is split
  into files. Rows whose key holds a null pass (a
  ``row`` rule decides about nulls).
- ``time_window``: each of ``columns`` (a timestamp, taken as its UTC date, or a date) lies
  in the plausible window: not before ``earliest`` and not more than
  ``max_days_after_delivery`` days after the row's delivery date (``delivery_col``). A null
  passes (a ``row`` rule decides whether the value is required).
- ``reference``: the values of ``columns`` must exist in ``references[ref_table]`` under
  ``ref_columns`` (a left anti-join in effect). A key with a null fails unless
  ``null_passes`` (a guest order's null ``customer_id`` is fine when ``null_passes``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.bronze.schemas import INGEST_DATE
from pipeline_lib.config import PlausibleTime, QualityRule
from pipeline_lib.io.frames import local_frame
from pipeline_lib.ops.schemas import METRICS_SCHEMA
from pipeline_lib.silver.common import RUN_LINEAGE, content_columns, row_fingerprint
from pipeline_lib.silver.schemas import DQ_FLAGS, FAILED_RULES

__all__ = [
    "METRICS_SCHEMA",
    "QualityThresholdError",
    "enforce_thresholds",
    "outside_plausible_time",
    "quality_metrics",
    "split_by_quality",
    "with_rule_results",
]

_BLOCKING_ACTIONS = ("quarantine", "fail")
_REF_HIT = "__dq_ref_hit_{index}"
_RANK = "__dq_unique_rank_{index}"


class QualityThresholdError(RuntimeError):
    """A ``fail`` rule's share of bad rows in a delivery exceeded its threshold."""


def with_rule_results(
    rows: DataFrame,
    rules: Sequence[QualityRule],
    *,
    references: Mapping[str, DataFrame] | None = None,
    delivery_col: str = INGEST_DATE,
    plausible_time: PlausibleTime | None = None,
) -> DataFrame:
    """Evaluate ``rules`` on every row and list the rules each row failed.

    Args:
        rows: The rows to check (typically the typed, cleaned frame, which may still hold
            the raw bronze values, e.g. in a ``_bronze`` struct, for cast checks).
        rules: The table's rules, in declaration order (the order of names in the arrays).
        references: Reference frames by ``ref_table`` name, for ``reference`` rules.
        delivery_col: The column naming a row's delivery (the scope of ``unique`` rules): the
            delivery folder's date, not its file, so a delivery split into files is one scope.
        plausible_time: The window of ``time_window`` rules (``quality.plausible_time``).

    Returns:
        ``rows`` with ``_failed_rules`` (names of failed ``quarantine``/``fail`` rules) and
        ``_dq_flags`` (names of failed ``flag`` rules) set: both ``array<string>``, empty
        when none failed; any existing columns of those names are replaced. Same grain.

    Raises:
        ValueError: A reference rule's ``ref_table`` is not in ``references``, or a rule
            has no ``expr``/``columns`` for its kind, or two rules share a name.
    """
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"rule names must be unique, got {names}")
    references = references or {}
    checked = rows.drop(FAILED_RULES, DQ_FLAGS)
    content = _content(checked)
    helper_columns: list[str] = []
    failures: list[tuple[QualityRule, Column]] = []
    for index, rule in enumerate(rules):
        if rule.kind == "row":
            if not rule.expr:
                raise ValueError(f"row rule {rule.name!r} has no expr")
            passed = F.expr(rule.expr)
            failed = ~passed if rule.null_passes else ~F.coalesce(passed, F.lit(False))
            failures.append((rule, F.coalesce(failed, F.lit(False))))
        elif rule.kind == "unique":
            rank = _RANK.format(index=index)
            checked = _with_unique_rank(checked, rule, rank, content, delivery_col)
            helper_columns.append(rank)
            failures.append((rule, F.col(rank) > 1))
        elif rule.kind == "time_window":
            if plausible_time is None:
                raise ValueError(f"time_window rule {rule.name!r} needs plausible_time")
            failures.append(
                (rule, outside_plausible_time(checked, rule.columns, plausible_time, delivery_col))
            )
        elif rule.kind == "reference":
            hit = _REF_HIT.format(index=index)
            checked = _with_reference_hit(checked, rule, hit, references)
            helper_columns.append(hit)
            any_null = _any_null(rule.columns)
            missing = F.col(hit).isNull() & ~any_null
            failed = missing if rule.null_passes else (missing | any_null)
            failures.append((rule, failed))
        else:
            raise ValueError(f"rule {rule.name!r}: unknown kind {rule.kind!r}")

    blocking = [
        F.when(failed, F.lit(rule.name)) for rule, failed in failures if rule.action in _BLOCKING_ACTIONS
    ]
    flags = [F.when(failed, F.lit(rule.name)) for rule, failed in failures if rule.action == "flag"]
    return checked.withColumns({FAILED_RULES: _names_array(blocking), DQ_FLAGS: _names_array(flags)}).drop(
        *helper_columns
    )


def split_by_quality(checked: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Split the output of :func:`with_rule_results` into valid and quarantined rows.

    Returns:
        ``(valid, quarantined)``: ``valid`` holds the rows with no failed
        ``quarantine``/``fail`` rule, without ``_failed_rules`` (it keeps ``_dq_flags``);
        ``quarantined`` holds the others with every column, ``_failed_rules`` included.

    Raises:
        ValueError: ``checked`` has no ``_failed_rules`` column.
    """
    if FAILED_RULES not in checked.columns:
        raise ValueError(f"split_by_quality needs the {FAILED_RULES} column of with_rule_results")
    is_valid = F.size(FAILED_RULES) == 0
    return checked.where(is_valid).drop(FAILED_RULES), checked.where(~is_valid)


def quality_metrics(
    checked: DataFrame,
    rules: Sequence[QualityRule],
    *,
    table: str,
    run_id: str,
    delivery_col: str = "_source_file",
) -> DataFrame:
    """Count, per delivery and rule, the rows checked, failed and passed.

    Args:
        checked: The output of :func:`with_rule_results` (``_failed_rules`` and ``_dq_flags``).
        rules: The rules that were checked.
        table: The silver table the rows are for.
        run_id: This run's id.
        delivery_col: The column naming a row's delivery; a missing column counts the whole
            input as one delivery named null.

    Returns:
        One row per delivery and rule, schema :data:`METRICS_SCHEMA`: ``run_id``, ``table``,
        ``delivery``, ``rule``, ``kind``, ``action``, ``rows_checked``, ``rows_failed``,
        ``rows_passed``, ``measured_at``. Empty when there are no rules or no rows.
    """
    spark = checked.sparkSession
    if not rules:
        return local_frame(spark, [], METRICS_SCHEMA)
    delivery = F.col(delivery_col) if delivery_col in checked.columns else F.lit(None).cast("string")
    counts = [F.count(F.lit(1)).alias("rows_checked")]
    for index, rule in enumerate(rules):
        listed = DQ_FLAGS if rule.action == "flag" else FAILED_RULES
        counts.append(F.sum(F.array_contains(listed, rule.name).cast("long")).alias(f"failed_{index}"))
    per_delivery = checked.groupBy(delivery.alias("delivery")).agg(*counts)
    per_rule = F.array(
        *[
            F.struct(
                F.lit(rule.name).alias("rule"),
                F.lit(rule.kind).alias("kind"),
                F.lit(rule.action).alias("action"),
                F.col(f"failed_{index}").alias("rows_failed"),
            )
            for index, rule in enumerate(rules)
        ]
    )
    return per_delivery.select("delivery", "rows_checked", F.explode(per_rule).alias("r")).select(
        F.lit(run_id).alias("run_id"),
        F.lit(table).alias("table"),
        F.col("delivery").cast("string").alias("delivery"),
        F.col("r.rule").alias("rule"),
        F.col("r.kind").alias("kind"),
        F.col("r.action").alias("action"),
        F.col("rows_checked").cast("long").alias("rows_checked"),
        F.coalesce(F.col("r.rows_failed"), F.lit(0)).cast("long").alias("rows_failed"),
        (F.col("rows_checked") - F.coalesce(F.col("r.rows_failed"), F.lit(0)))
        .cast("long")
        .alias("rows_passed"),
        F.current_timestamp().alias("measured_at"),
    )


def enforce_thresholds(
    metrics: DataFrame, rules: Sequence[QualityRule], *, default_threshold: float, min_rows: int = 1
) -> None:
    """Raise when a ``fail`` rule's bad share in any delivery exceeds its threshold.

    A share is judged only over ``min_rows`` rows or more: two broken rows of a three-row file
    say nothing of the feed (they are quarantined, the good row goes on).

    Collects the metrics of ``fail`` rules only (bounded: deliveries x rules).

    Args:
        metrics: The output of :func:`quality_metrics`.
        rules: The rules; a ``fail`` rule's ``threshold`` (share in [0, 1]) wins over
            ``default_threshold``.
        default_threshold: ``quality.fail_threshold``.
        min_rows: ``quality.threshold_min_rows``: deliveries with fewer rows are not judged.

    Raises:
        QualityThresholdError: Naming every breach: rule, delivery file, share and threshold.
    """
    thresholds = {
        rule.name: (rule.threshold if rule.threshold is not None else default_threshold)
        for rule in rules
        if rule.action == "fail"
    }
    if not thresholds:
        return
    rows = (
        metrics.where(F.col("rule").isin(list(thresholds)) & (F.col("rows_checked") >= max(min_rows, 1)))
        .select("table", "delivery", "rule", "rows_checked", "rows_failed")
        .collect()
    )
    breaches = []
    for row in sorted(rows, key=lambda r: (r["rule"], str(r["delivery"]))):
        share = row["rows_failed"] / row["rows_checked"]
        threshold = thresholds[row["rule"]]
        if share > threshold:
            breaches.append(
                f"rule {row['rule']!r} of {row['table']}: {row['rows_failed']} of {row['rows_checked']} rows "
                f"({share:.1%}) failed in delivery {row['delivery']}, above the threshold of {threshold:.1%}"
            )
    if breaches:
        more = f" (and {len(breaches) - 1} more breach(es))" if len(breaches) > 1 else ""
        raise QualityThresholdError(breaches[0] + more + ("\n" + "\n".join(breaches[1:]) if more else ""))


def _names_array(names: list[Column]) -> Column:
    if not names:
        return F.array().cast(T.ArrayType(T.StringType(), False))
    return F.array_compact(F.array(*names))


def outside_plausible_time(
    rows: DataFrame, columns: Sequence[str], window: PlausibleTime, delivery_col: str = INGEST_DATE
) -> Column:
    """True when one of ``columns`` (a timestamp's UTC date, or a date) is before the window's
    ``earliest`` or more than ``max_days_after_delivery`` days after the row's delivery date;
    false for nulls. The test of ``time_window`` rules."""
    earliest = F.lit(dt.date.fromisoformat(window.earliest))
    latest = (
        F.date_add(F.col(delivery_col), window.max_days_after_delivery)
        if delivery_col in rows.columns
        else F.lit(None).cast(T.DateType())
    )
    outside = F.lit(False)
    for name in columns:
        value = F.col(name)
        day = (
            value
            if isinstance(rows.schema[name].dataType, T.DateType)
            else F.date_from_unix_date(F.floor(F.unix_seconds(value) / 86400).cast("int"))
        )
        outside = outside | F.coalesce((day < earliest) | (day > latest), day < earliest, F.lit(False))
    return outside


def _any_null(columns: Sequence[str]) -> Column:
    condition = F.lit(False)
    for column in columns:
        condition = condition | F.col(column).isNull()
    return condition


def _content(rows: DataFrame) -> list[Column]:
    """The row's content for a tie-break: every column but lineage that differs per run or file,
    also inside the delivered-row struct (``_bronze``)."""
    columns = []
    for name in content_columns(rows.columns):
        column = F.col(name)
        data_type = rows.schema[name].dataType
        if isinstance(data_type, T.StructType):
            dropped = [f for f in RUN_LINEAGE if f in data_type.fieldNames()]
            column = column.dropFields(*dropped) if dropped else column
        columns.append(column.alias(name))
    return columns


def _with_unique_rank(
    rows: DataFrame, rule: QualityRule, rank: str, content: Sequence[Column], delivery_col: str
) -> DataFrame:
    scope = [delivery_col] if delivery_col in rows.columns and delivery_col not in rule.columns else []
    window = Window.partitionBy(*scope, *rule.columns).orderBy(row_fingerprint(content))
    return rows.withColumn(
        rank, F.when(_any_null(rule.columns), F.lit(1)).otherwise(F.row_number().over(window))
    )


def _with_reference_hit(
    rows: DataFrame, rule: QualityRule, hit: str, references: Mapping[str, DataFrame]
) -> DataFrame:
    if rule.ref_table is None or rule.ref_table not in references:
        raise ValueError(
            f"reference rule {rule.name!r} needs the frame {rule.ref_table!r} in references "
            f"(given: {sorted(references)})"
        )
    ref_columns = rule.ref_columns or rule.columns
    if len(ref_columns) != len(rule.columns):
        raise ValueError(f"reference rule {rule.name!r}: columns and ref_columns differ in length")
    keys = [f"{hit}_k{i}" for i in range(len(rule.columns))]
    known = (
        references[rule.ref_table]
        .select(*[F.col(ref).alias(key) for ref, key in zip(ref_columns, keys, strict=True)])
        .where(~_any_null(keys))
        .distinct()
        .withColumn(hit, F.lit(True))
    )
    on = [rows[col] == known[key] for col, key in zip(rule.columns, keys, strict=True)]
    return rows.join(known, on=on, how="left").drop(*keys)
