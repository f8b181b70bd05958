"""The benchmark's index: one row per scale with the code measured, and the analysis linked when present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.report import ANALYSIS, index_markdown, write_index

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def committed_results() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*/bench.json"))]


def test_the_index_names_the_code_of_each_scale_and_links_the_analysis_only_when_given():
    results = committed_results()
    assert results, "no committed benchmark results"
    results[0] = {**results[0], "code": "abc1234"}
    results[-1] = {key: value for key, value in results[-1].items() if key != "code"}

    plain = index_markdown(results)
    linked = index_markdown(results, analysis=ANALYSIS)

    rows = [line for line in plain.splitlines() if line.startswith("| [")]
    assert len(rows) == len(results)
    assert rows[0].endswith("| abc1234 |")
    assert rows[-1].endswith("| ? |")  # results measured before the code was recorded
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
