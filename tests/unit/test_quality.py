"""The pure quality engine: rule evaluation, split, metrics and thresholds."""

from __future__ import annotations

import pytest
from chispa import assert_df_equality
from pyspark.sql import types as T

from pipeline_lib.config import QualityRule
from pipeline_lib.io.delta import MissingColumnsError
from pipeline_lib.io.quality import bronze_record_of_failures_only, measured_once, quarantine_rows
from pipeline_lib.ops.schemas import METRICS_SCHEMA
from pipeline_lib.quality.rules import (
    QualityThresholdError,
    enforce_thresholds,
    quality_metrics,
    split_by_quality,
    with_rule_results,
)

SCHEMA = T.StructType(
    [
        T.StructField("id", T.StringType(), True),
        T.StructField("qty", T.IntegerType(), True),
        T.StructField("_source_file", T.StringType(), True),
    ]
)
RESULT_SCHEMA = T.StructType(
    [
        *SCHEMA.fields,
        T.StructField("_failed_rules", T.ArrayType(T.StringType(), True), True),
        T.StructField("_dq_flags", T.ArrayType(T.StringType(), True), True),
    ]
)


def _results(df):
    return df.select("id", "qty", "_source_file", "_failed_rules", "_dq_flags")


def test_row_rule_fails_false_and_null_unless_null_passes(spark):
    source = spark.createDataFrame([("a", 1, "f1"), ("b", 0, "f1"), ("c", None, "f1")], SCHEMA)
    rules = [
        QualityRule(name="qty_positive", expr="qty > 0"),
        QualityRule(name="qty_positive_if_set", expr="qty > 0", action="flag", null_passes=True),
    ]
    actual = _results(with_rule_results(source, rules))
    expected = spark.createDataFrame(
        [
            ("a", 1, "f1", [], []),
            ("b", 0, "f1", ["qty_positive"], ["qty_positive_if_set"]),
            ("c", None, "f1", ["qty_positive"], []),
        ],
        RESULT_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_unique_rule_keeps_one_row_per_key_and_delivery(spark):
    source = spark.createDataFrame(
        [("a", 1, "f1"), ("a", 2, "f1"), ("a", 3, "f2"), (None, 4, "f1"), (None, 5, "f1")], SCHEMA
    )
    rules = [QualityRule(name="id_unique", kind="unique", columns=("id",))]
    actual = with_rule_results(source, rules)
    failed = {
        (r["id"], r["_source_file"]): r["_failed_rules"] for r in actual.collect() if r["_failed_rules"]
    }
    # Of the two f1 rows of 'a', exactly one fails; f2's 'a' and null keys pass.
    assert failed == {("a", "f1"): ["id_unique"]}
    assert actual.count() == 5


def test_unique_rule_is_deterministic_across_partitionings(spark):
    source = spark.createDataFrame([("a", q, "f1") for q in range(6)], SCHEMA)
    rules = [QualityRule(name="id_unique", kind="unique", columns=("id",))]
    survivors = [
        with_rule_results(source.repartition(n), rules).where("size(_failed_rules) = 0").first()["qty"]
        for n in (1, 3)
    ]
    assert survivors[0] == survivors[1]


def test_reference_rule_fails_unknown_keys_and_nulls_unless_null_passes(spark):
    source = spark.createDataFrame([("a", 1, "f1"), ("zz", 1, "f1"), (None, 1, "f1")], SCHEMA)
    known = spark.createDataFrame([("a",), ("a",)], "key string")
    rules = [
        QualityRule(
            name="id_known", kind="reference", columns=("id",), ref_table="keys", ref_columns=("key",)
        ),
        QualityRule(
            name="id_known_if_set",
            kind="reference",
            columns=("id",),
            ref_table="keys",
            ref_columns=("key",),
            action="flag",
            null_passes=True,
        ),
    ]
    actual = _results(with_rule_results(source, rules, references={"keys": known}))
    expected = spark.createDataFrame(
        [
            ("a", 1, "f1", [], []),
            ("zz", 1, "f1", ["id_known"], ["id_known_if_set"]),
            (None, 1, "f1", ["id_known"], []),
        ],
        RESULT_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_reference_rule_without_reference_frame_raises(spark):
    source = spark.createDataFrame([("a", 1, "f1")], SCHEMA)
    rule = QualityRule(name="r", kind="reference", columns=("id",), ref_table="keys", ref_columns=("key",))
    with pytest.raises(ValueError, match="needs the frame 'keys'"):
        with_rule_results(source, [rule])


def test_duplicate_rule_names_raise(spark):
    source = spark.createDataFrame([("a", 1, "f1")], SCHEMA)
    with pytest.raises(ValueError, match="unique"):
        with_rule_results(source, [QualityRule(name="x", expr="true"), QualityRule(name="x", expr="true")])


def test_no_rules_gives_empty_arrays(spark):
    source = spark.createDataFrame([("a", 1, "f1")], SCHEMA)
    actual = with_rule_results(source, []).first()
    assert (actual["_failed_rules"], actual["_dq_flags"]) == ([], [])


def test_split_by_quality_separates_valid_and_quarantined_rows(spark):
    source = spark.createDataFrame([("a", 1, "f1"), ("b", -1, "f1"), ("c", None, "f1")], SCHEMA)
    checked = with_rule_results(source, [QualityRule(name="qty_positive", expr="qty > 0")])
    valid, quarantined = split_by_quality(checked)
    assert "_failed_rules" not in valid.columns
    assert sorted(r["id"] for r in valid.collect()) == ["a"]
    assert sorted(r["id"] for r in quarantined.collect()) == ["b", "c"]


def test_split_by_quality_without_results_raises(spark):
    source = spark.createDataFrame([("a", 1, "f1")], SCHEMA)
    with pytest.raises(ValueError, match="_failed_rules"):
        split_by_quality(source)


def _metrics_rows(spark):
    source = spark.createDataFrame(
        [("a", 1, "f1"), ("b", -1, "f1"), ("c", 2, "f2"), ("d", 3, "f2"), ("e", None, "f2")], SCHEMA
    )
    rules = [
        QualityRule(name="qty_positive", expr="qty > 0", action="fail", threshold=0.4),
        QualityRule(name="id_is_a", expr="id = 'a'", action="flag"),
    ]
    checked = with_rule_results(source, rules)
    return rules, quality_metrics(checked, rules, table="t", run_id="run-1")


def test_quality_metrics_counts_per_delivery_and_rule(spark):
    _, metrics = _metrics_rows(spark)
    actual = {
        (r["delivery"], r["rule"]): (r["rows_checked"], r["rows_failed"], r["rows_passed"], r["action"])
        for r in metrics.collect()
    }
    assert actual == {
        ("f1", "qty_positive"): (2, 1, 1, "fail"),
        ("f2", "qty_positive"): (3, 1, 2, "fail"),
        ("f1", "id_is_a"): (2, 1, 1, "flag"),
        ("f2", "id_is_a"): (3, 3, 0, "flag"),
    }
    assert {r["run_id"] for r in metrics.collect()} == {"run-1"}


def test_enforce_thresholds_raises_naming_rule_delivery_share_and_threshold(spark):
    rules, metrics = _metrics_rows(spark)
    # f1: 1 of 2 (50%) > 40%; f2: 1 of 3 (33%) is under it.
    with pytest.raises(QualityThresholdError, match=r"qty_positive.*50\.0%.*delivery f1.*40\.0%"):
        enforce_thresholds(metrics, rules, default_threshold=0.05)


def test_enforce_thresholds_passes_at_or_under_threshold_and_ignores_flags(spark):
    rules, metrics = _metrics_rows(spark)
    relaxed = [QualityRule(name=r.name, expr=r.expr, action=r.action, threshold=0.5) for r in rules]
    enforce_thresholds(metrics, relaxed, default_threshold=0.0)  # 50% is not above 50%


def test_enforce_thresholds_uses_default_threshold(spark):
    rules, metrics = _metrics_rows(spark)
    no_threshold = [QualityRule(name=r.name, expr=r.expr, action=r.action) for r in rules]
    with pytest.raises(QualityThresholdError, match=r"33\.3%"):
        enforce_thresholds(metrics, no_threshold, default_threshold=0.2)


def test_measured_once_holds_the_same_metrics_on_the_driver(spark):
    _, metrics = _metrics_rows(spark)
    held = measured_once(metrics)

    assert held.schema == METRICS_SCHEMA
    assert_df_equality(held.drop("measured_at"), metrics.drop("measured_at"), ignore_row_order=True)
    jobs_before = spark.sparkContext.statusTracker().getJobIdsForGroup()
    assert len(held.collect()) == 4 and not held.isEmpty()  # the driver's rows: no Spark job
    assert spark.sparkContext.statusTracker().getJobIdsForGroup() == jobs_before


def test_bronze_record_is_kept_for_failed_rows_only_and_quarantine_rows_are_unchanged(spark):
    delivered = T.StructType([T.StructField(c, T.StringType()) for c in ("id", "qty", "_source_file")])
    schema = T.StructType(
        [
            T.StructField("id", T.StringType()),
            T.StructField("qty", T.IntegerType()),
            T.StructField("_source_file", T.StringType()),
            T.StructField("_failed_rules", T.ArrayType(T.StringType(), False)),
            T.StructField("_bronze", delivered),
        ]
    )
    checked = spark.createDataFrame(
        [
            ("a", 1, "f1", [], ("a", "1", "f1")),
            ("b", None, "f1", ["qty_valid"], ("b", "x", "f1")),
            ("c", 3, "f2", [], ("c", " 3 ", "f2")),
        ],
        schema,
    )
    kept = checked.transform(bronze_record_of_failures_only)

    assert kept.schema == checked.schema
    assert {r.id: r._bronze for r in kept.collect()} == {"a": None, "b": ("b", "x", "f1"), "c": None}
    _, before = split_by_quality(checked)
    _, after = split_by_quality(kept)
    assert_df_equality(
        quarantine_rows(after, run_id="r").drop("_quarantined_at"),
        quarantine_rows(before, run_id="r").drop("_quarantined_at"),
        ignore_row_order=True,
    )
    with pytest.raises(MissingColumnsError, match="_bronze"):
        checked.drop("_bronze").transform(bronze_record_of_failures_only)
