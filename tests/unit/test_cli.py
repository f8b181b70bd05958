"""The command line's own checks, which answer before any Spark session starts."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs.cli import EXIT_USAGE, as_of_dates, build_parser, main


def test_a_backfill_covers_every_day_of_its_range_oldest_first():
    args = build_parser().parse_args(["run", "--from", "2026-02-27", "--to", "2026-03-02"])

    assert as_of_dates(args) == [dt.date(2026, 2, 27) + dt.timedelta(days=n) for n in range(4)]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], [None]), (["--as-of", "2026-03-02"], [dt.date(2026, 3, 2)])],
)
def test_without_a_range_a_run_has_one_as_of_date(flags, expected):
    assert as_of_dates(build_parser().parse_args(["run", *flags])) == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--from", "2026-03-05", "--to", "2026-03-01"], "--from 2026-03-05 is after --to 2026-03-01"),
        (["--from", "2026-03-05"], "a backfill needs both --from DATE and --to DATE"),
        (["--to", "2026-03-05"], "a backfill needs both --from DATE and --to DATE"),
        (["--from", "2026-03-01", "--to", "2026-03-02", "--as-of", "2026-03-02"], "cannot be combined"),
    ],
)
def test_a_bad_backfill_range_is_refused_in_one_line(flags, message, capsys):
    code = main(["run", *flags])

    error = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert message in error
    assert error.count("\n") == 1


def test_a_malformed_date_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--from", "2026-13-01", "--to", "2026-03-02"])

    assert exit_info.value.code == EXIT_USAGE
    assert "expected a date YYYY-MM-DD, got '2026-13-01'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["no_such_campaign", "--out", "a.csv"],
            2,
            "unknown campaign 'no_such_campaign' (configured: winback_email",
        ),
        (["winback_email", "--out", "a.txt"], 1, "--out must end in .csv or .parquet, got 'a.txt'"),
    ],
)
def test_export_audience_refuses_bad_arguments_before_spark(
    args, code, message, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("ECOM_LAKE", str(tmp_path / "lake"))
    assert main(["export-audience", *args, "--as-of", "2026-03-04"]) == code
    assert message in capsys.readouterr().err
