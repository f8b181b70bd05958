"""The benchmark of the lakehouse pipeline: ``python -m bench.run --scale S`` (see ``bench/README.md``).

Modules: :mod:`bench.run` (the driver), :mod:`bench.floor` (read once, write Parquet),
:mod:`bench.peer_duckdb` (the two gold aggregates in DuckDB, and the equality check),
:mod:`bench.measure` (subprocess wall time, CPU and peak memory from ``/proc``),
:mod:`bench.lakestats` (Delta commits with their times and files, run records, without Spark),
:mod:`bench.runlog` (the runner's progress lines: jobs ran, skipped, failed),
:mod:`bench.backfill` (the same deliveries regrouped into fewer folders),
:mod:`bench.eventlog` (Spark event log summaries) and :mod:`bench.report` (JSON, Markdown, PNG).
"""
