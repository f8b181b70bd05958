"""Resolve Delta Lake's jars from Maven Central into the virtualenv, once.

Run by ``make setup``. Maven fetches ``io.delta:delta-spark_<spark>_2.13:<delta>`` and its
runtime dependencies; jars whose artifact pyspark already ships (Scala, Hadoop, Parquet,
Jackson, log4j...) are dropped so Spark's own versions win. The result lands in
``<venv>/share/ecom-pipeline/jars``, where :func:`pipeline_lib.session.build_spark_session`
finds it, so later Spark starts need no network. Quick and silent when already done.
"""

from __future__ import annotations

import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from maven import artifact_of, copy_dependencies, have_maven, install_jars, shipped_with_pyspark

POM = Path(__file__).with_name("delta-jars.pom.xml")


def main() -> int:
    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    delta_version = version("delta-spark")
    artifact = f"delta-spark_{spark_minor}_2.13"
    target = Path(sys.prefix) / "share" / "ecom-pipeline" / "jars"
    stamp = f".{artifact}-{delta_version}"
    if (target / stamp).is_file():
        return 0
    what = "Delta Lake's jars"
    if not have_maven(what):
        return 2
    print(
        f"setup: fetching io.delta:{artifact}:{delta_version} and dependencies from Maven Central...",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as staging:
        versions = {"delta.artifact": artifact, "delta.version": delta_version}
        jars = copy_dependencies(POM, versions, staging, what=what)
        if jars is None:
            return 3
        shipped = shipped_with_pyspark()
        install_jars([jar for jar in jars if artifact_of(jar.name) not in shipped], target, stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
