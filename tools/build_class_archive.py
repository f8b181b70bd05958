"""Dump the classes a local-mode driver loads into a class data sharing archive, once.

Run by ``make setup``, after the jars and ``tools/build_local_fs.py``. A driver JVM spends
about 6 s of a one-job ``ecom-pipeline run`` loading, parsing and verifying Spark's, Delta
Lake's and Scala's classes; the JDK's AppCDS maps them from an archive instead (measured on
2 cores: a forced one-job run 18.6-22.8 s without it, 13.1-15.4 s with it). Every local-mode
start pays that cost: each ``ecom-pipeline`` command, each Airflow task (one per job), each
test subprocess.

How: a child process builds the session exactly as every command does
(:func:`pipeline_lib.session.build_spark_session`, so the class path is the one the archive
will be used with), runs a small Delta workload (write, read, MERGE, aggregates, a join, a
window, ALS) and stops; its JVM dumps what it loaded at exit
(``-XX:ArchiveClassesAtExit``). The archive is written under a temporary name, checked by a
JVM that maps it, and only then renamed into place: a truncated archive would crash every
JVM that maps it. It lands in ``<venv>/share/ecom-pipeline/class-archive/spark-driver.jsa``,
where the session builder finds it.

Optional: without it the driver loads its classes as before. The JVM refuses an archive of
another JDK build or class path and starts without it (silently); this script dumps a new
one whenever pyspark, the jars, the NIO local file system or the JDK change. Quick and
silent when up to date.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline_lib.session import (  # noqa: E402 (the checkout's package, before it is installed)
    CLASS_ARCHIVE,
    QUIET_CDS,
    class_archive_file,
    default_jars_dir,
    local_fs_jar,
)

TARGET = class_archive_file().parent
DUMP_TIMEOUT_S = 600

# The child's workload: the kinds of work every job does, so their classes are in the archive.
WORKLOAD = """
import dataclasses, sys, tempfile
from pyspark.ml.recommendation import ALS
from pyspark.sql import Window, functions as F
from delta.tables import DeltaTable
from pipeline_lib.config import load_config
from pipeline_lib.session import build_spark_session

settings = load_config().spark
conf = {**settings.conf, "spark.driver.extraJavaOptions": sys.argv[1], "spark.ui.enabled": "false"}
spark = build_spark_session(dataclasses.replace(settings, master="local[2]", conf=conf, class_archive=False))
with tempfile.TemporaryDirectory() as folder:
    schema = "id long, customer string, item int, amount double"
    rows = spark.createDataFrame(
        [(i, f"c{i % 7}", i % 5, float(i)) for i in range(200)], schema
    ).withColumn("day", F.date_add(F.lit("2026-03-01").cast("date"), F.col("item")))
    rows.write.format("delta").partitionBy("day").mode("overwrite").save(folder + "/t")
    table = DeltaTable.forPath(spark, folder + "/t")
    merge = table.alias("t").merge(rows.alias("s"), "t.id = s.id")
    merge.whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
    table.history().collect()
    read = spark.read.format("delta").load(folder + "/t")
    latest = Window.partitionBy("customer").orderBy(F.col("amount").desc())
    read.withColumn("rank", F.row_number().over(latest)).join(
        read.groupBy("customer").agg(F.sum("amount").alias("total")), "customer"
    ).where("rank = 1").collect()
    rows.select(F.to_json(F.struct("*")).alias("j")).write.mode("overwrite").text(folder + "/j")
    spark.read.json(folder + "/j").count()
    ratings = rows.select(F.col("item").alias("user"), (F.col("id") % 11).cast("int").alias("item"), "amount")
    als = ALS(implicitPrefs=True, rank=2, maxIter=1, userCol="user", itemCol="item", ratingCol="amount")
    model = als.fit(ratings)
    model.recommendForAllUsers(2).collect()
spark.stop()
"""


def java() -> str:
    """The ``java`` Spark's launcher starts: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else (shutil.which("java") or "java")


def fingerprint() -> str:
    """What the archive depends on: the JDK build, pyspark, the jars and this workload."""
    import pyspark

    version = subprocess.run([java(), "-version"], capture_output=True, text=True, check=True).stderr
    digest = hashlib.sha1()
    local_fs = local_fs_jar()
    jars = [*sorted(default_jars_dir().glob("*.jar")), *([local_fs] if local_fs else [])]
    for part in [version, pyspark.__version__, WORKLOAD, *(f"{p.name}:{p.stat().st_size}" for p in jars)]:
        digest.update(part.encode())
    return digest.hexdigest()[:12]


def main() -> int:
    if shutil.which(java()) is None and not Path(java()).is_file():
        print("setup: class archive not dumped: no java found; Spark starts without it", file=sys.stderr)
        return 0
    stamp = TARGET / f".{fingerprint()}"
    if stamp.is_file() and (TARGET / CLASS_ARCHIVE).is_file():
        return 0
    TARGET.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TARGET) as scratch:
        dumped = Path(scratch) / CLASS_ARCHIVE
        options = f"-XX:ArchiveClassesAtExit={dumped} {QUIET_CDS}"
        child = subprocess.run(
            [sys.executable, "-c", WORKLOAD, options],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=DUMP_TIMEOUT_S,
            check=False,
        )
        if child.returncode != 0 or not dumped.is_file():
            tail = "\n".join(child.stderr.strip().splitlines()[-5:])
            print(f"setup: class archive not dumped (Spark starts without it):\n{tail}", file=sys.stderr)
            return 0
        check = subprocess.run(
            [java(), f"-XX:SharedArchiveFile={dumped}", "-Xshare:auto", *QUIET_CDS.split(), "-version"],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            why = check.stderr[-500:]
            print(f"setup: the dumped class archive does not load; not used:\n{why}", file=sys.stderr)
            return 0
        for old in TARGET.glob(".*"):
            if old.is_file():
                old.unlink()
        os.replace(dumped, TARGET / CLASS_ARCHIVE)
    stamp.touch()
    size_mb = (TARGET / CLASS_ARCHIVE).stat().st_size / 1e6
    print(f"setup: driver class archive in {TARGET / CLASS_ARCHIVE} ({size_mb:.0f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
