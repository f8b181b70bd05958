"""Resolve jars from Maven Central at set-up time: the one Maven call the ``fetch_*_jars`` scripts share.

Each script (Delta Lake, the PostgreSQL driver, Kafka) names a small POM beside it and the
properties that pick the versions; this module runs ``mvn dependency:copy-dependencies`` into a
staging folder, says clearly what to do when Maven is missing or Maven Central is out of reach,
and tells the jars pyspark already ships apart from the others (Spark's own versions win).
Maven itself stays the resolver: it knows the dependency graph, mirrors (``~/.m2/settings.xml``)
and its local cache, which a hand-written downloader would not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

_VERSIONED_JAR = re.compile(r"^(?P<artifact>.+?)-\d[^-]*(?:-\d+)?\.jar$")


def artifact_of(jar_name: str) -> str:
    """``delta-storage-4.4.0.jar`` -> ``delta-storage``."""
    match = _VERSIONED_JAR.match(jar_name)
    return match.group("artifact") if match else jar_name.removesuffix(".jar")


def shipped_with_pyspark() -> set[str]:
    """The artifacts whose jars pyspark already has (Scala, Hadoop, Parquet, Jackson, log4j...)."""
    import pyspark

    return {artifact_of(jar.name) for jar in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}


def have_maven(what: str) -> bool:
    """True when ``mvn`` is on the PATH; otherwise say how to get it (``what``: the jars needed)."""
    if shutil.which("mvn") is not None:
        return True
    print(
        f"setup: Maven (mvn) is needed once to fetch {what}; install it (apt-get install maven).",
        file=sys.stderr,
    )
    return False


def copy_dependencies(
    pom: Path,
    properties: Mapping[str, str],
    staging: str | Path,
    *,
    what: str,
    profile: str | None = None,
    extra_args: Iterable[str] = (),
) -> list[Path] | None:
    """Copy the POM's runtime dependencies into ``staging``.

    Args:
        pom: The POM naming the artifacts (versions as ``${properties}``).
        properties: ``-D`` values, e.g. the versions.
        staging: An empty folder for the jars.
        what: The jars in words, for the error message.
        profile: A Maven profile of the POM to activate.
        extra_args: More ``mvn`` arguments, e.g. ``-DexcludeTransitive=true``.

    Returns:
        The jars, sorted by name; None (after saying why on stderr) when Maven failed.
    """
    command = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(pom),
        *(["-P", profile] if profile else []),
        "dependency:copy-dependencies",
        *(f"-D{key}={value}" for key, value in properties.items()),
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
        *extra_args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        print(
            f"setup: could not fetch {what} from Maven Central (https://repo.maven.apache.org). "
            f"Check the network or a Maven mirror in ~/.m2/settings.xml, then run `make setup` "
            f"again.\n{tail}",
            file=sys.stderr,
        )
        return None
    return sorted(Path(staging).glob("*.jar"))


def install_jars(jars: Iterable[Path], target: Path, stamp_name: str) -> None:
    """Replace the folder ``target`` with ``jars`` and write the stamp that lists them."""
    jars = list(jars)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for jar in jars:
        shutil.copy2(jar, target / jar.name)
    (target / stamp_name).write_text("\n".join(jar.name for jar in jars) + "\n")
    print(f"setup: {len(jars)} jars in {target}", file=sys.stderr)
