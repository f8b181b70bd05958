"""Same answer in any time zone: the whole pipeline on a machine set to Europe/Paris.

Most users do not run in UTC, this machine and CI do. One ``ecom-pipeline run --layer all``
subprocess with ``TZ=Europe/Paris`` (the JVM and Python both take their default zone from
it) builds a lake from the reference deliveries, which must equal the session's reference
lake, built in-process in UTC, table by table. Naive source timestamps are still read in
``pipeline.source_timezone`` (Europe/Berlin), never in the machine's zone. The speed of such
a run is the benchmark's business (bench/README.md), not a test's.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.lake_compare import assert_lakes_equal
from tests.support import REPO, cli_environment

pytestmark = pytest.mark.slow


def test_a_run_in_europe_paris_builds_the_lake_a_utc_run_builds(spark, reference_lake, tmp_path):
    lake = tmp_path / "lake"
    environ = cli_environment(TZ="Europe/Paris")
    probe = subprocess.run(
        [sys.executable, "-c", "import time; print(time.strftime('%Z'))"],
        env=environ,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() in ("CET", "CEST")  # the subprocess really runs in Paris time
    completed = subprocess.run(
        [sys.executable, "-m", "jobs", "run", "--layer", "all", "--landing", reference_lake.paths.landing,
         "--lake", str(lake)],
        cwd=REPO, env=environ, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    compared = assert_lakes_equal(spark, reference_lake.paths.lake, str(lake))
    assert len(compared) >= 6 + 6 + 8
