"""The crash hook: which point kills, which does not, and that the kill is a real SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.faults import CRASH_ENV, crash_point, parse_crash_spec, table_label
from tests.support import REPO, cli_environment

SCRIPT = """
from tests.faults import crash_point
crash_point("bronze.before_log.orders")
print("passed bronze", flush=True)
crash_point("delta.before_commit", table="/lake/silver/orders")
print("passed the first commit", flush=True)
crash_point("delta.before_commit", table="/lake/gold/fact_orders")
print("passed the second commit", flush=True)
"""


def run_script(crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = cli_environment(**({CRASH_ENV: crash_at} if crash_at else {}))
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("a.b", ("a.b", 1)), ("a.b:3", ("a.b", 3)), (" a.b:1 ", ("a.b", 1)), ("a.b:", ("a.b", 1))],
)
def test_parse_crash_spec(spec, expected):
    assert parse_crash_spec(spec) == expected


@pytest.mark.parametrize("spec", ["a.b:0", ":2", "a.b:x", "a.b:-1"])
def test_parse_crash_spec_refuses_a_bad_spec(spec):
    with pytest.raises(ValueError, match="expected <point>"):
        parse_crash_spec(spec)


def test_table_label_is_layer_dot_table():
    assert table_label("file:/tmp/lake/silver/orders/") == "silver.orders"


def test_crash_point_is_a_no_op_without_the_variable(monkeypatch):
    monkeypatch.delenv(CRASH_ENV, raising=False)
    crash_point("delta.before_commit", table="/lake/silver/orders")


def test_crash_point_ignores_other_points_and_mere_name_prefixes(monkeypatch):
    monkeypatch.setenv(CRASH_ENV, "delta.before")  # not a dotted prefix of delta.before_commit
    crash_point("delta.before_commit", table="/lake/silver/orders")
    monkeypatch.setenv(CRASH_ENV, "watermark.before_save.silver.orders")
    crash_point("watermark.before_save.silver.clicks")


def test_without_the_variable_the_script_runs_through():
    completed = run_script(None)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1] == "passed the second commit"


@pytest.mark.parametrize(
    ("crash_at", "last_line", "point"),
    [
        ("bronze.before_log.orders", None, "bronze.before_log.orders"),
        ("delta.before_commit", "passed bronze", "delta.before_commit.silver.orders"),
        ("delta.before_commit:2", "passed the first commit", "delta.before_commit.gold.fact_orders"),
        ("delta.before_commit.gold", "passed the first commit", "delta.before_commit.gold.fact_orders"),
    ],
)
def test_the_named_point_kills_the_process_with_sigkill(crash_at, last_line, point):
    completed = run_script(crash_at)

    assert completed.returncode == -signal.SIGKILL
    lines = completed.stdout.splitlines()
    assert (lines[-1] if lines else None) == last_line
    assert "killing process" in completed.stderr and completed.stderr.rstrip().endswith(f"at {point}")
