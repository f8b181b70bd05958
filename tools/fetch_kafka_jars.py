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

import sys
import tempfile
from pathlib import Path

from maven import artifact_of, copy_dependencies, have_maven, install_jars, shipped_with_pyspark

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


def main() -> int:
    import pyspark

    broker_stamp = f".kafka_2.13-{KAFKA_VERSION}"
    spark_stamp = f".spark-sql-kafka-0-10_2.13-{pyspark.__version__}"
    broker_done = (BROKER_DIR / broker_stamp).is_file()
    spark_done = (SPARK_KAFKA_DIR / spark_stamp).is_file()
    if broker_done and spark_done:
        return 0
    if not have_maven("Kafka's jars"):
        return 2
    if not broker_done:
        print(
            f"setup: fetching org.apache.kafka:kafka_2.13:{KAFKA_VERSION} (the test broker) "
            "and dependencies from Maven Central...",
            file=sys.stderr,
        )
        with tempfile.TemporaryDirectory() as staging:
            versions = {"kafka.version": KAFKA_VERSION, "log4j.version": LOG4J_VERSION}
            jars = copy_dependencies(POM, versions, staging, what="Kafka's broker jars", profile="broker")
            if jars is None:
                return 3
            install_jars(jars, BROKER_DIR, broker_stamp)
    if not spark_done:
        print(
            f"setup: fetching org.apache.spark:spark-sql-kafka-0-10_2.13:{pyspark.__version__} "
            "and dependencies from Maven Central...",
            file=sys.stderr,
        )
        shipped = shipped_with_pyspark()
        with tempfile.TemporaryDirectory() as staging:
            versions = {"spark.version": pyspark.__version__}
            jars = copy_dependencies(POM, versions, staging, what="Spark's Kafka connector", profile="spark")
            if jars is None:
                return 3
            own = [jar for jar in jars if artifact_of(jar.name) not in shipped]
            install_jars(own, SPARK_KAFKA_DIR, spark_stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
