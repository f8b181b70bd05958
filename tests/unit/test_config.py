"""The config loader: layering, and errors that name the key and where it came from."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_lib.config import ConfigError, load_config, parse_assignment

REPO = Path(__file__).resolve().parents[2]


def make_conf(tmp_path: Path, local: str = "", base_extra: str = "") -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    base = (REPO / "conf" / "base.yaml").read_text() + base_extra
    (conf / "base.yaml").write_text(base)
    (conf / "local.yaml").write_text(local)
    return conf


def test_checked_in_environments_load(tmp_path):
    for env in ("local", "cluster"):
        config = load_config(env, conf_dir=REPO / "conf", environ={})
        assert config.env == env
        assert config.pipeline.base_currency == "EUR"
        assert config.pipeline.session_gap_minutes == 30


def test_local_roots_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config("local", conf_dir=REPO / "conf", environ={})
    assert config.paths.lake == str(tmp_path / "lakehouse")
    assert config.paths.landing == str(tmp_path / "landing")


def test_object_store_roots_stay_as_given():
    config = load_config("cluster", conf_dir=REPO / "conf", environ={})
    assert config.paths.lake == "s3a://example-shop-lake"


def test_layers_environment_over_file_and_flags_over_environment(tmp_path):
    conf = make_conf(tmp_path, local="pipeline:\n  session_gap_minutes: 20\n")
    environ = {
        "ECOM_LAKE": str(tmp_path / "env-lake"),
        "ECOM__PIPELINE__SESSION_GAP_MINUTES": "45",
        "ECOM__PIPELINE__BASE_CURRENCY": "USD",
    }
    config = load_config("local", conf_dir=conf, environ=environ, overrides={"pipeline.base_currency": "GBP"})
    assert config.paths.lake == str(tmp_path / "env-lake")
    assert config.pipeline.session_gap_minutes == 45
    assert config.pipeline.base_currency == "GBP"


def test_file_layer_overrides_base(tmp_path):
    conf = make_conf(tmp_path, local="pipeline:\n  session_gap_minutes: 20\n")
    assert load_config("local", conf_dir=conf, environ={}).pipeline.session_gap_minutes == 20


def test_spark_conf_keys_with_dots_from_environment(tmp_path):
    conf = make_conf(tmp_path)
    environ = {"ECOM__SPARK__CONF__SPARK.SQL.SHUFFLE.PARTITIONS": "3"}
    config = load_config("local", conf_dir=conf, environ=environ)
    assert config.spark.conf["spark.sql.shuffle.partitions"] == "3"
    assert config.spark.conf["spark.sql.session.timeZone"] == "UTC"


def test_camel_case_spark_keys_keep_their_case_from_environment(tmp_path):
    conf = make_conf(tmp_path)
    environ = {"ECOM__SPARK__CONF__spark.databricks.delta.snapshotPartitions": "2"}
    config = load_config("local", conf_dir=conf, environ=environ)
    assert config.spark.conf["spark.databricks.delta.snapshotPartitions"] == "2"


def test_unknown_key_names_key_and_file(tmp_path):
    conf = make_conf(tmp_path, local="pipeline:\n  sesion_gap_minutes: 20\n")
    with pytest.raises(ConfigError, match=r"unknown key 'pipeline.sesion_gap_minutes' in .*local.yaml"):
        load_config("local", conf_dir=conf, environ={})


def test_unknown_section_names_file(tmp_path):
    conf = make_conf(tmp_path, local="pipelines:\n  x: 1\n")
    with pytest.raises(ConfigError, match=r"unknown section 'pipelines' in .*local.yaml"):
        load_config("local", conf_dir=conf, environ={})


def test_bad_type_names_key_and_layer(tmp_path):
    conf = make_conf(tmp_path)
    with pytest.raises(
        ConfigError, match=r"'pipeline.session_gap_minutes' in environment: expected an integer"
    ):
        load_config("local", conf_dir=conf, environ={"ECOM__PIPELINE__SESSION_GAP_MINUTES": "soon"})


@pytest.mark.parametrize(
    ("local", "message"),
    [
        (
            "pipeline:\n  base_currency: euro\n",
            r"'pipeline.base_currency' in .*local.yaml: expected an ISO-4217",
        ),
        ("pipeline:\n  source_timezone: Mars/Olympus\n", r"unknown time zone 'Mars/Olympus'"),
        ("pipeline:\n  session_gap_minutes: 0\n", r"session_gap_minutes.*between 1 and 1440"),
        ("quality:\n  fail_threshold: 1.5\n", r"quality.fail_threshold.*share in \[0, 1\]"),
        ("segments:\n  score_buckets: 1\n", r"score_buckets.*between 2 and 10"),
        ("paths:\n  lake: ''\n", r"'paths.lake'.*must not be empty"),
    ],
)
def test_bad_values_are_refused(tmp_path, local, message):
    conf = make_conf(tmp_path, local=local)
    with pytest.raises(ConfigError, match=message):
        load_config("local", conf_dir=conf, environ={})


def test_quality_rules_are_validated(tmp_path):
    rules = (
        "quality:\n  rules:\n    orders:\n      - {name: ok, expr: 'order_id IS NOT NULL', action: drop}\n"
    )
    conf = make_conf(tmp_path, local=rules)
    with pytest.raises(ConfigError, match=r"quality.rules.orders\[0\].action.*expected one of"):
        load_config("local", conf_dir=conf, environ={})


def test_reference_rule_needs_its_table(tmp_path):
    rules = "quality:\n  rules:\n    order_items:\n      - {name: r, kind: reference, columns: [order_id]}\n"
    conf = make_conf(tmp_path, local=rules)
    with pytest.raises(ConfigError, match=r"reference rule needs 'ref_table'"):
        load_config("local", conf_dir=conf, environ={})


def test_unknown_environment_lists_known_ones(tmp_path):
    conf = make_conf(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown environment 'prod'.*known: local"):
        load_config("prod", conf_dir=conf, environ={})


def test_malformed_yaml_names_the_file(tmp_path):
    conf = make_conf(tmp_path, local="pipeline: [unclosed\n")
    with pytest.raises(ConfigError, match=r"local.yaml: not valid YAML"):
        load_config("local", conf_dir=conf, environ={})


def test_environment_variable_scheme_is_checked(tmp_path):
    conf = make_conf(tmp_path)
    with pytest.raises(ConfigError, match=r"ECOM__PIPELINE: expected ECOM__<SECTION>__<KEY>"):
        load_config("local", conf_dir=conf, environ={"ECOM__PIPELINE": "x"})


def test_fingerprint_changes_with_effective_config(tmp_path):
    conf = make_conf(tmp_path)
    first = load_config("local", conf_dir=conf, environ={})
    same = load_config("local", conf_dir=conf, environ={})
    other = load_config("local", conf_dir=conf, environ={"ECOM__PIPELINE__BASE_CURRENCY": "USD"})
    assert first.fingerprint() == same.fingerprint() != other.fingerprint()


def test_parse_assignment():
    assert parse_assignment("pipeline.session_gap_minutes=15") == ("pipeline.session_gap_minutes", 15)
    with pytest.raises(ConfigError, match=r"expects section\.key=value"):
        parse_assignment("pipeline.session_gap_minutes")


# --- constraints, and the layer each bad value came from -------------------------------------


@pytest.mark.parametrize(
    ("local", "environ", "overrides", "where"),
    [
        ("pipeline:\n  max_parallel_jobs: 0\n", {}, {}, r"in .*local\.yaml: "),
        ("", {"ECOM__PIPELINE__MAX_PARALLEL_JOBS": "0"}, {}, r"in environment: "),
        ("", {"ECOM__PIPELINE": "{max_parallel_jobs: 0}"}, {}, r"in environment: "),
        ("", {}, {"pipeline.max_parallel_jobs": 0}, r"in command line \(pipeline\.max_parallel_jobs\): "),
    ],
)
def test_a_value_out_of_range_names_key_range_and_layer(tmp_path, local, environ, overrides, where):
    conf = make_conf(tmp_path, local=local)
    variable = next(iter(environ), None)
    expected = (
        rf"^bad value for 'pipeline\.max_parallel_jobs' {where}expected between 1 and 64 jobs at once, got 0"
        + (rf" \(set by {variable}\)$" if variable else "$")
    )
    with pytest.raises(ConfigError, match=expected):
        load_config("local", conf_dir=conf, environ=environ, overrides=overrides)


@pytest.mark.parametrize(
    ("local", "message"),
    [
        ("pipeline:\n  session_gap_minutes: '20'\n", r"session_gap_minutes' .*expected an integer, got '20'"),
        ("pipeline:\n  max_parallel_jobs: true\n", r"max_parallel_jobs' .*expected an integer, got True"),
        ("pipeline:\n  popularity_windows_days: [7, 0]\n", r"popularity_windows_days\[1\]' .*positive day"),
        ("pipeline:\n  popularity_windows_days: []\n", r"popularity_windows_days' .*non-empty list"),
        ("privacy:\n  allow_insecure_default_key: 'no'\n", r"allow_insecure_default_key' .*true or false"),
        ("privacy:\n  hmac_key_env: 'my key'\n", r"hmac_key_env' .*an environment variable's name"),
        ("spark:\n  log_level: loud\n", r"spark\.log_level' .*expected one of 'ALL'"),
        ("spark:\n  conf: {spark.x: [1]}\n", r"'spark\.conf\.spark\.x' .*expected a string"),
        (
            "quality:\n  plausible_time: {earliest: soon}\n",
            r"plausible_time\.earliest' .*YYYY-MM-DD, got 'soon'",
        ),
        ("maintenance:\n  vacuum_retention_hours: -1\n", r"vacuum_retention_hours' .*not negative, got -1"),
        ("segments:\n  mapping: [{segment: x}]\n", r"missing key 'segments\.mapping\[0\]\.when'"),
        ("recommendations:\n  top_n: 0\n", r"recommendations\.top_n' .*between 1 and 1000 products, got 0"),
        ("recommendations:\n  als: {rank: 0}\n", r"recommendations\.als\.rank' .*at least 1, got 0"),
        ("recommendations:\n  weights: {view: -1}\n", r"recommendations\.weights\.view' .*not negative"),
        (
            "recommendations:\n  weights: {view: 0, add_to_cart: 0, purchase: 0}\n",
            r"'recommendations\.weights' in .*local\.yaml: at least one kind of interaction",
        ),
        ("spark: 5\n", r"bad value for 'spark' in .*local\.yaml: expected a mapping, got 5"),
    ],
)
def test_constraints_are_checked(tmp_path, local, message):
    conf = make_conf(tmp_path, local=local)
    with pytest.raises(ConfigError, match=message):
        load_config("local", conf_dir=conf, environ={})


def test_a_rule_field_out_of_range_names_the_rule_and_the_file(tmp_path):
    rules = "quality:\n  rules:\n    orders:\n      - {name: r, expr: 'x > 0', action: fail, threshold: 2}\n"
    conf = make_conf(tmp_path, local=rules)
    with pytest.raises(
        ConfigError,
        match=r"'quality\.rules\.orders\[0\]\.threshold' in .*local\.yaml: expected a share in \[0, 1\]",
    ):
        load_config("local", conf_dir=conf, environ={})


def test_every_problem_is_reported_one_per_line(tmp_path):
    conf = make_conf(tmp_path, local="pipeline:\n  base_currency: euro\n  max_parallel_jobs: 0\n")
    with pytest.raises(ConfigError) as refused:
        load_config("local", conf_dir=conf, environ={"ECOM__SEGMENTS__SCORE_BUCKETS": "11"})
    lines = str(refused.value).splitlines()
    assert [line.split("'")[1] for line in lines] == [
        "pipeline.base_currency",
        "pipeline.max_parallel_jobs",
        "segments.score_buckets",
    ]
    assert lines[2].endswith("(set by ECOM__SEGMENTS__SCORE_BUCKETS)")


def test_lenient_spellings_are_normalized(tmp_path):
    local = "spark:\n  log_level: info\n"
    local += "  conf: {spark.sql.adaptive.enabled: false, spark.sql.shuffle.partitions: 4}\n"
    local += "quality:\n  plausible_time: {earliest: 2001-02-03}\n"  # a YAML date, not text
    config = load_config("local", conf_dir=make_conf(tmp_path, local=local), environ={})
    assert config.spark.log_level == "INFO"
    assert config.spark.conf["spark.sql.adaptive.enabled"] == "false"
    assert config.spark.conf["spark.sql.shuffle.partitions"] == "4"
    assert config.quality.plausible_time.earliest == "2001-02-03"


def test_copies_stay_frozen_and_checked(tmp_path):
    config = load_config("local", conf_dir=make_conf(tmp_path), environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pipeline.max_parallel_jobs = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="less than or equal to 64"):
        dataclasses.replace(config.pipeline, max_parallel_jobs=65)
    moved = config.with_paths(lake="relative-lake")
    assert moved.paths.lake == str(Path("relative-lake").resolve())
    assert moved.paths.landing == config.paths.landing


# --- the environment scheme: every key through a name a shell can export ---------------------


def test_a_section_variable_takes_a_yaml_mapping_merged_into_the_section(tmp_path):
    environ = {
        "ECOM__SPARK__CONF": (
            "{spark.sql.shuffle.partitions: 4, spark.databricks.delta.snapshotPartitions: 2}"
        ),
        "ECOM__PIPELINE": "{base_currency: USD, session_gap_minutes: 10}",
    }
    assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) for name in environ)  # what `export` accepts
    config = load_config("local", conf_dir=make_conf(tmp_path), environ=environ)
    assert config.spark.conf["spark.sql.shuffle.partitions"] == "4"
    assert config.spark.conf["spark.databricks.delta.snapshotPartitions"] == "2"  # case kept
    assert config.spark.conf["spark.sql.session.timeZone"] == "UTC"  # the file's other keys stay
    assert (config.pipeline.base_currency, config.pipeline.session_gap_minutes) == ("USD", 10)
    assert config.pipeline.source_timezone == "Europe/Berlin"


def test_the_more_specific_variable_wins_whatever_the_order(tmp_path):
    conf = make_conf(tmp_path)
    specific_first = {
        "ECOM__SPARK__CONF__SPARK.SQL.SHUFFLE.PARTITIONS": "5",
        "ECOM__PIPELINE__SESSION_GAP_MINUTES": "11",
        "ECOM__SPARK__CONF": "{spark.sql.shuffle.partitions: 4}",
        "ECOM__PIPELINE": "{session_gap_minutes: 10}",
    }
    for environ in (specific_first, dict(reversed(specific_first.items()))):
        config = load_config("local", conf_dir=conf, environ=environ)
        assert config.spark.conf["spark.sql.shuffle.partitions"] == "5"
        assert config.pipeline.session_gap_minutes == 11


def test_an_unknown_key_in_a_section_variable_names_the_variable_not_the_value(tmp_path):
    conf = make_conf(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_config("local", conf_dir=conf, environ={"ECOM__PRIVACY": "{hmac_key: s3cret-value}"})
    assert re.fullmatch(
        r"unknown key 'privacy\.hmac_key' in environment \(known: .*\) \(set by ECOM__PRIVACY\)",
        str(refused.value),
    )
    assert "s3cret" not in str(refused.value)


def test_a_variable_that_is_not_yaml_is_named_without_its_value(tmp_path):
    conf = make_conf(tmp_path)
    with pytest.raises(
        ConfigError, match=r"^environment variable ECOM__SPARK__CONF: .*not valid YAML"
    ) as bad:
        load_config("local", conf_dir=conf, environ={"ECOM__SPARK__CONF": "{s3cret: [unclosed"})
    assert "s3cret" not in str(bad.value)


def test_the_scheme_works_from_a_real_shell(tmp_path):
    conf = make_conf(tmp_path)
    reader = tmp_path / "read_config.py"
    reader.write_text(
        "from pipeline_lib.config import load_config\n"
        f"config = load_config('local', conf_dir={str(conf)!r})\n"
        "print(config.spark.conf['spark.sql.shuffle.partitions'], config.pipeline.base_currency)\n"
    )
    exports = "export ECOM__SPARK__CONF='{spark.sql.shuffle.partitions: 4}' ECOM__PIPELINE__BASE_CURRENCY=USD"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
    environ["PYTHONPATH"] = str(REPO)
    shell = subprocess.run(
        ["bash", "-c", f'{exports} && exec "$0" "$1"', sys.executable, str(reader)],
        capture_output=True,
        text=True,
        env=environ,
        check=True,
    )
    assert shell.stdout.split() == ["4", "USD"]
    # What the scheme replaces: bash refuses a name with dots.
    refused = subprocess.run(["bash", "-c", "export ECOM__SPARK__CONF__SPARK.SQL.SHUFFLE.PARTITIONS=4"])
    assert refused.returncode != 0


def test_campaigns_and_stock_load_with_section_defaults():
    config = load_config("local", conf_dir=REPO / "conf", environ={"ECOM__STOCK__SERVICE_LEVEL": "0.9"})
    ads = config.campaigns.named("second_order_ads")
    winback = config.campaigns.named("winback_email")
    assert (ads.channel, ads.control_share, ads.measurement_days) == ("ads", 0.2, 14)
    assert winback.control_share == config.campaigns.control_share
    assert config.stock.service_level == 0.9
    with pytest.raises(ConfigError, match=r"unknown campaign 'nope' \(configured: winback_email"):
        config.campaigns.named("nope")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ECOM__CAMPAIGNS__CONTROL_SHARE": "1"}, r"'campaigns\.control_share' .*strictly between 0 and 1"),
        ({"ECOM__CAMPAIGNS__CONFIDENCE_LEVEL": "0.4"}, r"'campaigns\.confidence_level' .*between 0\.5 and 1"),
        ({"ECOM__STOCK__SHORT_WINDOW_DAYS": "40"}, r"short_window_days <= long_window_days"),
        ({"ECOM__STOCK__SERVICE_LEVEL": "1.0"}, r"'stock\.service_level' .*\[0\.5, 1\)"),
        (
            {"ECOM__CAMPAIGNS__DEFINITIONS": "[{name: x, channel: fax, start_date: 2026-01-01, rfm: r=1}]"},
            r"'campaigns\.definitions\[0\]\.channel' .*'email', 'sms' or 'ads', got 'fax'",
        ),
        (
            {"ECOM__CAMPAIGNS__DEFINITIONS": "[{name: a b, channel: sms, start_date: 2026-01-01, rfm: r=1}]"},
            r"'campaigns\.definitions\[0\]\.name' .*letters, digits",
        ),
        (
            {"ECOM__CAMPAIGNS__DEFINITIONS": "[{name: x, channel: sms, start_date: 2026-01-01}]"},
            r"needs 'segments', an 'rfm' condition, or both",
        ),
        (
            {"ECOM__CAMPAIGNS__DEFINITIONS": "[{name: x, channel: sms, start_date: soon, rfm: r=1}]"},
            r"'campaigns\.definitions\[0\]\.start_date'",
        ),
        (
            {
                "ECOM__CAMPAIGNS__DEFINITIONS": (
                    "[{name: x, channel: sms, start_date: 2026-01-01, rfm: r=1},"
                    " {name: x, channel: ads, start_date: 2026-01-01, rfm: r=2}]"
                )
            },
            r"campaign names must be unique, \['x'\] repeat",
        ),
    ],
)
def test_bad_campaigns_and_stock_settings_are_refused(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config("local", conf_dir=REPO / "conf", environ=environ)


def test_recommendation_keys_come_from_nested_environment_variables(tmp_path):
    conf = make_conf(tmp_path)
    environ = {"ECOM__RECOMMENDATIONS__ALS__RANK": "4", "ECOM__RECOMMENDATIONS__WEIGHTS__VIEW": "0.5"}
    config = load_config("local", conf_dir=conf, environ=environ)
    assert (config.recommendations.als.rank, config.recommendations.weights.view) == (4, 0.5)
    assert config.recommendations.als.seed == 42 and config.recommendations.top_n == 10
