"""The ``ecom-pipeline`` command (also ``python -m jobs``).

Examples::

    ecom-pipeline generate --landing ./landing --start 2026-03-01 --days 7 --scale 0.02 --seed 7
    ecom-pipeline run --layer all
    ecom-pipeline run --layer silver --job orders --lake /data/lake
    ./spark-submit.sh --master spark://host:7077 -- run --layer all

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

    run = commands.add_parser("run", help="run pipeline jobs")
    run.add_argument("--layer", default="all", choices=["bronze", "silver", "gold", "all"])
    run.add_argument("--job", help="one job of the layer, e.g. orders or silver.orders")
    run.add_argument(
        "--as-of", type=_date, help="as-of date for gold aggregates (default: latest order date)"
    )
    run.add_argument("--full-refresh", action="store_true", help="rebuild the selected tables from scratch")
    _config_options(run)

    summary = commands.add_parser("summary", help="print the lake's tables and the gold headline numbers")
    _config_options(summary)

    status = commands.add_parser("status", help="latest run of each job, and how fresh each gold table is")
    _config_options(status)

    maintain = commands.add_parser("maintain", help="OPTIMIZE and VACUUM every table of the lake")
    _config_options(maintain)

    jobs_cmd = commands.add_parser("jobs", help="list the jobs")
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
    from pipeline_lib.generator import generate_landing

    report = generate_landing(
        args.landing,
        start=args.start,
        days=args.days,
        scale=args.scale,
        seed=args.seed,
        defect_rate=args.defect_rate,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    rows = sum(report.rows_by_source.values())
    clicks_per_second = report.rows_by_source.get("clicks", 0) / max(report.seconds, 1e-9)
    print(
        f"generated {rows} rows in {len(report.files)} files under {report.landing} "
        f"in {report.seconds:.1f}s ({clicks_per_second:,.0f} "
        f"click events/s); defects: {dict(report.defects)}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from jobs.framework import JobContext, new_run_id, run_job, select_jobs
    from pipeline_lib.session import build_spark_session

    config = load_cli_config(args)
    specs = select_jobs(args.layer, args.job)
    spark = build_spark_session(config.spark)
    ctx = JobContext(
        spark=spark, config=config, run_id=new_run_id(), as_of=args.as_of, full_refresh=args.full_refresh
    )
    ctx.progress(
        f"run {ctx.run_id}: {len(specs)} jobs, landing {config.paths.landing}, lake {config.paths.lake}"
    )
    for spec in specs:
        run_job(spec, ctx)
    return 0


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


def cmd_jobs(args: argparse.Namespace) -> int:
    from jobs.framework import registered_jobs

    for spec in registered_jobs():
        print(f"{spec.qualified_name:28} {spec.description}")
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "run": cmd_run,
    "summary": cmd_summary,
    "status": cmd_status,
    "maintain": cmd_maintain,
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
