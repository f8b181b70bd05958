"""The config loader: layering, and errors that name the key and where it came from."""

from __future__ import annotations

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
