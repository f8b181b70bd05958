"""The ``ecom-pipeline`` command (also ``python -m jobs``).

Examples::

    ecom-pipeline generate --landing ./landing --start 2026-03-01 --days 7 --scale 0.02 --seed 7
    ecom-pipeline run --layer all
    ecom-pipeline run --layer silver --job orders --lake /data/lake
    ecom-pipeline run --layer all --from 2026-03-01 --to 2026-03-07     # backfill, day by day
    ECOM_CLICKS_KAFKA=127.0.0.1:9092 ecom-pipeline stream               # clicks until SIGTERM
    ecom-pipeline export-audience winback_email --as-of 2026-03-03 --out winback.csv
    ecom-pipeline recommend --customer-id C0000042                     # a customer's list, from gold
    ./spark-submit.sh --master spark://host:7077 -- run --layer all
    ECOM_PUBLISH_DB_PASSWORD=... ecom-pipeline publish --to postgresql://bi@db:5432/shop

Exit status 0 on success; otherwise non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import Any

from pipeline_lib.config import ConfigError, PipelineConfig, load_config, parse_assignment

EXIT_FAILED = 1
EXIT_USAGE = 2


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from err


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", help="environment file conf/<env>.yaml (default $ECOM_ENV or local)")
    parser.add_argument("--landing", help="landing-zone root (overrides config and $ECOM_LANDING)")
    parser.add_argument("--lake", help="lake root (overrides config and $ECOM_LAKE)")
    parser.add_argument("--conf-dir", help="folder of the YAML config (default: the project's conf/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config key, e.g. --set pipeline.base_currency=USD (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecom-pipeline", description="E-commerce lakehouse pipeline.")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write synthetic landing-zone deliveries")
    generate.add_argument("--landing", required=True, help="landing-zone root to write")
    generate.add_argument("--start", type=_date, required=True, help="first delivery date YYYY-MM-DD")
    generate.add_argument("--days", type=int, required=True, help="number of daily deliveries")
    generate.add_argument("--scale", type=float, default=1.0, help="1 = about one million click events")
    generate.add_argument("--seed", type=int, default=7, help="random seed (same seed, same bytes)")
    generate.add_argument(
        "--defect-rate",
        type=float,
        default=0.003,
        help="share of injected defects of each kind (default 0.003)",
    )
    generate.add_argument(
        "--no-inventory", action="store_true", help="a shop without stock data: write no inventory source"
    )
    generate.add_argument(
        "--to-postgres",
        metavar="URL",
        help="also apply the orders, order_items and customers deliveries, day by day, to tables of "
        "this database (postgresql://user@host:port/db; the password from $ECOM_SOURCE_DB_PASSWORD, "
        "$PGPASSWORD or ~/.pgpass)",
    )
    generate.add_argument(
        "--to-kafka",
        metavar="HOST:PORT",
        help="also send the click deliveries' lines, day by day, to a Kafka topic (one message per "
        "event, keyed by anonymous_id; idempotent producer); the bootstrap servers host:port[,host:port]",
    )
    generate.add_argument(
        "--topic", default=None, help="the topic of --to-kafka (default sources.clicks.topic: clicks)"
    )

    run = commands.add_parser("run", help="run pipeline jobs")
    run.add_argument("--layer", default="all", choices=["bronze", "silver", "gold", "all"])
    run.add_argument("--job", help="one job of the layer, e.g. orders or silver.orders")
    run.add_argument(
        "--as-of",
        type=_date,
        help="process deliveries up to this date and compute the gold aggregates as of it "
        "(default: every delivery; aggregates as of the latest order date)",
    )
    run.add_argument(
        "--from",
        dest="from_date",
        type=_date,
        metavar="DATE",
        help="backfill: run the selected jobs once per as-of date from DATE to --to, oldest first",
    )
    run.add_argument("--to", dest="to_date", type=_date, metavar="DATE", help="last date of the backfill")
    run.add_argument("--full-refresh", action="store_true", help="rebuild the selected tables from scratch")
    run.add_argument(
        "--force",
        action="store_true",
        help=(
            "run the selected jobs even when nothing they read has changed since their last success, "
            "and recompute a gold aggregate whose inputs are those it was written from (the rows are "
            "written only if they differ)"
        ),
    )
    _config_options(run)

    stream = commands.add_parser(
        "stream",
        help="run the click path continuously from Kafka (bronze, silver and gold.product_interest_hourly "
        "in micro-batches) until SIGTERM or Ctrl-C; docs/kafka.md",
    )
    _config_options(stream)

    summary = commands.add_parser("summary", help="print the lake's tables and the gold headline numbers")
    _config_options(summary)

    status = commands.add_parser("status", help="latest run of each job, and how fresh each gold table is")
    _config_options(status)

    maintain = commands.add_parser("maintain", help="OPTIMIZE and VACUUM every table of the lake")
    _config_options(maintain)

    forget = commands.add_parser(
        "forget-customer",
        help="erase one customer's personal data and identifiers from every layer (right to erasure)",
    )
    forget.add_argument("--customer-id", required=True, help="the customer_id to erase")
    forget.add_argument(
        "--keep-history",
        action="store_true",
        help="do not vacuum now: older table versions keep the data until the next `maintain`",
    )
    _config_options(forget)

    export = commands.add_parser(
        "export-audience",
        help="write a campaign's treatment group (as of a date) to one CSV or Parquet file for the CRM",
    )
    export.add_argument("campaign", help="the campaign's name (conf/campaigns.yaml)")
    export.add_argument("--as-of", type=_date, required=True, help="the audience's as-of date YYYY-MM-DD")
    export.add_argument("--out", required=True, metavar="FILE", help="the file to write: *.csv or *.parquet")
    export.add_argument(
        "--with-contact",
        action="store_true",
        help="add the contact details the channel needs (from silver; e-mails normalised and SHA-256 "
        "hashed as ad platforms expect); the file holds personal data and is outside the lake",
    )
    _config_options(export)
    publish = commands.add_parser(
        "publish", help="copy the gold tables into a PostgreSQL schema (each table swapped in atomically)"
    )
    publish.add_argument(
        "--to",
        metavar="URL",
        help="postgresql://user@host:port/db (default publish.url or $ECOM_PUBLISH_DB); the password "
        "from $ECOM_PUBLISH_DB_PASSWORD, $PGPASSWORD or ~/.pgpass, never in the URL",
    )
    publish.add_argument("--schema", help="target schema (default publish.schema: gold)")
    publish.add_argument(
        "--force", action="store_true", help="publish every table, even those whose version is published"
    )
    _config_options(publish)
    recommend = commands.add_parser(
        "recommend", help="print a customer's current recommendations with their reasons (reads gold only)"
    )
    recommend.add_argument("--customer-id", required=True, help="the customer_id")
    recommend.add_argument(
        "--as-of", type=_date, help="the list of an earlier as-of date (default: the latest one)"
    )
    _config_options(recommend)

    jobs_cmd = commands.add_parser("jobs", help="list the jobs (the job graph, in run order)")
    jobs_cmd.add_argument("-v", "--verbose", action="store_true", help="also what each job reads and writes")
    _config_options(jobs_cmd)
    return parser


def load_cli_config(args: argparse.Namespace) -> PipelineConfig:
    """The config for this command: files < environment < flags."""
    overrides: dict[str, Any] = dict(parse_assignment(item) for item in args.set)
    if args.landing:
        overrides["paths.landing"] = args.landing
    if args.lake:
        overrides["paths.lake"] = args.lake
    return load_config(args.env, conf_dir=args.conf_dir, overrides=overrides)


def cmd_generate(args: argparse.Namespace) -> int:
    from ecom_generator import generate_landing
    from pipeline_lib.config import parse_bootstrap_servers

    if args.to_kafka:  # refused before anything is generated
        args.to_kafka = ",".join(parse_bootstrap_servers(args.to_kafka))
    report = generate_landing(
        args.landing,
        start=args.start,
        days=args.days,
        scale=args.scale,
        seed=args.seed,
        defect_rate=args.defect_rate,
        inventory=not args.no_inventory,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    rows = sum(report.rows_by_source.values())
    clicks_per_second = report.rows_by_source.get("clicks", 0) / max(report.seconds, 1e-9)
    print(
        f"generated {rows} rows in {len(report.files)} files under {report.landing} "
        f"in {report.seconds:.1f}s ({clicks_per_second:,.0f} "
        f"click events/s); defects: {dict(report.defects)}"
    )
    if args.to_postgres:
        from ecom_generator.postgres import load_into_postgres
        from pipeline_lib.io.postgres import source_database_at

        with source_database_at(args.to_postgres).connect("ecom-pipeline generate") as connection:
            loaded = load_into_postgres(
                report.landing, connection, progress=lambda msg: print(msg, file=sys.stderr, flush=True)
            )
        print(
            f"applied {len(loaded.days)} days to {args.to_postgres} in {loaded.seconds:.1f}s: "
            f"rows {loaded.rows}, not loadable {loaded.skipped}"
        )
    if args.to_kafka:
        _produce_clicks(args, str(report.landing))
    return 0


def _produce_clicks(args: argparse.Namespace, landing: str) -> None:
    """``generate --to-kafka``: the click deliveries of ``landing`` sent to the topic."""
    import time

    from ecom_generator.kafka import click_messages
    from pipeline_lib.io.kafka import produce_lines

    servers = args.to_kafka
    topic = args.topic or load_config(None).sources.clicks.topic
    started = time.monotonic()
    sent = produce_lines(
        servers, topic, click_messages(landing), progress=lambda msg: print(msg, file=sys.stderr, flush=True)
    )
    seconds = time.monotonic() - started
    print(f"sent {sent} click events to topic {topic} at {servers} in {seconds:.1f}s")


def cmd_run(args: argparse.Namespace) -> int:
    from jobs.graph import select_jobs
    from jobs.runner import run_jobs
    from pipeline_lib.session import build_spark_session

    dates = as_of_dates(args)
    config = load_cli_config(args)
    specs = select_jobs(args.layer, args.job)
    run_jobs(
        lambda: build_spark_session(config.spark, kafka=config.sources.is_kafka("clicks")),
        config,
        specs,
        dates,
        full_refresh=args.full_refresh,
        force=args.force,
    )
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    """``stream``: until SIGTERM or SIGINT, then a stop at a batch boundary and exit 0."""
    import signal
    import threading

    from jobs.stream import stream_clicks
    from pipeline_lib.session import build_spark_session

    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()  # nothing else here: the main loop prints and stops the queries

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    config = load_cli_config(args)
    if not config.sources.is_kafka("clicks"):
        raise ConfigError(
            "ecom-pipeline stream reads clicks from Kafka: set ECOM_CLICKS_KAFKA=host:port "
            "(or sources.clicks.kind: kafka and sources.clicks.bootstrap_servers)"
        )
    spark = build_spark_session(config.spark, app_name=f"{config.spark.app_name} stream", kafka=True)
    summary = stream_clicks(spark, config, stop=stop)
    print(summary.line())
    return 0


def as_of_dates(args: argparse.Namespace) -> list[dt.date | None]:
    """The as-of dates of a ``run``: ``[None]``, ``[--as-of]``, or every day from ``--from`` to ``--to``.

    Raises:
        ConfigError: ``--from``/``--to`` are incomplete, reversed, or combined with ``--as-of``.
    """
    if args.from_date is None and args.to_date is None:
        return [args.as_of]
    if args.as_of is not None:
        raise ConfigError(
            "--as-of cannot be combined with --from/--to (a backfill sets the as-of date of each day)"
        )
    if args.from_date is None or args.to_date is None:
        raise ConfigError("a backfill needs both --from DATE and --to DATE")
    if args.from_date > args.to_date:
        raise ConfigError(f"--from {args.from_date} is after --to {args.to_date}")
    days = (args.to_date - args.from_date).days + 1
    return [args.from_date + dt.timedelta(days=offset) for offset in range(days)]


def cmd_summary(args: argparse.Namespace) -> int:
    from jobs.summary import print_summary
    from pipeline_lib.session import build_spark_session

    config = load_cli_config(args)
    print_summary(build_spark_session(config.spark), config.paths.lake)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from jobs.operations import print_status
    from pipeline_lib.session import build_spark_session

    config = load_cli_config(args)
    print_status(build_spark_session(config.spark), config.paths.lake)
    return 0


def cmd_maintain(args: argparse.Namespace) -> int:
    from jobs.operations import maintain
    from pipeline_lib.session import build_spark_session

    config = load_cli_config(args)
    maintain(
        build_spark_session(config.spark),
        config.paths.lake,
        config.maintenance,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    return 0


def cmd_forget_customer(args: argparse.Namespace) -> int:
    from jobs.erasure import forget_customer
    from pipeline_lib.session import build_spark_session

    config = load_cli_config(args)
    report = forget_customer(
        build_spark_session(config.spark),
        config,
        args.customer_id,
        keep_history=args.keep_history,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(report.summary())
    return 0


def cmd_export_audience(args: argparse.Namespace) -> int:
    from jobs.export import export_audience
    from pipeline_lib.io.exports import export_format
    from pipeline_lib.session import build_spark_session

    config = load_cli_config(args)
    config.campaigns.named(args.campaign)  # refused before Spark starts
    export_format(args.out)
    record = export_audience(
        build_spark_session(config.spark),
        config,
        args.campaign,
        as_of=args.as_of,
        destination=args.out,
        with_contact=args.with_contact,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(f"{record.rows} rows written to {record.destination}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from jobs.framework import run_job
    from jobs.publish import PUBLISH_JOB
    from pipeline_lib.ops.context import JobContext, new_run_id
    from pipeline_lib.session import build_spark_session

    if args.to:
        args.set.append(f"publish.url={args.to}")
    if args.schema:
        args.set.append(f"publish.schema={args.schema}")
    config = load_cli_config(args)
    spark = build_spark_session(config.spark, app_name=f"{config.spark.app_name} publish")
    ctx = JobContext(spark=spark, config=config, run_id=new_run_id(), full_refresh=args.force)
    result = run_job(PUBLISH_JOB, ctx)
    for table, outcome in result.details.get("tables", {}).items():
        print(f"{table:24} {outcome}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from jobs.recommend import print_recommendations
    from pipeline_lib.session import build_spark_session

    config = load_cli_config(args)
    print_recommendations(
        build_spark_session(config.spark), config.paths.lake, args.customer_id, as_of=args.as_of
    )
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from jobs.graph import JOB_GRAPH, upstream_jobs

    for spec in JOB_GRAPH:
        print(f"{spec.qualified_name:28} {spec.description}")
        if args.verbose:
            print(f"{'':28}   reads {', '.join(spec.inputs)}; writes {', '.join(spec.outputs)}")
            after = upstream_jobs(spec)
            print(f"{'':28}   after {', '.join(after) if after else '(nothing)'}")
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "run": cmd_run,
    "stream": cmd_stream,
    "summary": cmd_summary,
    "status": cmd_status,
    "maintain": cmd_maintain,
    "forget-customer": cmd_forget_customer,
    "export-audience": cmd_export_audience,
    "publish": cmd_publish,
    "recommend": cmd_recommend,
    "jobs": cmd_jobs,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the command, and turn any failure into one line and an exit code."""
    from jobs.framework import JobFailedError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, JobFailedError, ValueError) as err:
        print(f"ecom-pipeline: error: {err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ConfigError) else EXIT_FAILED
    except KeyboardInterrupt:
        print("ecom-pipeline: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        from jobs.framework import one_line

        print(f"ecom-pipeline: error: {one_line(err)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
