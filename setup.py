"""Packaging for the e-commerce lakehouse: ``pipeline_lib``, the ``jobs`` entry points, ``ecom_generator``.

A Spark cluster provides pyspark and delta-spark itself, so they are not runtime
requirements; the ``local`` extra pins a set that works together on a laptop and in CI.
"""

from __future__ import annotations

from setuptools import find_packages, setup

# Versions proven together: delta-spark 4.4.0 is built for Spark 4.2 (its JVM artifact is
# io.delta:delta-spark_4.2_2.13:4.4.0; 4.4.1 has no jar for Spark 4.2 on Maven Central), and
# pyspark 4.2 warns on pandas 3, so pandas stays on 2.x.
PYSPARK_VERSION = "4.2.0"
DELTA_VERSION = "4.4.0"

setup(
    name="ecom-lakehouse",
    version="0.1.0",
    description="E-commerce lakehouse: landing files to bronze, silver and gold Delta tables.",
    python_requires=">=3.11",
    packages=find_packages(include=["pipeline_lib*", "jobs*", "ecom_generator*"]),
    include_package_data=True,
    package_data={"pipeline_lib": ["py.typed"]},
    install_requires=[
        "pyyaml>=6.0,<7",
        # the config's validation (pipeline_lib/config.py) and the retry on Delta conflicts
        "pydantic>=2.7,<3",
        "tenacity>=8.2,<10",
        # the shop's database and the publish target (pipeline_lib/io/postgres.py, docs/postgres.md)
        "psycopg[binary]>=3.2,<4",
        "numpy>=1.26,<3",
        "pandas>=2.2,<3",
        "pyarrow>=15,<23",
    ],
    extras_require={
        "local": [
            f"pyspark=={PYSPARK_VERSION}",
            f"delta-spark=={DELTA_VERSION}",
        ],
        "dev": [
            "pytest>=8,<10",
            "pytest-timeout>=2.3",
            "chispa==0.12.0",
            "hypothesis>=6.100,<7",
            "ruff>=0.6",
            "mypy>=1.11",
            "pre-commit>=3.7",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            "matplotlib>=3.8,<4",
            # the suite checks the benchmark's DuckDB peer (tests/unit/test_bench_peer.py)
            "duckdb==2.0.1",
            "deltalake==1.6.6",
            # two test processes: Spark on tiny data waits on its driver more than on the CPU
            "pytest-xdist>=3.8,<4",  # --no-loadscope-reorder
            # tests that publish click events to Kafka (psycopg is a runtime requirement)
            "confluent-kafka>=2.6,<3",
        ],
        # Publishing to the clicks topic from Python (tools/kafka_broker.py, the generator).
        "kafka": ["confluent-kafka>=2.6,<3"],
        # The benchmark's peer (bench/peer_duckdb.py): DuckDB over silver read with delta-rs.
        # Proven together with pyarrow 22 on Python 3.11.
        "bench": [
            "duckdb==2.0.1",
            "deltalake==1.6.6",
            "matplotlib>=3.8,<4",
        ],
    },
    entry_points={"console_scripts": ["ecom-pipeline=jobs.cli:main"]},
)
