"""The Airflow DAG ``airflow/dags/ecom_pipeline.py``, loaded by Airflow's own ``DagBag``.

Airflow lives in its own virtualenv (``.venv-airflow/``, made by ``airflow/setup-venv.sh``,
idempotent) because its pins clash with the project's. A probe script runs there with a
throw-away ``AIRFLOW_HOME`` and reports the DAG as JSON; the assertions run here, beside the
project's own registry of jobs (``python -m jobs jobs``), so the DAG cannot drift from it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from jobs.cli import build_parser
from jobs.graph import JOB_GRAPH, upstream_jobs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO / "airflow" / "setup-venv.sh"
AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
DAG_ID = "ecom_pipeline"
LAYERS = ("bronze", "silver", "gold")
# A manual run triggered at 2026-03-08 02:00 UTC, the time the daily schedule fires.
SAMPLE_RUN_AFTER = "2026-03-08T02:00:00+00:00"
SAMPLE_AS_OF = dt.date(2026, 3, 7)
EXECUTED_TASK = "gold.customer_segments"
VARIABLE_LAKE = "/lake/from/a/variable"
ENVIRONMENT_LANDING = "/landing/from/the/environment"
PUBLISH_TASK = "publish.postgres"
PUBLISH_URL = "postgresql://bi@db.example:5432/shop"

# Runs in .venv-airflow: argv[1] is the JSON report to write, argv[2] the task to execute,
# argv[3] the moment a sample manual run is triggered, argv[4] the BI database to publish to.
PROBE = r"""
import json
import os
import sys

import pendulum

try:  # Airflow 3.2 moved DagBag; 3.1 has it in airflow.models.dagbag
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
from airflow.timetables.base import TimeRestriction

report_path, executed_task, run_after = sys.argv[1], sys.argv[2], sys.argv[3]
PUBLISH_URL = sys.argv[4]
bag = DagBag(dag_folder="airflow/dags", include_examples=False)
report = {
    "import_errors": {str(path): str(error) for path, error in bag.import_errors.items()},
    "dag_ids": sorted(bag.dags),
}
dag = bag.dags.get("ecom_pipeline")
if dag is not None:
    timetable = dag.timetable
    sample = timetable.infer_manual_data_interval(run_after=pendulum.parse(run_after))
    context = {"data_interval_start": sample.start, "data_interval_end": sample.end}
    runs, last = [], None
    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)
    for _ in range(3):
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        runs.append([info.run_after.isoformat(), info.data_interval.start.isoformat(),
                     info.data_interval.end.isoformat()])
        last = info.data_interval
    tasks = {}
    for task in dag.tasks:
        tasks[task.task_id] = {
            "operator": type(task).__name__,
            "upstream": sorted(task.upstream_task_ids),
            "bash_command": task.bash_command,
            "rendered_command": task.render_template(task.bash_command, context),
            "retries": task.retries,
            "retry_delay_s": task.retry_delay.total_seconds(),
            "execution_timeout_s": task.execution_timeout and task.execution_timeout.total_seconds(),
        }
    task = dag.get_task(executed_task)
    task.render_template_fields(context)
    report["dag"] = {
        "schedule": timetable.summary,
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks,
        "sample_interval": [sample.start.isoformat(), sample.end.isoformat()],
        "first_runs": runs,
        "tasks": tasks,
        "executed": {"env": {k: v for k, v in task.env.items()}, "cwd": task.cwd,
                     "output": task.execute(context)},
    }
    # The publish task, executed without a BI database, then with one.
    report["dag"]["publish"] = {}
    publish = dag.get_task("publish.postgres")
    templates = {name: getattr(publish, name) for name in publish.template_fields}
    for label, url in (("without", ""), ("with", PUBLISH_URL)):
        os.environ["ECOM_PUBLISH_DB"] = url
        for name, template in templates.items():  # rendering replaces the templates
            setattr(publish, name, template)
        publish.render_template_fields(context)
        try:
            outcome = {"output": publish.execute(context)}
        except Exception as error:  # Airflow's skip is an exception
            outcome = {"raised": type(error).__name__, "message": str(error)}
        report["dag"]["publish"][label] = outcome
with open(report_path, "w") as out:
    json.dump(report, out)
"""

# Stands in for ecom-pipeline when a task is executed: prints what it was given, on one line.
STUB_PIPELINE = """#!/usr/bin/env bash
printf '{"argv": "%s", "cwd": "%s", "lake": "%s", "landing": "%s", "env": "%s"}\\n' \\
    "$*" "$PWD" "${ECOM_LAKE-unset}" "${ECOM_LANDING-unset}" "${ECOM_ENV-unset}"
"""


@pytest.fixture(scope="module")
def airflow_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Set up .venv-airflow (quick when done), then load the DAG folder with DagBag and report."""
    subprocess.run(["bash", str(SETUP_SCRIPT)], cwd=REPO, check=True, timeout=1800)
    work = tmp_path_factory.mktemp("airflow")
    (work / "home").mkdir()
    probe, report, stub = work / "probe.py", work / "report.json", work / "ecom-pipeline"
    probe.write_text(PROBE)
    stub.write_text(STUB_PIPELINE)
    stub.chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ECOM"))}
    environ.update(
        {
            "AIRFLOW_HOME": str(work / "home"),  # its airflow.cfg and sqlite db land here
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            # Settings of the executed task: two Airflow Variables and one worker variable.
            "AIRFLOW_VAR_ECOM_PIPELINE": str(stub),
            "AIRFLOW_VAR_ECOM_LAKE": VARIABLE_LAKE,
            "ECOM_LANDING": ENVIRONMENT_LANDING,
        }
    )
    completed = subprocess.run(
        [str(AIRFLOW_PYTHON), str(probe), str(report), EXECUTED_TASK, SAMPLE_RUN_AFTER, PUBLISH_URL],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, f"the DagBag probe failed:\n{completed.stderr[-4000:]}"
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def registered_jobs() -> list[str]:
    """``<layer>.<name>`` of every job in the project's registry, as ``python -m jobs jobs`` lists them."""
    completed = subprocess.run(
        [sys.executable, "-m", "jobs", "jobs"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    return [line.split()[0] for line in completed.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tasks(airflow_report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert "dag" in airflow_report, f"no DAG {DAG_ID}: {airflow_report}"
    return airflow_report["dag"]["tasks"]


def _ancestors(tasks: Mapping[str, Mapping[str, Any]], task_id: str) -> set[str]:
    seen: set[str] = set()
    stack = list(tasks[task_id]["upstream"])
    while stack:
        upstream = stack.pop()
        if upstream not in seen:
            seen.add(upstream)
            stack.extend(tasks[upstream]["upstream"])
    return seen


def _layer(task_id: str) -> str:
    return task_id.split(".")[0]


def test_dag_folder_imports_without_errors(airflow_report: dict[str, Any]) -> None:
    assert airflow_report["import_errors"] == {}
    assert airflow_report["dag_ids"] == sorted([DAG_ID, "ecom_maintenance"])


def test_one_bash_task_per_registered_job(
    tasks: dict[str, dict[str, Any]], registered_jobs: list[str]
) -> None:
    missing = sorted(set(registered_jobs) - set(tasks))
    extra = sorted(set(tasks) - set(registered_jobs) - {PUBLISH_TASK})
    assert (missing, extra) == ([], []), (
        f"PIPELINE_JOBS in airflow/dags/ecom_pipeline.py and the registry differ: "
        f"jobs without a task {missing}, tasks without a job {extra}"
    )
    assert len(tasks) == len(registered_jobs) + 1  # and publish.postgres
    assert {task["operator"] for task in tasks.values()} == {"BashOperator"}


def test_each_task_waits_exactly_for_the_jobs_that_write_what_it_reads(
    tasks: dict[str, dict[str, Any]],
) -> None:
    """The DAG is the job graph: no dependency missing, none added, no cycle."""
    for spec in JOB_GRAPH:
        assert set(tasks[spec.qualified_name]["upstream"]) == set(upstream_jobs(spec)), spec.qualified_name
        ancestors = _ancestors(tasks, spec.qualified_name)
        assert spec.qualified_name not in ancestors, f"{spec.qualified_name} is in a cycle"
        later = {other for other in ancestors if LAYERS.index(_layer(other)) > LAYERS.index(spec.layer)}
        assert later == set(), f"{spec.qualified_name} waits for a later layer: {sorted(later)}"


@pytest.mark.parametrize(
    ("task_id", "reads"),
    [
        ("silver.orders", {"silver.fx_rates"}),
        ("silver.order_items", {"silver.orders", "silver.products"}),
        ("gold.fact_order_lines", {"gold.dim_customer", "gold.dim_product"}),
        ("gold.fact_orders", {"gold.dim_customer"}),
    ],
)
def test_a_job_waits_for_the_tables_of_its_own_layer_it_reads(
    tasks: dict[str, dict[str, Any]], task_id: str, reads: set[str]
) -> None:
    assert reads <= _ancestors(tasks, task_id)


def test_each_command_runs_its_own_job_as_of_the_day_the_interval_covers(
    tasks: dict[str, dict[str, Any]],
) -> None:
    for task_id, task in tasks.items():
        if task_id == PUBLISH_TASK:
            continue
        assert "--as-of {{ data_interval_start | ds }}" in task["bash_command"]
        program, *arguments = shlex.split(task["rendered_command"])
        args = build_parser().parse_args(arguments)
        assert (program, args.command) == ("$ECOM_PIPELINE", "run")
        assert (f"{args.layer}.{args.job}", args.as_of) == (task_id, SAMPLE_AS_OF)


def test_schedule_is_daily_one_run_at_a_time_without_catchup(airflow_report: dict[str, Any]) -> None:
    dag = airflow_report["dag"]
    assert (dag["catchup"], dag["max_active_runs"]) == (False, 1)
    assert dag["sample_interval"] == ["2026-03-07T02:00:00+00:00", SAMPLE_RUN_AFTER]
    runs = [[dt.datetime.fromisoformat(moment) for moment in run] for run in dag["first_runs"]]
    for run_after, start, end in runs:
        assert (end, end - start) == (run_after, dt.timedelta(days=1))
    assert [b[0] - a[0] for a, b in pairwise(runs)] == [dt.timedelta(days=1)] * (len(runs) - 1)
    for task in dag["tasks"].values():
        assert (task["retries"], task["retry_delay_s"] > 0, task["execution_timeout_s"] > 0) == (
            2,
            True,
            True,
        )


def test_task_runs_the_command_with_settings_from_variables_then_environment(
    airflow_report: dict[str, Any],
) -> None:
    executed = airflow_report["dag"]["executed"]
    layer, name = EXECUTED_TASK.split(".")
    expected = {
        "argv": f"run --layer {layer} --job {name} --as-of {SAMPLE_AS_OF.isoformat()}",
        "cwd": str(REPO),  # the project holding the DAG, so conf/ and relative paths resolve
        "lake": VARIABLE_LAKE,  # an Airflow Variable
        "landing": ENVIRONMENT_LANDING,  # the worker's environment
        "env": "",  # neither: empty, so the project's config picks conf/local.yaml
    }
    assert json.loads(executed["output"]) == expected
    assert executed["cwd"] == str(REPO)


def test_publish_waits_for_every_gold_task(tasks: dict[str, dict[str, Any]]) -> None:
    gold = {spec.qualified_name for spec in JOB_GRAPH if spec.layer == "gold"}
    assert set(tasks[PUBLISH_TASK]["upstream"]) == gold
    assert all(PUBLISH_TASK not in _ancestors(tasks, name) for name in tasks if name != PUBLISH_TASK)


def test_publish_is_skipped_without_a_bi_database_and_publishes_to_the_one_named(
    airflow_report: dict[str, Any],
) -> None:
    outcomes = airflow_report["dag"]["publish"]
    assert outcomes["without"]["raised"] == "AirflowSkipException", outcomes["without"]
    published = json.loads(outcomes["with"]["output"])
    args = build_parser().parse_args(shlex.split(published["argv"]))
    assert (args.command, args.to) == ("publish", PUBLISH_URL)
    assert (published["cwd"], published["lake"]) == (str(REPO), VARIABLE_LAKE)
