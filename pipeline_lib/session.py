"""The one place a SparkSession is built.

Locally (``python -m jobs``, notebooks, tests) the session runs in local mode with the
Delta Lake jars that ``make setup`` cached in the virtualenv, so no start needs the
network; when clicks come from Kafka (``sources.clicks.kind: kafka``), Spark's Kafka
connector that ``make setup`` cached beside them joins ``spark.jars`` too (never Kafka's
broker jars). Under ``spark-submit`` the submitter owns the master and the jars (``--master``,
``--jars`` or ``--packages``): this builder then only adds the Delta extension, the
catalog and the SQL settings from config.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pyspark.sql import SparkSession

from pipeline_lib.config import SparkConfig

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
JARS_DIR_ENV = "ECOM_JARS_DIR"
KAFKA_JARS_DIR_ENV = "ECOM_KAFKA_JARS_DIR"
# Option values of Spark SQL reads whose names match are redacted in plans and logs; Spark's
# default, plus the Kafka source's JAAS configuration (it holds the SASL password).
REDACTION_KEY = "spark.sql.redaction.options.regex"
REDACTION_REGEX = "(?i)secret|password|token|access[.]?key|jaas"
SPARK_LOG_ENV = "ECOM_SPARK_LOG"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
WAREHOUSE_KEY = "spark.sql.warehouse.dir"
# Hadoop's local file system without Hadoop's native library starts a `chmod` process for every
# file it creates and a `readlink` for every Delta commit (~1,800 a pipeline run, ~10 % of its
# time). ``make setup`` compiles a drop-in that does both in the JVM (tools/local_fs/); local
# mode uses it when it is there (see tools/local_fs/README.md).
LOCAL_FS_JAR = "ecom-local-fs.jar"
LOCAL_FS_CONF = {
    "spark.hadoop.fs.file.impl": "ecom.hadoop.NioLocalFileSystem",
    "spark.hadoop.fs.AbstractFileSystem.file.impl": "ecom.hadoop.NioLocalFs",
}
# A driver JVM spends about 6 of a job's first 20 s loading and verifying Spark's and Delta's
# classes. ``make setup`` dumps them into a class data sharing archive (JDK's AppCDS,
# tools/build_class_archive.py); a local-mode driver maps it instead (see docs/engine.md).
CLASS_ARCHIVE = "spark-driver.jsa"
# The JVM options that say a JVM already has its own archive (or is dumping one).
_ARCHIVE_OPTIONS = ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare")
# An archive the JVM cannot use (another JDK, another class path) is skipped; silently.
QUIET_CDS = "-Xlog:cds=off -Xlog:cds+dynamic=off"


class DeltaJarsMissingError(RuntimeError):
    """Delta Lake's jars are not in the local cache; ``make setup`` fetches them."""


class KafkaJarsMissingError(RuntimeError):
    """Spark's Kafka connector is not in the local cache; ``make setup`` fetches it."""


def default_jars_dir() -> Path:
    """Where ``make setup`` puts Delta Lake's jars: ``<venv>/share/ecom-pipeline/jars``."""
    return Path(sys.prefix) / "share" / "ecom-pipeline" / "jars"


def delta_jars(jars_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The cached Delta Lake jars, from ``jars_dir``, ``$ECOM_JARS_DIR`` or the virtualenv.

    Raises:
        DeltaJarsMissingError: No ``delta-spark`` jar is in the folder.
    """
    folder = Path(jars_dir or os.environ.get(JARS_DIR_ENV) or default_jars_dir())
    return _jars_holding(
        folder,
        "delta-spark_",
        DeltaJarsMissingError(
            f"Delta Lake jars not found in {folder}: run `make setup` (it fetches them from Maven Central "
            f"once), or point {JARS_DIR_ENV} at a folder holding them"
        ),
    )


def _jars_holding(folder: Path, prefix: str, missing: Exception) -> list[Path]:
    """The jars of ``folder``, sorted, if one of them is named ``prefix...``; else raise ``missing``."""
    jars = sorted(folder.glob("*.jar"))
    if not any(j.name.startswith(prefix) for j in jars):
        raise missing
    return jars


def default_kafka_jars_dir() -> Path:
    """Where ``make setup`` puts Spark's Kafka connector: ``<venv>/share/ecom-pipeline/spark-kafka``."""
    return Path(sys.prefix) / "share" / "ecom-pipeline" / "spark-kafka"


def kafka_jars(jars_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The cached jars of Spark's Kafka connector (``spark-sql-kafka-0-10`` and its dependencies).

    From ``jars_dir``, ``$ECOM_KAFKA_JARS_DIR`` or the virtualenv. Kafka's broker jars
    (``kafka-broker/``) are a different folder and never join Spark's class path.

    Raises:
        KafkaJarsMissingError: No ``spark-sql-kafka-0-10`` jar is in the folder.
    """
    folder = Path(jars_dir or os.environ.get(KAFKA_JARS_DIR_ENV) or default_kafka_jars_dir())
    return _jars_holding(
        folder,
        "spark-sql-kafka-0-10_",
        KafkaJarsMissingError(
            f"Spark's Kafka connector not found in {folder} (clicks are read from Kafka): run "
            f"`make setup` (it fetches it from Maven Central once), or point {KAFKA_JARS_DIR_ENV} "
            "at a folder holding spark-sql-kafka-0-10 and its dependencies"
        ),
    )


def local_fs_jar() -> Path | None:
    """The jar of the NIO local file system ``make setup`` builds, or None if it is not built."""
    jar = Path(sys.prefix) / "share" / "ecom-pipeline" / "local-fs" / LOCAL_FS_JAR
    return jar if jar.is_file() else None


def running_under_spark_submit() -> bool:
    """True when this Python process was started by ``spark-submit`` (it opens the gateway first)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_spark_session(
    settings: SparkConfig,
    *,
    app_name: str | None = None,
    extra_conf: Mapping[str, str] | None = None,
    kafka: bool = False,
) -> SparkSession:
    """Build (or return the running) Delta-enabled SparkSession.

    Args:
        settings: The ``spark`` section of the config: master, jars folder, log level and
            the Spark settings to apply.
        app_name: Overrides ``settings.app_name``, e.g. to name the job.
        extra_conf: More Spark settings, applied last (tests use it for small partitions).
        kafka: Also put Spark's Kafka connector on ``spark.jars`` (clicks read from Kafka:
            ``config.sources.clicks.kind == "kafka"``); under ``spark-submit`` the submitter
            adds it (``--packages org.apache.spark:spark-sql-kafka-0-10_2.13:<spark version>``).

    Returns:
        The session. A second call in the same process returns the same session.

    Raises:
        DeltaJarsMissingError, KafkaJarsMissingError: A jar folder that ``make setup`` fills is empty.
    """
    builder = SparkSession.builder.appName(app_name or settings.app_name)
    if not running_under_spark_submit():
        jars = [*delta_jars(settings.jars_dir), *(kafka_jars() if kafka else [])]
        builder = builder.master(settings.master).config("spark.jars", ",".join(str(j) for j in jars))
    builder = builder.config("spark.sql.extensions", DELTA_EXTENSION).config(
        "spark.sql.catalog.spark_catalog", DELTA_CATALOG
    )
    conf = {**settings.conf, **(extra_conf or {})}
    if not running_under_spark_submit() and settings.master.startswith("local"):
        conf = with_quiet_logging(with_local_fs(conf))
        if settings.class_archive:
            conf = with_class_archive(conf, class_archive())
        # Spark warns at every start that the host name resolves to a loopback address;
        # a local run needs no other address.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # The lake's tables are registered by path; only empty schema folders land in the
    # warehouse, which must not litter the working directory (Spark's default).
    conf.setdefault(WAREHOUSE_KEY, str(Path(tempfile.gettempdir()) / "ecom-spark-warehouse"))
    if kafka:
        conf.setdefault(REDACTION_KEY, REDACTION_REGEX)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    log.debug("spark session %s on %s", spark.sparkContext.applicationId, spark.sparkContext.master)
    return spark


def with_quiet_logging(conf: dict[str, str]) -> dict[str, str]:
    """Local mode: Spark's and Hadoop's log lines go to a file (``conf/log4j2.properties``).

    Every command then prints its own progress and result lines only. ``ECOM_SPARK_LOG=console``
    keeps Spark's default logging on the terminal; any other value names the log file
    (default ``<tmp>/ecom-pipeline-spark.log``). A ``spark.driver.extraJavaOptions`` already
    naming a log4j configuration is left alone.
    """
    choice = os.environ.get(SPARK_LOG_ENV, "")
    config_file = log4j2_config()
    options = conf.get(DRIVER_JAVA_OPTIONS, "")
    if choice == "console" or config_file is None or "log4j2.configurationFile" in options:
        return conf
    log_file = choice or str(Path(tempfile.gettempdir()) / "ecom-pipeline-spark.log")
    quiet = f"-Dlog4j2.configurationFile={config_file.as_uri()} -Decom.spark.log={log_file}"
    return {**conf, DRIVER_JAVA_OPTIONS: f"{options} {quiet}".strip()}


def log4j2_config() -> Path | None:
    """The project's ``conf/log4j2.properties`` (beside the config files), or None."""
    from pipeline_lib.config import default_conf_dir

    candidate = default_conf_dir() / "log4j2.properties"
    return candidate if candidate.is_file() else None


def class_archive_file() -> Path:
    """Where ``make setup`` dumps the driver's class archive (tools/build_class_archive.py)."""
    return Path(sys.prefix) / "share" / "ecom-pipeline" / "class-archive" / CLASS_ARCHIVE


def class_archive() -> Path | None:
    """The driver's class archive ``make setup`` dumps, or None if it is not there."""
    archive = class_archive_file()
    return archive if archive.is_file() else None


def with_class_archive(conf: dict[str, str], archive: Path | None) -> dict[str, str]:
    """Local mode: the driver JVM maps ``archive``'s classes instead of loading them (pure).

    Left alone when there is no archive, or when ``spark.driver.extraJavaOptions`` already
    chooses one (or dumps one). The JVM checks that the archive matches its own build and
    class path, and starts without it, silently, when it does not.
    """
    options = conf.get(DRIVER_JAVA_OPTIONS, "")
    if archive is None or any(option in options for option in _ARCHIVE_OPTIONS):
        return conf
    sharing = f"-XX:SharedArchiveFile={archive} {QUIET_CDS}"
    return {**conf, DRIVER_JAVA_OPTIONS: f"{options} {sharing}".strip()}


def with_local_fs(conf: dict[str, str]) -> dict[str, str]:
    """Local mode: Hadoop's ``file:`` system without its process starts, unless configured otherwise.

    The jar goes on the driver's class path (the JVM's own, as Hadoop loads file systems
    before Spark adds ``spark.jars``); in local mode the executors live in the driver.
    """
    jar = local_fs_jar()
    if jar is None or any(key in conf for key in LOCAL_FS_CONF):
        return conf
    class_path = [p for p in (conf.get("spark.driver.extraClassPath"), str(jar)) if p]
    return {**LOCAL_FS_CONF, **conf, "spark.driver.extraClassPath": os.pathsep.join(class_path)}
