"""Compile the NIO local file system (tools/local_fs/) into the virtualenv, once.

Run by ``make setup``. Without Hadoop's native library, Hadoop's local file system starts a
``chmod`` process for every file it creates and a ``readlink`` for every Delta commit; the
classes in ``tools/local_fs/src`` do both in the JVM. They are compiled with ``javac``
against the Hadoop jar pyspark ships and packed into
``<venv>/share/ecom-pipeline/local-fs/ecom-local-fs.jar``, which
:func:`pipeline_lib.session.build_spark_session` puts on the class path in local mode.

Optional: without a JDK (``javac``, ``jar``) this prints why and exits 0, and Spark uses
Hadoop's own local file system, only slower. Quick and silent when the jar is up to date.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES = Path(__file__).with_name("local_fs") / "src"
JAR_NAME = "ecom-local-fs.jar"


def main() -> int:
    import pyspark

    target = Path(sys.prefix) / "share" / "ecom-pipeline" / "local-fs"
    sources = sorted(SOURCES.rglob("*.java"))
    hadoop = sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    digest = hashlib.sha1()
    for path in [*sources, *hadoop]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.suffix == ".java" else b"")
    stamp = target / f".{digest.hexdigest()[:12]}"
    if stamp.is_file() and (target / JAR_NAME).is_file():
        return 0
    missing = [tool for tool in ("javac", "jar") if shutil.which(tool) is None]
    if missing or not hadoop:
        why = (
            f"{' and '.join(missing)} not found (a JDK 17 has them)"
            if missing
            else "pyspark ships no Hadoop jar"
        )
        print(f"setup: NIO local file system not built: {why}; Spark uses Hadoop's, slower.", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as classes:
        javac = ["javac", "--release", "17", "-nowarn", "-cp", str(hadoop[-1]), "-d", classes]
        compiled = subprocess.run(
            [*javac, *map(str, sources)],
            capture_output=True,
            text=True,
            check=False,
        )
        if compiled.returncode != 0:
            print(f"setup: could not compile {SOURCES}:\n{compiled.stderr.strip()}", file=sys.stderr)
            return 3
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        subprocess.run(["jar", "cf", str(target / JAR_NAME), "-C", classes, "."], check=True)
    stamp.touch()
    print(f"setup: NIO local file system in {target / JAR_NAME}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
