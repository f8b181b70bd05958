"""Helpers shared by the tests that drive the real command line or build a whole lake."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The lake every whole-pipeline test compares with: small, with the generator's defects.
REFERENCE_START = dt.date(2026, 3, 1)
REFERENCE_DAYS = 6
REFERENCE_SCALE = 0.004
REFERENCE_SEED = 11

# Small settings for tiny data and two shared cores (ECOM__SECTION__KEY, docs/configuration.md),
# the same as the in-process session's (tests/conftest.py TEST_SPARK_CONF): performance only.
# Without them every tiny query would compile generated code and shuffle into 8 partitions.
# The driver's JVM compiles with C1 only, in a code cache C1 does not fill: tiny runs are
# hundreds of small, different Spark operations, which C2 spent more CPU compiling than it
# saved (docs/engine.md, "The driver's JVM"; bench/results/MEASUREMENTS.md, 2026-12-07).
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=512m"
SMALL_SPARK_ENV = {
    "ECOM__SPARK__MASTER": "local[2]",
    "ECOM__SPARK__CONF__spark.driver.extraJavaOptions": TEST_JVM_OPTIONS,
    "ECOM__SPARK__CONF__SPARK.SQL.SHUFFLE.PARTITIONS": "2",
    "ECOM__SPARK__CONF__SPARK.UI.ENABLED": "false",
    "ECOM__SPARK__CONF__spark.databricks.delta.optimizeWrite.enabled": "false",
    "ECOM__SPARK__CONF__spark.databricks.delta.snapshotPartitions": "1",
    "ECOM__SPARK__CONF__spark.sql.codegen.wholeStage": "false",
    "ECOM__SPARK__CONF__spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "ECOM__SPARK__CONF__spark.sql.autoBroadcastJoinThreshold": "-1",
}
CLI_TIMEOUT_S = 1800


def generate_reference_landing(landing: str) -> None:
    """Generate the reference deliveries (seeded: the same bytes every time) into ``landing``."""
    from ecom_generator import generate_landing

    generate_landing(
        landing, start=REFERENCE_START, days=REFERENCE_DAYS, scale=REFERENCE_SCALE, seed=REFERENCE_SEED
    )


def cli_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the caller's ECOM_* settings, plus small Spark settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ECOM")}
    return {**environ, **SMALL_SPARK_ENV, **extra}


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = CLI_TIMEOUT_S,
    check: bool = True,
    module: str = "jobs",
) -> subprocess.CompletedProcess[str]:
    """Run ``ecom-pipeline <args>`` (as ``python -m jobs``) in a subprocess; fail the test on error.

    Args:
        args: The command line after ``ecom-pipeline``.
        env: The environment; default :func:`cli_environment`.
        cwd: The working directory; default the repository.
        timeout: Seconds before the subprocess is killed.
        check: Fail the calling test when the command exits non-zero.
        module: The module run with ``python -m``: ``tests.faults`` runs the CLI with the
            crash points of the crash-safety tests installed.
    """
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=cli_environment() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-30:])
        pytest.fail(f"`ecom-pipeline {' '.join(args)}` exited {completed.returncode}:\n{tail}")
    return completed
