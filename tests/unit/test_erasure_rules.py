"""Right to erasure, pure parts: mention patterns, redaction, pseudonyms and per-table scrub plans."""

from __future__ import annotations

import chispa
import pytest
from delta.tables import DeltaTable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.io.quality import quarantine_rows
from pipeline_lib.privacy.erasure import (
    ERASED_TEXT,
    NEEDLES_SCHEMA,
    CustomerIdentifiers,
    ScrubPlan,
    java_literal,
    mentions,
    plan_scrub,
    pseudonym,
    redact,
)

IDS = CustomerIdentifiers(
    "C0000042",
    emails=("Anna.Berg@Example.com",),
    phones=("+49 151 1234567",),
    email_hashes=("h42",),
    devices=("dev-1",),
)


@pytest.fixture
def needles(spark) -> DataFrame:
    return spark.createDataFrame([IDS.needles_row("salt")], NEEDLES_SCHEMA)


def scrubbed(source: DataFrame, plan: ScrubPlan, needles: DataFrame) -> DataFrame:
    """What the plan's MERGE leaves: rows not deleted, with the new values where updated."""
    joined = source.crossJoin(needles)
    kept = joined if plan.delete_when is None else joined.where(~plan.delete_when)
    values = [
        F.when(plan.update_when, plan.assignments[c]).otherwise(F.col(c)).alias(c)
        if c in plan.assignments
        else F.col(c)
        for c in source.columns
    ]
    return kept.select(*values, plan.affected_when.alias("hit"))


def test_identifiers_refuse_a_blank_or_untrimmed_id():
    with pytest.raises(ValueError, match="non-blank, trimmed"):
        CustomerIdentifiers("  ")
    with pytest.raises(ValueError, match="non-blank, trimmed"):
        CustomerIdentifiers(" C1")


def test_java_literal_quotes_regex_syntax_and_the_quote_end(spark):
    source = spark.createDataFrame([("a.b",), ("axb",), ("x\\Ey",)], "text string")
    either = F.col("text").rlike(java_literal("a.b")) | F.col("text").rlike(java_literal("x\\Ey"))
    assert [r[0] for r in source.select(either).collect()] == [True, False, True]


def test_a_mention_is_a_whole_token_and_e_mails_match_in_any_case(spark, needles):
    texts = [
        ("order of C0000042 today", True),
        ('{"customer_id":"C0000042"}', True),
        ("C00000421", False),  # a longer id
        ("XC0000042", False),
        ("mail ANNA.BERG@example.COM please", True),
        ("call +49 151 1234567", True),
        ("+49 151 12345678", False),
        ("device dev-1 seen", True),
        ("dev-10", False),
        (None, False),
    ]
    source = spark.createDataFrame(texts, "text string, expected boolean").crossJoin(needles)
    actual = source.withColumn(
        "actual", mentions(F.col("text"), T.StringType(), F.col("__erasure_text_regex"))
    )
    chispa.assert_column_equality(actual, "actual", "expected")


def test_mentions_and_redact_search_nested_texts(spark, needles):
    schema = "tags array<string>, props map<string,string>, rec struct<a:string,n:int>"
    source = spark.createDataFrame(
        [
            (["x", "C0000042"], {"k": "anna.berg@example.com"}, ("C0000042", 1)),
            (["x"], {"k": "v"}, None),
            (None, None, None),
        ],
        schema,
    )
    types = {f.name: f.dataType for f in source.schema.fields}
    pattern = F.col("__erasure_text_regex")
    actual = (
        source.crossJoin(needles)
        .select(
            *[mentions(F.col(c), types[c], pattern).alias(f"m_{c}") for c in types],
            *[redact(F.col(c), types[c], pattern).alias(c) for c in types],
        )
        .collect()
    )
    assert [(r["m_tags"], r["m_props"], r["m_rec"]) for r in actual] == [
        (True, True, True),
        (False, False, False),
        (False, False, False),
    ]
    assert actual[0]["tags"] == ["x", ERASED_TEXT]
    assert actual[0]["props"] == {"k": ERASED_TEXT}
    assert actual[0]["rec"].asDict() == {"a": ERASED_TEXT, "n": 1}
    assert (actual[1]["tags"], actual[1]["rec"]) == (["x"], None)
    assert (actual[2]["tags"], actual[2]["props"]) == (None, None)


def test_pseudonym_is_stable_within_a_salt_and_unlinkable_across_salts(spark):
    source = spark.createDataFrame([("dev-1",), ("dev-1",), ("dev-2",), (None,)], "d string")
    one = [r[0] for r in source.select(pseudonym(F.col("d"), F.lit("s1"))).collect()]
    two = [r[0] for r in source.select(pseudonym(F.col("d"), F.lit("s2"))).collect()]
    assert one[0] == one[1] != one[2]
    assert one[0].startswith("erased-") and len(one[0]) == len("erased-") + 32
    assert one[3] is None
    assert one[0] != two[0]
    assert "dev-1" not in one[0]


def test_activity_rows_lose_the_customer_and_keep_everything_else(spark, needles):
    source = spark.createDataFrame(
        [
            ("O1", " C0000042 ", "Berlin", 'bad "C0000042" row', "s1", "dev-1", 7),
            ("O2", "C0000043", "Paris", None, "s2", "dev-2", 8),
            ("O3", "C0000043", "Rome", "see C0000042", "s3", "dev-2", 9),
        ],
        "order_id string, customer_id string, ship_city string, _corrupt_record string, "
        "session_id string, anonymous_id string, customer_sk long",
    )
    plan = plan_scrub("silver.orders", source.schema)
    assert plan.delete_when is None
    first, second, third = scrubbed(source, plan, needles).orderBy("order_id").collect()
    assert (first["customer_id"], first["ship_city"], first["_corrupt_record"]) == (None, None, None)
    assert first["customer_sk"] == -1 and first["hit"]
    assert first["anonymous_id"].startswith("erased-") and first["session_id"].startswith("erased-")
    assert second.asDict() == {**source.orderBy("order_id").collect()[1].asDict(), "hit": False}
    assert third["hit"] and third["_corrupt_record"] is None and third["customer_id"] == "C0000043"
    assert (third["ship_city"], third["customer_sk"], third["anonymous_id"]) == ("Rome", 9, "dev-2")


def test_customer_tables_delete_every_row_of_the_customer(spark, needles):
    source = spark.createDataFrame(
        [
            ("C0000042", "anna.berg@example.com", None, None),  # their id
            ("C9", "ANNA.BERG@EXAMPLE.COM", None, None),  # their e-mail under another id
            (None, None, "h42", None),  # their e-mail hash
            (None, None, None, '"C0000042","anna"'),  # a corrupt record of theirs
            ("C0000043", "other@example.com", "h43", None),
        ],
        "customer_id string, email string, email_hash string, _corrupt_record string",
    )
    plan = plan_scrub("silver.customers", source.schema)
    assert [r["customer_id"] for r in scrubbed(source, plan, needles).collect()] == ["C0000043"]


def test_a_customers_recommendations_are_deleted_with_them(spark, needles):
    source = spark.createDataFrame(
        [
            ("C0000042", 1, "P1", "model", "personal model"),
            ("C0000042", 2, "P2", "co_purchase", "often bought together with P1"),
            ("C0000043", 1, "P1", "popularity", "popular in the shop"),
        ],
        "customer_id string, rank int, product_id string, source string, reason string",
    )
    plan = plan_scrub("gold.recommendations", source.schema)
    assert [r["customer_id"] for r in scrubbed(source, plan, needles).collect()] == ["C0000043"]


def test_a_scrubbed_quarantine_row_keeps_the_key_quarantine_would_give_it(spark, needles):
    bronze = spark.createDataFrame(
        [("O1", "C0000042", "Berlin", "f.csv")],
        "order_id string, customer_id string, ship_city string, _source_file string",
    )
    quarantined = quarantine_rows(bronze.withColumn("_failed_rules", F.array(F.lit("rule"))), run_id="r")
    scrubbed_row = scrubbed(quarantined, plan_scrub("quarantine.orders", quarantined.schema), needles)
    scrubbed_bronze = scrubbed(bronze, plan_scrub("bronze.orders", bronze.schema), needles).drop("hit")
    again = quarantine_rows(scrubbed_bronze.withColumn("_failed_rules", F.array(F.lit("rule"))), run_id="r2")
    assert scrubbed_row.first()["_row_key"] == again.first()["_row_key"]
    assert scrubbed_row.first()["_row_key"] != quarantined.first()["_row_key"]


def test_a_plan_runs_as_a_merge_that_logs_no_identifier(spark, needles, tmp_path):
    path = str(tmp_path / "t")
    source = spark.createDataFrame(
        [("C0000042", "x", ["C0000042"]), ("C1", "y", [])], "customer_id string, v string, tags array<string>"
    )
    source.write.format("delta").save(path)
    plan = plan_scrub("gold.fact_orders", source.schema)
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(F.broadcast(needles).alias("s"), plan.affected_when)
        .whenMatchedUpdate(condition=plan.update_when, set=dict(plan.assignments))
        .execute()
    )
    rows = spark.read.format("delta").load(path).collect()
    assert {(r["customer_id"], r["v"], tuple(r["tags"])) for r in rows} == {
        (None, "x", (ERASED_TEXT,)),
        ("C1", "y", ()),
    }
    commit = (tmp_path / "t" / "_delta_log" / "00000000000000000001.json").read_text()
    assert '"operation":"MERGE"' in commit and "C0000042" not in commit
