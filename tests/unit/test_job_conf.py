"""``spark.job_conf``: Spark SQL settings of one job's session, and only of it."""

from __future__ import annotations

import pytest

from jobs.graph import check_job_conf
from jobs.runner import _LazySession
from pipeline_lib.config import load_config

WHOLE_STAGE = "spark.sql.codegen.wholeStage"
FACTORY_MODE = "spark.sql.codegen.factoryMode"
COMPILED = {WHOLE_STAGE: "true", FACTORY_MODE: "FALLBACK"}  # Spark's defaults; the tests run interpreted


def _whole_stage_stages(session) -> int:
    """How many whole-stage code generation nodes the plan of a small aggregate ran with."""
    frame = session.range(10).selectExpr("id % 3 AS k").groupBy("k").count()
    assert sorted(row["count"] for row in frame.collect()) == [3, 3, 4]
    # Executed: adaptive execution's final plan, where the code generation stages are.
    plan = frame._jdf.queryExecution().executedPlan().toString()
    return plan.count("WholeStageCodegen") + plan.count("*(")


def test_a_jobs_settings_reach_its_session_and_no_other(spark):
    assert spark.conf.get(WHOLE_STAGE) == "false"  # the tests' shared setting
    sessions = _LazySession(spark)
    tuned = sessions.for_job("silver.clicks", settings=COMPILED)
    plain = sessions.for_job("silver.products", settings={})

    assert tuned.conf.get(WHOLE_STAGE) == "true"
    assert plain.conf.get(WHOLE_STAGE) == "false"
    assert spark.conf.get(WHOLE_STAGE) == "false"
    assert _whole_stage_stages(tuned) > 0
    assert _whole_stage_stages(plain) == 0


def test_a_setting_no_session_can_change_is_refused_with_the_job_named(spark):
    refused = r"spark\.job_conf\.gold\.fact_orders: spark\.driver\.memory .*spark\.conf"
    with pytest.raises(ValueError, match=refused):
        _LazySession(spark).for_job("gold.fact_orders", settings={"spark.driver.memory": "8g"})


def test_an_unknown_job_is_refused_before_anything_runs():
    check_job_conf({"silver.products": {WHOLE_STAGE: "false"}})
    with pytest.raises(ValueError, match=r"unknown jobs \['products'\]"):
        check_job_conf({"products": {WHOLE_STAGE: "false"}})


def test_settings_from_the_environment_read_as_text_per_job():
    assert load_config("local", environ={}).spark.job_conf == {}  # none by default
    environ = {
        "ECOM__SPARK__JOB_CONF": (
            "{silver.clicks: {spark.sql.shuffle.partitions: 16},"
            " silver.products: {spark.sql.codegen.wholeStage: false}}"
        )
    }
    config = load_config("local", environ=environ)
    assert config.spark.job_conf == {
        "silver.clicks": {"spark.sql.shuffle.partitions": "16"},
        "silver.products": {WHOLE_STAGE: "false"},
    }
    check_job_conf(config.spark.job_conf)
