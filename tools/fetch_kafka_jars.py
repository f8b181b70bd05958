"""Resolve Kafka's jars from Maven Central into the virtualenv, once: the broker, and Spark's connector.

Run by ``make setup``. Two class paths, kept apart because they must never meet:

- ``<venv>/share/ecom-pipeline/kafka-broker``: ``org.apache.kafka:kafka_2.13`` (a KRaft broker)
  with all its runtime dependencies, used only to start the broker JVM that
  ``tools/kafka_broker.py`` runs for development and tests. It brings its own Scala, Jackson and
  kafka-clients, whose versions differ from Spark's.
- ``<venv>/share/ecom-pipeline/spark-kafka``: ``org.apache.spark:spark-sql-kafka-0-10_2.13`` for
  the installed pyspark, with its dependencies (kafka-clients, spark-token-provider-kafka-0-10,
  commons-pool2); jars whose artifact pyspark already ships (Scala, Hadoop, lz4, snappy, slf4j...)
  are dropped so Spark's own versions win, as for Delta's jars.

Later broker and Spark starts then need no network. Quick and silent when already done.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fetch_delta_jars import artifact_of

POM = Path(__file__).with_name("kafka-jars.pom.xml")
SHARE = Path(sys.prefix) / "share" / "ecom-pipeline"
BROKER_DIR = SHARE / "kafka-broker"
SPARK_KAFKA_DIR = SHARE / "spark-kafka"
# The broker; any 4.x runs KRaft only. Spark's connector brings its own kafka-clients (3.9.2 for
# Spark 4.2), which speaks to this broker.
KAFKA_VERSION = "4.4.0"
# The SLF4J-to-log4j bridge the broker lacks (see kafka-jars.pom.xml): the log4j that
# kafka-server 4.4.0 depends on.
LOG4J_VERSION = "2.25.5"


def resolve(profile: str, properties: dict[str, str], staging: str) -> list[Path] | None:
    """Copy the profile's runtime jars into ``staging``; None (after saying why) when Maven fails."""
    result = subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(POM),
            "-P",
            profile,
            "dependency:copy-dependencies",
            *(f"-D{key}={value}" for key, value in properties.items()),
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        print(
            f"setup: could not fetch Kafka's jars ({profile}) from Maven Central "
            f"(https://repo.maven.apache.org). Check the network or a Maven mirror in "
            f"~/.m2/settings.xml, then run `make setup` again.\n{tail}",
            file=sys.stderr,
        )
        return None
    return sorted(Path(staging).glob("*.jar"))


def install(jars: list[Path], target: Path, stamp_name: str) -> None:
    """Replace ``target`` with ``jars`` and write the stamp that lists them."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for jar in jars:
        shutil.copy2(jar, target / jar.name)
    (target / stamp_name).write_text("\n".join(jar.name for jar in jars) + "\n")
    print(f"setup: {len(jars)} jars in {target}", file=sys.stderr)


def main() -> int:
    import pyspark

    broker_stamp = f".kafka_2.13-{KAFKA_VERSION}"
    spark_stamp = f".spark-sql-kafka-0-10_2.13-{pyspark.__version__}"
    broker_done = (BROKER_DIR / broker_stamp).is_file()
    spark_done = (SPARK_KAFKA_DIR / spark_stamp).is_file()
    if broker_done and spark_done:
        return 0
    if shutil.which("mvn") is None:
        print(
            "setup: Maven (mvn) is needed once to fetch Kafka's jars; install it (apt-get install maven).",
            file=sys.stderr,
        )
        return 2
    if not broker_done:
        print(
            f"setup: fetching org.apache.kafka:kafka_2.13:{KAFKA_VERSION} (the test broker) "
            "and dependencies from Maven Central...",
            file=sys.stderr,
        )
        with tempfile.TemporaryDirectory() as staging:
            versions = {"kafka.version": KAFKA_VERSION, "log4j.version": LOG4J_VERSION}
            jars = resolve("broker", versions, staging)
            if jars is None:
                return 3
            install(jars, BROKER_DIR, broker_stamp)
    if not spark_done:
        print(
            f"setup: fetching org.apache.spark:spark-sql-kafka-0-10_2.13:{pyspark.__version__} "
            "and dependencies from Maven Central...",
            file=sys.stderr,
        )
        shipped = {artifact_of(j.name) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
        with tempfile.TemporaryDirectory() as staging:
            jars = resolve("spark", {"spark.version": pyspark.__version__}, staging)
            if jars is None:
                return 3
            install([j for j in jars if artifact_of(j.name) not in shipped], SPARK_KAFKA_DIR, spark_stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
