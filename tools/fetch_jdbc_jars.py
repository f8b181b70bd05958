"""Resolve the PostgreSQL JDBC driver from Maven Central into the virtualenv, once.

Run by ``make setup`` after ``tools/fetch_delta_jars.py`` (which empties the folder when it
fetches anew). Maven fetches ``org.postgresql:postgresql:<POSTGRESQL_JDBC_VERSION>`` alone: its
one dependency, checker-qual, holds only compile-time annotations the JVM skips when they are
absent. The jar lands beside Delta Lake's in ``<venv>/share/ecom-pipeline/jars``, where
:func:`pipeline_lib.session.build_spark_session` puts every jar on ``spark.jars``, so Spark's
JDBC source finds the driver (``driver=org.postgresql.Driver``) with no network. Quick and
silent when already done.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from maven import copy_dependencies, have_maven

POM = Path(__file__).with_name("jdbc-jars.pom.xml")
# 42.7.x is the driver line for Java 8+ and PostgreSQL 8.4+; pinned so every machine gets the same jar.
POSTGRESQL_JDBC_VERSION = "42.7.14"
ARTIFACT = "postgresql"


def main() -> int:
    target = Path(sys.prefix) / "share" / "ecom-pipeline" / "jars"
    jar_name = f"{ARTIFACT}-{POSTGRESQL_JDBC_VERSION}.jar"
    stamp = target / f".{ARTIFACT}-{POSTGRESQL_JDBC_VERSION}"
    if stamp.is_file() and (target / jar_name).is_file():
        return 0
    what = "the PostgreSQL JDBC driver"
    if not have_maven(what):
        return 2
    print(
        f"setup: fetching org.postgresql:{ARTIFACT}:{POSTGRESQL_JDBC_VERSION} from Maven Central...",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as staging:
        versions = {"jdbc.version": POSTGRESQL_JDBC_VERSION}
        jars = copy_dependencies(POM, versions, staging, what=what, extra_args=["-DexcludeTransitive=true"])
        fetched = Path(staging) / jar_name
        if jars is None:
            return 3
        if not fetched.is_file():
            print(f"setup: Maven resolved no {jar_name}; check tools/jdbc-jars.pom.xml", file=sys.stderr)
            return 3
        target.mkdir(parents=True, exist_ok=True)
        # Delta Lake's jars share the folder: replace only an older driver and its stamp.
        for old in [*target.glob(f"{ARTIFACT}-*.jar"), *target.glob(f".{ARTIFACT}-*")]:
            old.unlink()
        shutil.copy2(fetched, target / jar_name)
    stamp.write_text(jar_name + "\n")
    print(f"setup: {jar_name} in {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
