"""The NIO local file system (tools/local_fs/) in local mode: Hadoop's behaviour, without processes.

``make setup`` builds it; local mode puts it on the driver's class path. These tests drive it
through Hadoop's own interfaces, as Spark and Delta Lake do: ``FileSystem`` for data files and
``FileContext`` for Delta's commits.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from pipeline_lib.session import LOCAL_FS_CONF, local_fs_jar, with_local_fs


def hadoop_path(spark: SparkSession, path: Path) -> Any:
    return spark.sparkContext._jvm.org.apache.hadoop.fs.Path(f"file://{path}")


def file_system(spark: SparkSession, path: Path) -> Any:
    return hadoop_path(spark, path).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def file_context(spark: SparkSession, implementation: str | None = None) -> Any:
    """The local ``FileContext``; ``implementation`` names another ``AbstractFileSystem`` for ``file:``."""
    jvm = spark.sparkContext._jvm
    conf = jvm.org.apache.hadoop.conf.Configuration(spark.sparkContext._jsc.hadoopConfiguration())
    if implementation is not None:
        conf.set("fs.AbstractFileSystem.file.impl", implementation)
    return jvm.org.apache.hadoop.fs.FileContext.getLocalFSFileContext(conf)


def test_local_mode_uses_the_nio_file_systems_that_setup_built(spark: SparkSession, tmp_path: Path) -> None:
    assert local_fs_jar() is not None, "make setup builds the jar (tools/build_local_fs.py)"
    fs = file_system(spark, tmp_path)
    assert fs.getClass().getName() == "ecom.hadoop.NioLocalFileSystem"
    assert fs.getRawFileSystem().getClass().getName() == "ecom.hadoop.NioRawLocalFileSystem"
    assert file_context(spark).getDefaultFileSystem().getClass().getName() == "ecom.hadoop.NioLocalFs"


def test_permissions_are_set_as_asked(spark: SparkSession, tmp_path: Path) -> None:
    permission = spark.sparkContext._jvm.org.apache.hadoop.fs.permission.FsPermission
    fs = file_system(spark, tmp_path)
    folder, target = tmp_path / "as_of_date=2026-03-07", tmp_path / "part-0.parquet"
    assert fs.mkdirs(hadoop_path(spark, folder), permission(0o750))
    stream = fs.create(hadoop_path(spark, target))  # Hadoop sets the permission of each file it creates
    stream.write(bytearray(b"PAR1"))
    stream.close()
    fs.setPermission(hadoop_path(spark, target), permission(0o604))

    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert stat.S_IMODE(target.stat().st_mode) == 0o604
    assert (tmp_path / ".part-0.parquet.crc").is_file()  # still the checksummed file system


def test_link_status_is_hadoops_for_files_links_and_missing_paths(
    spark: SparkSession, tmp_path: Path
) -> None:
    regular = tmp_path / "00000000000000000000.json"
    regular.write_text("{}\n")
    (tmp_path / "link.json").symlink_to(regular)
    nio, hadoops = file_context(spark), file_context(spark, "org.apache.hadoop.fs.local.LocalFs")
    assert hadoops.getDefaultFileSystem().getClass().getName() == "org.apache.hadoop.fs.local.LocalFs"

    def status(context: Any, name: str) -> tuple[Any, ...]:
        found = context.getFileLinkStatus(hadoop_path(spark, tmp_path / name))
        return (
            found.isSymlink(),
            found.isFile(),
            found.getLen(),
            found.getModificationTime(),
            found.getPath().toString(),
        )

    for name in ("00000000000000000000.json", "link.json"):
        assert status(nio, name) == status(hadoops, name)
    assert status(nio, "00000000000000000000.json")[:3] == (False, True, 3)
    for context in (nio, hadoops):
        with pytest.raises(Py4JJavaError, match="FileNotFoundException"):
            context.getFileLinkStatus(hadoop_path(spark, tmp_path / "missing.json"))


def test_a_commit_rename_never_overwrites(spark: SparkSession, tmp_path: Path) -> None:
    jvm = spark.sparkContext._jvm
    source, committed = tmp_path / ".00001.json.tmp", tmp_path / "00000000000000000001.json"
    source.write_text("mine\n")
    committed.write_text("theirs\n")
    none = jvm.org.apache.hadoop.fs.Options.Rename.valueOf("NONE")
    rename_options = spark.sparkContext._gateway.new_array(jvm.org.apache.hadoop.fs.Options.Rename, 1)
    rename_options[0] = none

    with pytest.raises(Py4JJavaError, match="FileAlreadyExistsException"):
        file_context(spark).rename(hadoop_path(spark, source), hadoop_path(spark, committed), rename_options)
    assert committed.read_text() == "theirs\n"
    committed.unlink()
    file_context(spark).rename(hadoop_path(spark, source), hadoop_path(spark, committed), rename_options)
    assert committed.read_text() == "mine\n" and not source.exists()


def test_the_session_adds_the_jar_only_when_nothing_else_is_configured(tmp_path: Path) -> None:
    jar = local_fs_jar()
    assert jar is not None
    added = with_local_fs({"spark.driver.extraClassPath": "/opt/mine.jar"})
    assert added["spark.driver.extraClassPath"] == os.pathsep.join(["/opt/mine.jar", str(jar)])
    assert all(added[key] == value for key, value in LOCAL_FS_CONF.items())
    own = {"spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.LocalFileSystem"}
    assert with_local_fs(own) == own
