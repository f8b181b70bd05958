"""The driver's class archive (tools/build_class_archive.py): dumped by ``make setup``, mapped
by every local-mode session the builder starts, ignored when a JVM cannot use it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from pipeline_lib.io.delta import jvm
from pipeline_lib.session import DRIVER_JAVA_OPTIONS, QUIET_CDS, class_archive, with_class_archive
from tests.support import REPO, cli_environment

ARCHIVE = Path("/venv/share/ecom-pipeline/class-archive/spark-driver.jsa")
FROM_ARCHIVE = "source: shared objects file (top)"


def test_the_archive_is_added_to_the_drivers_options_unless_one_is_chosen():
    sharing = f"-XX:SharedArchiveFile={ARCHIVE} {QUIET_CDS}"
    assert with_class_archive({}, ARCHIVE) == {DRIVER_JAVA_OPTIONS: sharing}
    mine = {DRIVER_JAVA_OPTIONS: "-Xmx2g", "spark.sql.shuffle.partitions": "2"}
    assert with_class_archive(mine, ARCHIVE) == {
        DRIVER_JAVA_OPTIONS: f"-Xmx2g {sharing}",
        "spark.sql.shuffle.partitions": "2",
    }
    assert with_class_archive(mine, None) == mine
    for chosen in ("-XX:SharedArchiveFile=/x.jsa", "-XX:ArchiveClassesAtExit=/x.jsa", "-Xshare:off"):
        conf = {DRIVER_JAVA_OPTIONS: f"-Xmx2g {chosen}"}
        assert with_class_archive(conf, ARCHIVE) == conf


def test_the_tests_session_was_started_with_the_archive_setup_dumped(spark):
    archive = class_archive()
    assert archive is not None, "make setup dumps it (tools/build_class_archive.py)"
    java = jvm(spark)
    management = java.java.lang.management.ManagementFactory
    hotspot = java.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    diagnostics = management.getPlatformMXBean(hotspot)
    assert diagnostics.getVMOption("SharedArchiveFile").getValue() == str(archive)


def _classes_loaded(tmp_path: Path, *, class_archive_setting: str) -> list[str]:
    """The class-load log of a fresh local session built as every command builds it."""
    log = tmp_path / "classes.txt"
    script = textwrap.dedent(
        f"""
        import dataclasses
        from pipeline_lib.config import load_config
        from pipeline_lib.session import build_spark_session
        settings = load_config().spark
        conf = {{**settings.conf, "spark.driver.extraJavaOptions": "-Xlog:class+load=info:file={log}"}}
        spark = build_spark_session(
            dataclasses.replace(settings, master="local[1]", conf=conf, class_archive={class_archive_setting})
        )
        assert spark.range(3).count() == 3
        """
    )
    command = [sys.executable, "-c", script]
    subprocess.run(command, cwd=REPO, env=cli_environment(), check=True, capture_output=True, timeout=300)
    return log.read_text().splitlines()


def test_a_local_session_maps_spark_and_scala_from_the_archive(tmp_path):
    lines = _classes_loaded(tmp_path, class_archive_setting="True")
    shared = [line for line in lines if FROM_ARCHIVE in line]
    assert any(" org.apache.spark.SparkContext " in line for line in shared)
    assert any(" scala.collection.immutable.List " in line for line in shared)
    assert len(shared) > 5000, f"only {len(shared)} of {len(lines)} classes came from the archive"


def test_with_the_setting_off_no_class_comes_from_the_archive(tmp_path):
    lines = _classes_loaded(tmp_path, class_archive_setting="False")
    assert lines and not any(FROM_ARCHIVE in line for line in lines)
