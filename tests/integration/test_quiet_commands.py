"""Commands print their own lines only: Spark's and Hadoop's start-up warnings go to a log file."""

from __future__ import annotations

import re

import pytest

from tests.support import cli_environment, run_cli

pytestmark = pytest.mark.slow

# The one line the JVM itself prints when Spark adds its incubator module; no setting stops it.
JVM_NOTICE = "WARNING: Using incubator modules: jdk.incubator.vector"


def test_a_command_prints_its_own_lines_and_spark_logs_to_a_file(tmp_path):
    log = tmp_path / "spark.log"
    completed = run_cli(
        "summary", "--lake", str(tmp_path / "lake"), env=cli_environment(ECOM_SPARK_LOG=str(log)), check=False
    )
    lines = [
        line for line in completed.stderr.splitlines() + completed.stdout.splitlines() if line != JVM_NOTICE
    ]
    assert lines == [
        f"no Delta tables under {tmp_path / 'lake'} yet: run `ecom-pipeline run --layer all` first"
    ]
    assert not any(re.search(r"\bWARN\b|log4j", line) for line in lines)
    assert "NativeCodeLoader" in log.read_text()  # Spark's warnings are in the file
