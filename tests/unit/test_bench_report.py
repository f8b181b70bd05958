"""The benchmark's report and the pieces it is built from.

The index: one row per scale with the code measured, the analysis linked when present, and
results of the earlier format (one process per layer) kept apart. The report of a scale:
each target with its verdict, a table per run with a row per job. What the report reads:
the runner's progress lines, Delta commits given to the job that made them, and the backfill's
regrouped deliveries, Spark jobs given to the pipeline job
whose tag they carry.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import pytest

from bench.backfill import regroup_deliveries
from bench.eventlog import attribute_jobs, summarize_event_log
from bench.lakestats import (
    OUTSIDE_JOBS,
    Commit,
    CommitStats,
    attribute_commits,
    by_area,
    commit_stats,
    commits_between,
)
from bench.report import ANALYSIS, index_markdown, is_current, markdown, write_index, write_scale_report
from bench.report import main as report_main
from bench.runlog import parse_run_log
from jobs.runner import JOB_PROPERTY

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def committed_results() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*/bench.json"))]


def test_the_index_names_the_machine_of_each_scale_when_they_differ():
    current = [r for r in committed_results() if is_current(r)]
    assert len(current) >= 2, "two current scales are committed"
    first, second = current[0], current[1]
    machine = {**first["machine"], "cpu": "Test CPU"}
    same = [{**first, "machine": machine}, {**second, "machine": machine}]
    other = {**second, "machine": {**machine, "cpu": "Other CPU"}}

    def machine_lines(results: list[dict]) -> list[str]:
        section = index_markdown(results).split("## Machine", 1)[1].split("##", 1)[0]
        return [line for line in section.splitlines() if " cores, " in line]

    cores, rest = f"- {machine['cores']} cores", f"{machine['memory_gb']} GB RAM, {machine['os']}"
    assert machine_lines(same) == [f"{cores}, Test CPU, {rest}"]
    assert machine_lines([same[0], other]) == [
        f"{cores}, Test CPU, {rest} (scale {first['scale']:g})",
        f"{cores}, Other CPU, {rest} (scale {second['scale']:g})",
    ]


def test_the_index_names_the_code_of_each_scale_and_links_the_analysis_only_when_given():
    results = committed_results()
    assert results, "no committed benchmark results"
    results[0] = {**results[0], "code": "abc1234"}
    results[-1] = {key: value for key, value in results[-1].items() if key != "code"}

    plain = index_markdown(results)
    linked = index_markdown(results, analysis=ANALYSIS)

    rows = [line for line in plain.splitlines() if line.startswith("| [")]
    assert len(rows) == len(results)

    def row_of(result: dict) -> str:
        scale = f"{result['scale']:g}"
        return next(row for row in rows if row.startswith(f"| [{scale}]({scale}/bench.md)"))

    assert row_of(results[0]).endswith("| abc1234 |")
    assert row_of(results[-1]).endswith("| ? |")  # results measured before the code was recorded
    assert ANALYSIS not in plain
    assert f"[{ANALYSIS}]({ANALYSIS})" in linked


def test_write_index_links_the_analysis_file_when_it_exists(tmp_path):
    for source in RESULTS.glob("*/bench.json"):
        (tmp_path / source.parent.name).mkdir()
        shutil.copy(source, tmp_path / source.parent.name / "bench.json")
    write_index(tmp_path)
    assert ANALYSIS not in (tmp_path / "README.md").read_text()
    (tmp_path / ANALYSIS).write_text("# Analysis\n")
    write_index(tmp_path)
    assert f"[{ANALYSIS}]({ANALYSIS})" in (tmp_path / "README.md").read_text()


# --- The current format: one process per run, jobs ran or skipped --------------------------------


def pipeline_run(seconds: float, *, ran: list[str], skipped: list[str]) -> dict:
    """A measured ``run --layer ...`` as bench.run.analyse_run leaves it (numbers made up)."""
    jobs = [
        {
            "job": name,
            "status": "ran",
            "seconds": 2.0,
            "rows_read": 100,
            "rows_per_s": 50.0,
            "spark_jobs": 3,
            "busy_s": 1.0,
            "delta_commits": 2,
        }
        for name in ran
    ] + [{"job": name, "status": "skipped"} for name in skipped]
    return {
        "seconds": seconds,
        "cpu_s": seconds,
        "peak_driver_mb": 900 if ran else 60,
        "runner": {"run_ids": ["r1"], "ran": ran, "skipped": skipped, "failed": [], "blocked": []},
        "jobs": jobs,
        "jobs_s": 2.0 * len(ran),
        "outside_jobs_s": seconds - 2.0 * len(ran),
        "rows_read": 100 * len(ran),
        "rows_per_s": 100 * len(ran) / seconds,
        "delta": {"ops": {"commits": 1}, "total": {"commits": 2 * len(ran) + 1}},
        "delta_commits": 2 * len(ran) + 1 if ran else 0,
        "delta_commits_outside_jobs": 1 if ran else 0,
        "delta_data_files_added": 2 * len(ran),
        "spark_event_log": {"spark_jobs": 3 * len(ran), "busy_s": 1.0 * len(ran), "tasks": 9}
        if ran
        else None,
        "spark_jobs_outside_pipeline_jobs": None,
    }


def current_results(scale: float = 0.5, *, code: str = "def5678") -> dict:
    from bench.run import RESULTS_FORMAT, ratios

    jobs = ["bronze.orders", "bronze.clicks", "gold.customer_segments", "gold.product_popularity"]
    old = committed_results()[0]
    results = {
        "format": RESULTS_FORMAT,
        "scale": scale,
        "started_at": "2026-03-01T00:00:00+00:00",
        "machine": old["machine"],
        "code": code,
        "load_average_start": [1.0, 1.0, 1.0],
        "load_average_end": [1.5, 1.0, 1.0],
        "generate": {
            "days": 3,
            "start": "2026-03-01",
            "landing_files_full_run": 19,
            "landing_bytes_full_run": 2**20,
            "held_back_day": "2026-03-04",
        },
        "floor": {
            "spark": {
                "seconds": 10.0,
                "cpu_s": 12.0,
                "peak_tree_rss_mb": 800,
                "session_s": 4.0,
                "work_s": 5.0,
            },
            "pyarrow": {"seconds": 0.5, "rows": 400},
        },
        "full": pipeline_run(100.0, ran=jobs, skipped=[]),
        "noop": pipeline_run(1.5, ran=[], skipped=jobs),
        "paris": pipeline_run(104.0, ran=jobs, skipped=[]),
        "incremental": pipeline_run(30.0, ran=jobs[:1], skipped=jobs[1:]),
        "peer": {"error": "the DuckDB peer exited 1"},
        "backfill": {"error": "not measured"},
        "bench_seconds": 300.0,
    }
    results["ratios"] = ratios(results)
    return results


def test_the_report_of_the_current_format_shows_each_target_with_its_verdict_and_the_jobs_of_each_run():
    results = current_results()
    values = results["ratios"]["values"]
    assert values["noop_over_full"] == 0.015
    assert values["paris_over_utc"] == 1.04
    assert values["spark_over_duckdb"] is None  # the peer failed

    text = markdown(results)

    lines = text.splitlines()
    assert "| measure | value | target | beyond | met |" in lines
    assert "| no-op run / full run | 0.015 | <= 0.05 | <= 0.02 | yes, beyond |" in lines
    assert "| incremental day / full run | 0.300 | <= 0.2 | <= 0.1 | no |" in lines
    assert "| full run / Spark floor | 10.000 | <= 8 | <= 4 | no |" in lines
    assert "| full run with TZ=Europe/Paris / with TZ=UTC | 1.040 | <= 1.2 | - | yes |" in lines
    assert "| Spark / DuckDB (the two aggregates) | - | <= 5 | <= 3 | - |" in lines
    assert "| no-op run: every job skipped | yes | yes | - | yes |" in lines
    for title in ("## Full run, per job", "## No-op run, per job", "## Incremental run, per job"):
        assert title in lines
    assert "| gold.customer_segments | skipped | - | - | - | - | - | - | 2.0 |" in lines  # incremental
    assert any(line.startswith("DuckDB peer") or "failed: the DuckDB peer exited 1" in line for line in lines)


def test_the_index_lists_current_and_earlier_results_in_separate_tables(tmp_path):
    earlier = committed_results()
    current = current_results(scale=0.5)
    text = index_markdown([*earlier, current])
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert len(rows) == len(earlier) + 1
    assert "## Earlier results (one process per layer)" in text
    assert text.index("[0.5](0.5/bench.md)") < text.index("## Earlier results")
    assert next(row for row in rows if row.startswith("| [0.5](")).endswith("| def5678 |")

    for source in RESULTS.glob("*/bench.json"):
        (tmp_path / source.parent.name).mkdir()
        shutil.copy(source, tmp_path / source.parent.name / "bench.json")
    write_scale_report(current, tmp_path / "0.5")
    assert report_main([str(tmp_path)]) == 0
    assert (tmp_path / "0.5" / "bench.md").is_file() and (tmp_path / "0.5" / "bench.png").is_file()
    formats = {
        path.parent.name: is_current(json.loads(path.read_text())) for path in RESULTS.glob("*/bench.json")
    }
    assert not all(formats.values()), "the committed results hold no earlier-format one to keep"
    for scale, current_format in formats.items():  # an earlier result is kept, a current one rebuilt
        assert (tmp_path / scale / "bench.md").exists() == current_format
    assert "[0.5](0.5/bench.md)" in (tmp_path / "README.md").read_text()
    assert (tmp_path / "scaling.png").is_file()


def test_the_runner_log_says_which_jobs_ran_and_which_were_skipped():
    text = "\n".join(
        [
            "[06:30:22] run 20261206T063022Z-7f03f2bf: 4 jobs, landing /l, lake /k",
            "WARNING: Using incubator modules: jdk.incubator.vector",
            "[06:30:22] bronze.orders: skipped, nothing it reads changed since run 20261206T062651Z-ab1a1723",
            "[06:30:22] silver.orders: started (run 20261206T063022Z-7f03f2bf)",
            "[06:30:31] silver.orders: done in 8.5s: 101 rows in, 66 written, 0 quarantined",
            "[06:30:32] silver.order_items: FAILED after 1.0s: ValueError: boom",
            "[06:30:32] gold.fact_orders: blocked: silver.order_items failed",
            "[06:30:32] run 20261206T063022Z-7f03f2bf: 1 ran, 1 skipped (nothing new), 2 failed or blocked",
        ]
    )
    log = parse_run_log(text)
    assert log.run_ids == ["20261206T063022Z-7f03f2bf"]
    assert log.as_dict() == {
        "run_ids": ["20261206T063022Z-7f03f2bf"],
        "totals": {"ran": 1, "skipped": 1, "failed_or_blocked": 2},
        "ran": ["silver.orders"],
        "skipped": ["bronze.orders"],
        "failed": ["silver.order_items"],
        "blocked": ["gold.fact_orders"],
    }
    assert log.outcomes[0] == ("bronze.orders", "skipped", "20261206T062651Z-ab1a1723")


def test_commits_go_to_the_job_whose_run_holds_their_time_and_the_rest_outside():
    def commit(table: str, version: int, moment: int, adds: int = 1) -> Commit:
        return Commit(table, version, CommitStats(adds, 100 * adds, 0, moment))

    scan = {
        "bronze/orders": {
            0: commit("bronze/orders", 0, 1_000).stats,
            1: commit("bronze/orders", 1, 5_000).stats,
        },
        "ops/pipeline_runs": {0: commit("ops/pipeline_runs", 0, 2_500).stats},
        "silver/orders": {0: commit("silver/orders", 0, 3_000, adds=2).stats},
    }
    commits = commits_between(scan, 1_500, 4_000)  # the process ran from 1.5 s to 4 s
    assert [(c.table, c.version) for c in commits] == [("ops/pipeline_runs", 0), ("silver/orders", 0)]
    windows = [("bronze.orders", 1_500, 2_000), ("silver.orders", 2_600, 3_000)]
    attributed = attribute_commits(commits, windows)
    assert attributed["silver.orders"].commits == 1
    assert attributed["silver.orders"].data_files_added == 2
    assert attributed[OUTSIDE_JOBS].commits == 1
    assert "bronze.orders" not in attributed
    assert by_area(commits)["total"].commits == 2


def test_a_commit_naming_its_consumer_goes_to_that_job_even_inside_another_jobs_run():
    side_by_side = Commit("silver/orders", 4, CommitStats(1, 100, 1, 2_000, "MERGE", "silver.orders"))
    untagged = Commit("quarantine/orders", 2, CommitStats(1, 10, 0, 2_100, "WRITE"))
    windows = [("silver.customers", 1_500, 2_500), ("silver.orders", 1_800, 3_000)]
    attributed = attribute_commits([side_by_side, untagged], windows)
    assert attributed["silver.orders"].commits == 1
    assert attributed["silver.customers"].commits == 1  # by time: the first window holding it


def test_a_commits_consumer_is_read_from_its_user_metadata(tmp_path):
    log = tmp_path / "00000000000000000003.json"
    metadata = json.dumps({"ecom_consumed": {"consumer": "gold.fact_orders", "sources": {}}})
    lines = [
        {"commitInfo": {"timestamp": 7_000, "operation": "MERGE", "userMetadata": metadata}},
        {"add": {"path": "a.parquet", "size": 40}},
    ]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    stats = commit_stats(log)
    assert (stats.consumer, stats.operation, stats.adds) == ("gold.fact_orders", "MERGE", 1)
    assert stats.timestamp_ms == 7_000
    unreadable = {"commitInfo": {"timestamp": 1, "userMetadata": "not json"}}
    log.write_text(json.dumps(unreadable) + "\n", encoding="utf-8")
    assert commit_stats(log).consumer == ""


def test_spark_jobs_go_to_the_pipeline_job_of_their_property_or_tag_else_to_the_run_holding_their_start(
    tmp_path,
):
    session = "spark-session-2c48facd-fe1b-4491-8a3e-056e315de089"
    tagged = f"{session}-execution-root-id-0,{session}-thread-f48dd310-ecom-job=gold.fact_orders,{session}"

    def job(job_id: int, start: int, end: int, tags: str, owner: str = "") -> list[dict[str, object]]:
        properties = {"spark.job.tags": tags, "callSite.short": "collect at x.py:1"}
        if owner:  # the runner's thread property: also on a broadcast's or ALS's jobs, without the tag
            properties[JOB_PROPERTY] = owner
        started = {"Event": "SparkListenerJobStart", "Job ID": job_id, "Submission Time": start}
        return [
            {**started, "Properties": properties},
            {"Event": "SparkListenerJobEnd", "Job ID": job_id, "Completion Time": end},
        ]

    events = [{"Event": "SparkListenerApplicationStart", "App ID": "local-1", "Timestamp": 0}]
    events += job(0, 1_000, 1_500, tagged)  # inside silver.orders' run, but gold.fact_orders' job
    events += job(1, 1_200, 1_300, session)  # untagged: by time
    events += job(2, 9_000, 9_100, session)  # untagged, outside every run
    events += job(3, 1_400, 1_600, session, owner="gold.fact_orders")  # a broadcast's: the property only
    path = tmp_path / "local-1"
    path.write_text("\n".join(json.dumps(event) for event in events) + "\n", encoding="utf-8")
    summary = summarize_event_log(path)
    owners = [spark_job.pipeline_job for spark_job in summary.jobs]
    assert owners == ["gold.fact_orders", "", "", "gold.fact_orders"]

    def at(seconds: int) -> dt.datetime:
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)

    records = [
        {"job": "silver.orders", "started_at": at(0), "ended_at": at(2)},
        {"job": "gold.fact_orders", "started_at": at(3), "ended_at": at(4)},
    ]
    attributed = attribute_jobs(summary, records)
    assert attributed["gold.fact_orders"] == {"spark_jobs": 2, "busy_s": 0.6}
    assert attributed["silver.orders"] == {"spark_jobs": 1, "busy_s": 0.1}
    assert attributed["(between jobs)"]["spark_jobs"] == 1


def test_regrouped_deliveries_hold_the_same_rows_under_one_header_per_layout(tmp_path):
    daily, blocks = tmp_path / "daily", tmp_path / "blocks"
    files = {
        "orders/ingest_date=2026-03-01/orders_20260301.csv": b"id,amount\n1,2.5\n",
        "orders/ingest_date=2026-03-02/orders_20260302.csv": b'id,amount\n2,"3,5"\n3,4',  # no final newline
        "orders/ingest_date=2026-03-02/orders_20260302_2.csv": b"",  # an empty file
        "orders/ingest_date=2026-03-03/orders_20260303.csv": b"id,amount,coupon\n4,1.0,X\n",
        "orders/ingest_date=2026-03-04/orders_20260304.csv": b"id,amount\n5,9.0\n",
        "clicks/ingest_date=2026-03-01/clicks_20260301.jsonl": b'{"e":1}\n{"e":2}',
        "clicks/ingest_date=2026-03-04/clicks_20260304.jsonl": b'{"e":5}\n',
    }
    for name, content in files.items():
        (daily / name).parent.mkdir(parents=True, exist_ok=True)
        (daily / name).write_bytes(content)
    (daily / "clicks/ingest_date=2026-03-02").mkdir()
    with gzip.open(daily / "clicks/ingest_date=2026-03-02/clicks_20260302.jsonl.gz", "wb") as handle:
        handle.write(b'{"e":3}\n{"e":4}\n')

    layout = regroup_deliveries(daily, blocks, days_per_block=3)

    assert layout.folders_per_source == {"clicks": 2, "orders": 2}
    first = blocks / "orders" / "ingest_date=2026-03-01"
    assert (first / "orders_20260301.csv").read_bytes() == b'id,amount\n1,2.5\n2,"3,5"\n3,4\n'
    assert (first / "orders_20260301_2.csv").read_bytes() == b"id,amount,coupon\n4,1.0,X\n"
    second = blocks / "orders" / "ingest_date=2026-03-04"
    assert (second / "orders_20260304.csv").read_bytes() == b"id,amount\n5,9.0\n"
    with gzip.open(blocks / "clicks/ingest_date=2026-03-01/clicks_20260301.jsonl.gz") as handle:
        assert handle.read() == b'{"e":1}\n{"e":2}\n{"e":3}\n{"e":4}\n'
    assert (blocks / "clicks/ingest_date=2026-03-04/clicks_20260304.jsonl").read_bytes() == b'{"e":5}\n'
    with pytest.raises(ValueError, match="days_per_block must be >= 1"):
        regroup_deliveries(daily, blocks, days_per_block=0)


def test_lines_two_threads_ran_into_one_are_read_as_two():
    # How the no-op run's log looked before progress lines were written whole.
    since = "skipped, nothing it reads changed since run 20261206T151754Z-010c5cc9"
    text = "\n".join(
        [
            "[15:22:38] run 20261206T152238Z-effee3e5: 3 jobs, landing /l, lake /k",
            f"[15:22:38] gold.dim_product: {since}[15:22:38] gold.dim_customer: {since}",
            f"[15:22:38] gold.fact_orders: {since}",
            "[15:22:38] run 20261206T152238Z-effee3e5: 0 ran, 3 skipped (nothing new), 0 failed or blocked",
        ]
    )
    log = parse_run_log(text)
    assert log.as_dict()["skipped"] == ["gold.dim_product", "gold.dim_customer", "gold.fact_orders"]
    assert log.outcomes[0] == ("gold.dim_product", "skipped", "20261206T151754Z-010c5cc9")
