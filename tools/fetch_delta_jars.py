"""Resolve Delta Lake's jars from Maven Central into the virtualenv, once.

Run by ``make setup``. Maven fetches ``io.delta:delta-spark_<spark>_2.13:<delta>`` and its
runtime dependencies; jars whose artifact pyspark already ships (Scala, Hadoop, Parquet,
Jackson, log4j...) are dropped so Spark's own versions win. The result lands in
``<venv>/share/ecom-pipeline/jars``, where :func:`pipeline_lib.session.build_spark_session`
finds it, so later Spark starts need no network. Quick and silent when already done.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

POM = Path(__file__).with_name("delta-jars.pom.xml")
_VERSIONED_JAR = re.compile(r"^(?P<artifact>.+?)-\d[^-]*(?:-\d+)?\.jar$")


def artifact_of(jar_name: str) -> str:
    """``delta-storage-4.4.0.jar`` -> ``delta-storage``."""
    match = _VERSIONED_JAR.match(jar_name)
    return match.group("artifact") if match else jar_name.removesuffix(".jar")


def main() -> int:
    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    delta_version = version("delta-spark")
    artifact = f"delta-spark_{spark_minor}_2.13"
    target = Path(sys.prefix) / "share" / "ecom-pipeline" / "jars"
    stamp = target / f".{artifact}-{delta_version}"
    if stamp.is_file():
        return 0
    if shutil.which("mvn") is None:
        print(
            "setup: Maven (mvn) is needed once to fetch Delta Lake's jars; "
            "install it (apt-get install maven).",
            file=sys.stderr,
        )
        return 2
    print(
        f"setup: fetching io.delta:{artifact}:{delta_version} and dependencies from Maven Central...",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as staging:
        result = subprocess.run(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-Ddelta.artifact={artifact}",
                f"-Ddelta.version={delta_version}",
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
                f"setup: could not fetch Delta Lake's jars from Maven Central "
                f"(https://repo.maven.apache.org). Check the network or a Maven mirror in "
                f"~/.m2/settings.xml, then run `make setup` again.\n{tail}",
                file=sys.stderr,
            )
            return 3
        shipped = {artifact_of(j.name) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        kept = []
        for jar in sorted(Path(staging).glob("*.jar")):
            if artifact_of(jar.name) not in shipped:
                shutil.copy2(jar, target / jar.name)
                kept.append(jar.name)
    stamp.write_text("\n".join(kept) + "\n")
    print(f"setup: {len(kept)} jars in {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
