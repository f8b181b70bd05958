"""The daily run of the e-commerce lakehouse: one Airflow task per ``ecom-pipeline`` job.

The tasks and their dependencies are the project's job graph (``jobs/graph.py``, read from
the checkout holding this file; it imports nothing but the standard library): a task waits
for the tasks of the jobs that write the tables it reads, and for nothing else, so a job
whose source failed or is late does not hold the others up. Each task runs, in the
project's checkout::

    ecom-pipeline run --layer <layer> --job <name> --as-of <YYYY-MM-DD>

A job with nothing new since its last success is skipped by the pipeline itself before it
starts Spark. After every gold task, ``publish.postgres`` copies the gold tables into the BI
database (``ecom-pipeline publish``, docs/postgres.md) when ``ecom_publish_db`` names one;
without it the task is skipped (Airflow's "skipped", exit code 99), so a shop without a BI
database keeps an all-green DAG. A second DAG, ``ecom_maintenance``, compacts and vacuums the lake weekly
(``ecom-pipeline maintain``, Sundays 04:00 UTC), so small files written by daily appends
are compacted where it pays, not after every append.

**The as-of date** is ``{{ data_interval_start | ds }}``: the calendar day the run's data
interval covers. The schedule is a cron trigger at 02:00 UTC with a one-day interval, so
the run of day D+1 02:00 covers [D 02:00, D+1 02:00) and passes ``--as-of D``, the last
complete day. The project's as-of date is inclusive (gold aggregates keep orders and events
dated up to and including it), so ``data_interval_end`` (D+1) would score every customer and
product against a day that has barely started. It matches the crontab alternative
``--as-of $(date -d yesterday +%F)``. Manual runs get the interval of the 24 hours before
they were triggered, so the same rule applies.

**Settings** are read when a task runs, on the worker: the Airflow Variable if it is set,
else the worker's environment variable, else the default. Nothing is read at parse time.

=====================  ====================  =============================================
Airflow Variable       environment           default
=====================  ====================  =============================================
``ecom_project_dir``   ``ECOM_PROJECT_DIR``  the project holding this file (``../..``);
                                             the tasks' working directory
``ecom_pipeline``      ``ECOM_PIPELINE``     ``<project>/.venv/bin/ecom-pipeline``
``ecom_lake``          ``ECOM_LAKE``         empty: the lake of ``conf/<env>.yaml``
``ecom_landing``       ``ECOM_LANDING``      empty: the landing of ``conf/<env>.yaml``
``ecom_env``           ``ECOM_ENV``          empty: ``local``
``ecom_publish_db``    ``ECOM_PUBLISH_DB``   empty: ``publish.postgres`` is skipped;
                                             ``postgresql://user@host:port/db`` publishes
=====================  ====================  =============================================

The rest of the worker's environment reaches the jobs unchanged (``append_env``): secrets
such as ``ECOM_HMAC_KEY`` and ``ECOM_PUBLISH_DB_PASSWORD`` belong there (or in a secrets
backend), never in this file.
``ECOM_MAX_PARALLEL_JOBS`` (read at parse time, default 2) caps how many jobs, each its own
Spark driver, run at once. A job that is already running (a manual run, say) refuses to
start a second time; the task then fails and retries.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, TaskGroup, Variable
from airflow.timetables.trigger import CronTriggerTimetable

DAG_ID = "ecom_pipeline"
MAINTENANCE_DAG_ID = "ecom_maintenance"
PROJECT = Path(__file__).resolve().parents[2]

# The project's job graph, from the checkout holding this file (standard library only).
sys.path.insert(0, str(PROJECT))
from jobs.graph import JOB_GRAPH, JobSpec, upstream_jobs  # noqa: E402

sys.path.remove(str(PROJECT))
LAYERS = tuple(dict.fromkeys(spec.layer for spec in JOB_GRAPH))

AS_OF_TEMPLATE = "{{ data_interval_start | ds }}"
SCHEDULE = CronTriggerTimetable("0 2 * * *", timezone="UTC", interval=dt.timedelta(days=1))

# Each setting's Airflow Variable and the worker's environment variable behind it.
SETTINGS = {
    "ecom_project_dir": "ECOM_PROJECT_DIR",
    "ecom_pipeline": "ECOM_PIPELINE",
    "ecom_lake": "ECOM_LAKE",
    "ecom_landing": "ECOM_LANDING",
    "ecom_env": "ECOM_ENV",
    "ecom_publish_db": "ECOM_PUBLISH_DB",
}
PUBLISH_GROUP, PUBLISH_TASK = "publish", "postgres"
# BashOperator marks a task skipped when its command exits with this code.
SKIP_EXIT_CODE = 99


def ecom_setting(variable: str) -> str:
    """A setting, resolved when a task renders its templates (on the worker), never at parse time.

    Args:
        variable: One of the Airflow Variable names of ``SETTINGS``, e.g. ``ecom_lake``.

    Returns:
        The Variable's value if set, else the worker's environment variable, else the default:
        the project holding this file for ``ecom_project_dir``, its ``.venv/bin/ecom-pipeline``
        for ``ecom_pipeline``, and an empty string (the project's config decides) otherwise.

    Raises:
        KeyError: ``variable`` is not one of ``SETTINGS``.
    """
    value = Variable.get(variable, default=None) or os.environ.get(SETTINGS[variable])
    if value:
        return str(value)
    if variable == "ecom_project_dir":
        return str(PROJECT)
    if variable == "ecom_pipeline":
        return str(Path(ecom_setting("ecom_project_dir")) / ".venv" / "bin" / "ecom-pipeline")
    return ""


def job_command(job: JobSpec) -> str:
    """The task's bash command (a Jinja template): run one job as of the interval's day."""
    return f'"$ECOM_PIPELINE" run --layer {job.layer} --job {job.name} --as-of {AS_OF_TEMPLATE}'


# Publish the gold tables when a BI database is named, else skip (not fail) the task.
PUBLISH_COMMAND = (
    'if [ -z "$ECOM_PUBLISH_DB" ]; then '
    'echo "no ecom_publish_db Variable nor ECOM_PUBLISH_DB: nothing to publish"; '
    f"exit {SKIP_EXIT_CODE}; fi; "
    '"$ECOM_PIPELINE" publish --to "$ECOM_PUBLISH_DB"'
)

# Templated per task run; "$ECOM_PIPELINE" above is this environment's value.
JOB_ENV = {
    "ECOM_PIPELINE": "{{ ecom_setting('ecom_pipeline') }}",
    "ECOM_LAKE": "{{ ecom_setting('ecom_lake') }}",
    "ECOM_LANDING": "{{ ecom_setting('ecom_landing') }}",
    "ECOM_ENV": "{{ ecom_setting('ecom_env') }}",
}
PUBLISH_ENV = {**JOB_ENV, "ECOM_PUBLISH_DB": "{{ ecom_setting('ecom_publish_db') }}"}

with DAG(
    dag_id=DAG_ID,
    description="Daily lakehouse run: landing -> bronze -> silver -> gold, one task per job.",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=int(os.environ.get("ECOM_MAX_PARALLEL_JOBS", "2")),
    default_args={
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=10),
        "execution_timeout": dt.timedelta(hours=3),
    },
    user_defined_macros={"ecom_setting": ecom_setting},
    doc_md=__doc__,
    tags=["ecom", "lakehouse"],
) as dag:
    groups = {layer: TaskGroup(group_id=layer) for layer in LAYERS}
    tasks: dict[str, BashOperator] = {}
    for spec in JOB_GRAPH:
        tasks[spec.qualified_name] = BashOperator(
            task_id=spec.name,  # shown as <layer>.<name>, the job's qualified name
            task_group=groups[spec.layer],
            bash_command=job_command(spec),
            env=JOB_ENV,
            append_env=True,
            cwd="{{ ecom_setting('ecom_project_dir') }}",
            doc_md=spec.description,
        )
    for spec in JOB_GRAPH:
        for upstream in upstream_jobs(spec):
            tasks[upstream] >> tasks[spec.qualified_name]
    publish = BashOperator(
        task_id=PUBLISH_TASK,
        task_group=TaskGroup(group_id=PUBLISH_GROUP),
        bash_command=PUBLISH_COMMAND,
        env=PUBLISH_ENV,
        append_env=True,
        cwd="{{ ecom_setting('ecom_project_dir') }}",
        skip_on_exit_code=SKIP_EXIT_CODE,
        doc_md="Copy the gold tables into the BI database's schema, each swapped in atomically.",
    )
    [tasks[spec.qualified_name] for spec in JOB_GRAPH if spec.layer == "gold"] >> publish

with DAG(
    dag_id=MAINTENANCE_DAG_ID,
    description="Weekly lake maintenance: compact small files (OPTIMIZE) and VACUUM every table.",
    schedule=CronTriggerTimetable("0 4 * * 0", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=30)},
    user_defined_macros={"ecom_setting": ecom_setting},
    tags=["ecom", "lakehouse"],
) as maintenance_dag:
    BashOperator(
        task_id="maintain",
        bash_command='"$ECOM_PIPELINE" maintain',
        env=JOB_ENV,
        append_env=True,
        cwd="{{ ecom_setting('ecom_project_dir') }}",
    )
