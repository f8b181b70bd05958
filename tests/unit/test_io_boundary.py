"""One I/O boundary: only ``pipeline_lib/io`` touches Delta, DataFrame readers and writers, and the JVM.

Jobs (``jobs/``) and the rest of the library reach tables through :mod:`pipeline_lib.io`; a
Delta commit made anywhere else would skip its key checks and the crash-safety tests' crash
points (``tests/faults.py`` wraps the I/O functions). The check reads the source (AST), so it
runs without Spark. Production code holds no crash hook either.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IO_PACKAGE = REPO / "pipeline_lib" / "io"
# DataFrame readers and writers: an attribute of these names whose own attribute is taken
# (``spark.read.format``, ``df.write.mode``); a file stream's ``write(bytes)`` or a count
# named ``read`` is not one.
IO_ATTRIBUTES = {"write", "writeStream", "readStream", "read"}
IO_CALLS = {"saveAsTable", "insertInto", "writeTo", "sql"}
JVM_HANDLES = {"_jvm", "_jsc", "_jsparkSession", "_jdf", "_jconf"}
DELTA_MODULES = ("delta", "delta.tables")
# Modules that may run Spark SQL text: the session builder (configuration only).
SQL_ALLOWED = {REPO / "pipeline_lib" / "session.py"}


def production_modules() -> Iterator[Path]:
    for root in ("jobs", "pipeline_lib"):
        for path in sorted((REPO / root).rglob("*.py")):
            if IO_PACKAGE not in path.parents:
                yield path


def violations(path: Path) -> list[str]:
    """Every place in the module that does I/O outside the I/O package, as ``line: what``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    chained = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in DELTA_MODULES:
            found.append(f"{node.lineno}: imports from {node.module}")
        elif isinstance(node, ast.Import) and any(alias.name in DELTA_MODULES for alias in node.names):
            found.append(f"{node.lineno}: imports delta")
        elif isinstance(node, ast.Name) and node.id == "DeltaTable":
            found.append(f"{node.lineno}: uses DeltaTable")
        elif isinstance(node, ast.Attribute):
            if node.attr in JVM_HANDLES:
                found.append(f"{node.lineno}: uses the JVM handle {node.attr}")
            elif node.attr in IO_ATTRIBUTES and id(node) in chained:
                found.append(f"{node.lineno}: uses a DataFrame reader or writer (.{node.attr})")
            elif node.attr in IO_CALLS and id(node) in called and not _allowed_call(path, node):
                found.append(f"{node.lineno}: calls .{node.attr}()")
        elif isinstance(node, ast.Name) and node.id in ("crash_point", "ECOM_CRASH_AT"):
            found.append(f"{node.lineno}: a crash hook in production code")
    return sorted(found, key=lambda line: int(line.split(":")[0]))


def _allowed_call(path: Path, node: ast.Attribute) -> bool:
    return node.attr == "sql" and path in SQL_ALLOWED


@pytest.mark.parametrize("path", list(production_modules()), ids=lambda p: str(p.relative_to(REPO)))
def test_only_the_io_package_touches_delta_dataframe_io_and_the_jvm(path):
    assert violations(path) == [], f"{path.relative_to(REPO)} does I/O outside pipeline_lib/io"


def test_the_check_finds_what_it_looks_for(tmp_path):
    """The checker itself: a module with each forbidden use is reported line by line."""
    module = tmp_path / "job.py"
    module.write_text(
        "from delta.tables import DeltaTable\n"
        "def job(spark, df, stream):\n"
        "    DeltaTable.forPath(spark, 'x')\n"
        "    df.write.format('delta').save('x')\n"
        "    spark.read.format('delta').load('x')\n"
        "    spark.sparkContext._jvm.java.lang.System\n"
        "    stream.write(b'bytes')\n"  # a file stream: allowed
        "    crash_point('delta.before_commit')\n"
    )
    found = violations(module)
    assert [line.split(":")[0] for line in found] == ["1", "3", "4", "5", "6", "8"], found


def test_each_jvm_handle_in_the_io_package_says_why_the_public_api_does_not_serve():
    """A private JVM handle is used only in pipeline_lib/io, under a comment naming it as such."""
    missing = []
    for path in sorted(IO_PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if any(f".{handle}" in line for handle in JVM_HANDLES) and not line.lstrip().startswith("#"):
                context = "\n".join(lines[max(0, number - 6) : number])
                if "JVM handle" not in context:
                    missing.append(f"{path.relative_to(REPO)}:{number}")
    assert missing == [], f"JVM handles without a comment saying why: {missing}"
