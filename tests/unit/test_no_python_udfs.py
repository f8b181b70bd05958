"""No Python UDFs on the hot path: a static scan of ``pipeline_lib`` and ``jobs``.

A Python UDF (or any API that ships rows to Python workers: ``mapInPandas``,
``applyInPandas``, ``rdd.map``, ``foreach``...) serializes every row between the JVM and
Python and hides the logic from the optimizer; the project uses Spark built-ins only.
The scan parses every module (no import, no Spark) and reports each forbidden construct
with its file and line. The self-tests prove that the scanner finds each construct, so
the main test can fail.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED_PACKAGES = ("pipeline_lib", "jobs")

# Names that create Python UDFs or UDTFs, as a bare name (from-import, decorator) or attribute (F.udf).
UDF_FACTORIES = frozenset({"udf", "pandas_udf", "udtf", "UserDefinedFunction", "PandasUDFType"})
# DataFrame / GroupedData methods that run Python code on the rows.
PYTHON_ROW_METHODS = frozenset(
    {
        "mapInPandas",
        "mapInArrow",
        "applyInPandas",
        "applyInPandasWithState",
        "applyInArrow",
        "mapPartitions",
        "mapPartitionsWithIndex",
        "foreach",
        "foreachPartition",
    }
)
# RDD methods that take a Python function: forbidden on ``<anything>.rdd``.
RDD_PYTHON_METHODS = frozenset(
    {
        "map",
        "flatMap",
        "filter",
        "reduce",
        "fold",
        "aggregate",
        "treeReduce",
        "treeAggregate",
        "mapValues",
        "flatMapValues",
        "reduceByKey",
        "groupByKey",
        "combineByKey",
        "aggregateByKey",
        "foldByKey",
        "keyBy",
        "sortBy",
        "groupBy",
    }
)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    construct: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.construct}"


def scan_source(source: str, path: str = "<string>") -> list[Finding]:
    """Every forbidden construct in one module's source."""
    findings: list[Finding] = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyspark"):
            for alias in node.names:
                if alias.name in UDF_FACTORIES:
                    findings.append(Finding(path, node.lineno, f"import of {alias.name} from {node.module}"))
        elif isinstance(node, ast.Name) and node.id in UDF_FACTORIES:
            findings.append(Finding(path, node.lineno, f"use of {node.id}"))
        elif isinstance(node, ast.Attribute):
            if node.attr in UDF_FACTORIES:
                findings.append(Finding(path, node.lineno, f"use of .{node.attr}"))
            elif node.attr in PYTHON_ROW_METHODS:
                findings.append(Finding(path, node.lineno, f"call of .{node.attr} (rows run in Python)"))
            elif (
                node.attr in RDD_PYTHON_METHODS
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "rdd"
            ):
                findings.append(Finding(path, node.lineno, f"call of .rdd.{node.attr} (rows run in Python)"))
    return findings


def scan_packages(root: Path, packages: tuple[str, ...] = SCANNED_PACKAGES) -> tuple[list[Finding], int]:
    """Findings in every ``.py`` file of the packages, and the number of files scanned."""
    findings: list[Finding] = []
    files = sorted(path for package in packages for path in (root / package).rglob("*.py"))
    for path in files:
        relative = path.relative_to(root).as_posix()
        findings += scan_source(path.read_text(encoding="utf-8"), relative)
    return findings, len(files)


def test_pipeline_lib_and_jobs_define_and_use_no_python_udf() -> None:
    findings, scanned = scan_packages(REPO)

    assert scanned >= 20, f"scanned only {scanned} files: is the repository layout the expected one?"
    assert findings == [], "Python UDFs or row-wise Python code on the hot path:\n" + "\n".join(
        str(f) for f in findings
    )


SAMPLES_WITH_PYTHON_ROWS = {
    "udf import": "from pyspark.sql.functions import udf\n",
    "pandas_udf import": "from pyspark.sql.functions import pandas_udf as pu\n",
    "udf decorator": "@udf('string')\ndef shout(s):\n    return s.upper()\n",
    "F.udf call": "from pyspark.sql import functions as F\nshout = F.udf(lambda s: s.upper())\n",
    "F.pandas_udf decorator": "@F.pandas_udf('long')\ndef plus_one(s):\n    return s + 1\n",
    "udf registration": "spark.udf.register('shout', lambda s: s.upper())\n",
    "udtf": "from pyspark.sql.functions import udtf\n",
    "mapInPandas": "df.mapInPandas(fn, schema)\n",
    "applyInPandas": "df.groupBy('k').applyInPandas(fn, schema)\n",
    "mapInArrow": "df.mapInArrow(fn, schema)\n",
    "mapPartitions": "df.rdd.mapPartitions(fn)\n",
    "rdd.map": "df.rdd.map(lambda row: row[0]).collect()\n",
    "rdd.flatMap": "orders.rdd.flatMap(lambda row: row)\n",
    "foreach": "df.foreach(print)\n",
    "foreachPartition": "df.foreachPartition(write_rows)\n",
}


@pytest.mark.parametrize("source", SAMPLES_WITH_PYTHON_ROWS.values(), ids=SAMPLES_WITH_PYTHON_ROWS.keys())
def test_scanner_finds_each_python_row_construct(source: str) -> None:
    findings = scan_source(source, "sample.py")

    assert findings, f"the scanner missed:\n{source}"
    assert all(f.path == "sample.py" and f.line >= 1 for f in findings)


def test_scanner_reports_file_and_line_of_a_udf_in_a_package(tmp_path: Path) -> None:
    package = tmp_path / "pipeline_lib"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "clean.py").write_text(
        textwrap.dedent(
            """\
            from pyspark.sql import functions as F


            def shout(df):
                upper = F.udf(lambda s: s.upper(), "string")
                return df.withColumn("loud", upper("name"))
            """
        ),
        encoding="utf-8",
    )

    findings, scanned = scan_packages(tmp_path, ("pipeline_lib",))

    assert scanned == 2
    assert [str(f) for f in findings] == ["pipeline_lib/clean.py:5: use of .udf"]


def test_scanner_accepts_built_ins_and_higher_order_functions() -> None:
    source = textwrap.dedent(
        """\
        from pyspark.sql import functions as F

        def tidy(df):
            partitions = df.rdd.getNumPartitions()
            doubled = F.transform("values", lambda x: x * 2)  # a Column lambda, run in the JVM
            query = df.writeStream.foreachBatch(lambda batch, epoch: None)  # driver-side
            return df.select(F.upper("name"), F.expr("filter(xs, x -> x > 0)"), doubled), partitions, query
        """
    )

    assert scan_source(source) == []
