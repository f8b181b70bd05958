"""The keys and comments ``publish`` puts on the gold tables are the documented ones."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline_lib.gold.catalog import COLUMN_COMMENTS, GOLD_KEYS, TABLE_COMMENTS, column_comments
from pipeline_lib.gold.schemas import GOLD_SCHEMAS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_gold_table_has_a_key_and_a_comment():
    assert set(GOLD_KEYS) == set(GOLD_SCHEMAS) == set(TABLE_COMMENTS)
    for table, keys in GOLD_KEYS.items():
        assert set(keys) <= set(GOLD_SCHEMAS[table].fieldNames()), table


def test_star_schema_keys_and_grains_are_those_of_docs_gold_md():
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", (DOCS / "gold.md").read_text(), re.M)
    documented = {table: (grain.strip(), re.findall(r"\w+", key)) for table, grain, key in rows}
    for table, (grain, key) in documented.items():
        assert TABLE_COMMENTS[table] == grain
        assert list(GOLD_KEYS[table]) == key


def test_column_comments_name_real_columns_and_prefer_the_table_s_own():
    every_column = {f.name for schema in GOLD_SCHEMAS.values() for f in schema.fields}
    for table, comments in COLUMN_COMMENTS.items():
        columns = every_column if table == "*" else set(GOLD_SCHEMAS[table].fieldNames())
        assert set(comments) <= columns, table
    orders = column_comments("fact_orders", GOLD_SCHEMAS["fact_orders"].fieldNames())
    assert orders["net_amount_base"].startswith("sum of the lines'")
    assert column_comments("dim_date", ["date_key", "nope"]) == {"date_key": "yyyymmdd"}
