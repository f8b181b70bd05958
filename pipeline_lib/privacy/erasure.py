"""Right to erasure, the pure parts: what identifies a customer, and how each table is scrubbed.

:mod:`jobs.erasure` finds the customer's identifiers (their ``customer_id``, every e-mail,
phone number and e-mail hash they ever had, and the devices they used), turns them into a
one-row *needles* DataFrame (:data:`NEEDLES_SCHEMA`, :meth:`CustomerIdentifiers.needles_row`)
and runs, per table, the :func:`plan_scrub` of that table as ONE Delta MERGE of the table
with the needles. Every expression here reads the identifiers from the needles' columns,
never from literals: Delta writes the MERGE's conditions into the table's ``_delta_log``
(``commitInfo``), and an erasure must not write the customer's id there in clear.

How a table is scrubbed (``docs/erasure.md``):

- **Customer tables** (:data:`CUSTOMER_TABLES`: rows that *are* the customer, every SCD2
  version): a row whose ``customer_id`` is the customer's, whose e-mail or e-mail hash is
  one of theirs, or whose raw text mentions them, is deleted.
- **Activity tables** (orders, clicks, facts, quarantined rows...): the row stays, anonymous:
  ``customer_id`` becomes null (``customer_sk`` the unknown member ``-1``, the stitched flag
  false), address columns of the row (:data:`PERSONAL_ACTIVITY_COLUMNS`) become null, and
  the ``anonymous_id`` and ``session_id`` of every event of the customer's devices are
  replaced by pseudonyms (:func:`pseudonym`), so sessions stay intact but unlinkable.
- **Everywhere**: a raw text column (:data:`RAW_TEXT_COLUMNS`) that mentions the customer
  becomes null (a corrupt record holds all of its fields, so the whole text goes); any
  other text that mentions them has the mention replaced by :data:`ERASED_TEXT`.

"Mentions" means the text contains the customer id, one of their e-mails (any case), one
of their phone numbers or one of their device ids, as a whole token (not inside a longer
id or number).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.bronze.schemas import CORRUPT_RECORD, INGEST_DATE, INGESTED_AT, RESCUED_DATA, RUN_ID
from pipeline_lib.gold.dimensions import UNKNOWN_SK
from pipeline_lib.io.quality import QUARANTINE_RUN_ID, ROW_KEY
from pipeline_lib.silver.schemas import FAILED_RULES, QUARANTINED_AT

__all__ = [
    "CUSTOMER_TABLES",
    "ERASED_TEXT",
    "NEEDLES_SCHEMA",
    "PERSONAL_ACTIVITY_COLUMNS",
    "PSEUDONYM_PREFIX",
    "RAW_TEXT_COLUMNS",
    "STATS_PREFIX_CHARS",
    "CustomerIdentifiers",
    "ScrubPlan",
    "java_literal",
    "mentions",
    "plan_scrub",
    "pseudonym",
    "redact",
    "refers_to_customer",
]

# What replaces a mention of the customer inside a text that is kept.
ERASED_TEXT = "[erased]"
# Prefix of a pseudonymous device or session id written by an erasure.
PSEUDONYM_PREFIX = "erased-"
# Raw delivered text kept by bronze (and copied into quarantine): nulled whole when it mentions the customer.
RAW_TEXT_COLUMNS = (CORRUPT_RECORD, RESCUED_DATA)
# Tables whose rows are the customer themselves (every version): such rows are deleted.
CUSTOMER_TABLES = frozenset(
    {
        "bronze.customers",
        "silver.customers",
        "quarantine.customers",
        "gold.dim_customer",
        "gold.customer_segments",
        "gold.campaign_audiences",  # a member row is the customer (in every as-of date)
        "gold.recommendations",  # a customer's list is about them alone
    }
)
# Columns of an activity row (an order, an event) that describe the customer: nulled with the id.
PERSONAL_ACTIVITY_COLUMNS = ("ship_city",)
# Delta keeps min/max statistics of strings truncated to this many characters.
STATS_PREFIX_CHARS = 32

CUSTOMER_ID = "customer_id"
CUSTOMER_SK = "customer_sk"
IS_CUSTOMER_STITCHED = "is_customer_stitched"
DEVICE_ID = "anonymous_id"
SESSION_ID = "session_id"
EMAIL = "email"
EMAIL_HASH = "email_hash"

# The needles: one row, joined to every row of a table (names chosen not to clash with any table's).
ID_REGEX = "__erasure_id_regex"
EMAIL_REGEX = "__erasure_email_regex"
TEXT_REGEX = "__erasure_text_regex"
EMAIL_HASHES = "__erasure_email_hashes"
DEVICES = "__erasure_devices"
SALT = "__erasure_salt"
NEEDLES_SCHEMA = T.StructType(
    [
        T.StructField(ID_REGEX, T.StringType(), False),  # the id, alone in a customer_id value
        T.StructField(EMAIL_REGEX, T.StringType(), True),  # any of the e-mails; null without e-mails
        T.StructField(TEXT_REGEX, T.StringType(), False),  # a mention in free text
        T.StructField(EMAIL_HASHES, T.ArrayType(T.StringType(), False), False),
        T.StructField(DEVICES, T.ArrayType(T.StringType(), False), False),
        T.StructField(SALT, T.StringType(), False),  # this erasure's pseudonym salt
    ]
)

# Quarantine bookkeeping columns that are not part of a quarantined row's content
# (pipeline_lib.io.quality.quarantine_rows: its _row_key hashes the other columns).
_QUARANTINE_NOT_CONTENT = frozenset(
    {FAILED_RULES, QUARANTINED_AT, QUARANTINE_RUN_ID, ROW_KEY, INGESTED_AT, RUN_ID, INGEST_DATE}
)
# A mention is a whole token: not preceded or followed by a letter or digit.
_BEFORE = "(?<![A-Za-z0-9])"
_AFTER = "(?![A-Za-z0-9])"


@dataclass(frozen=True)
class CustomerIdentifiers:
    """Everything that identifies one customer in the lake.

    Attributes:
        customer_id: The id to erase (trimmed, never blank).
        emails: Every e-mail address the customer had (any version, as delivered).
        phones: Every phone number the customer had.
        email_hashes: Their ``email_hash`` values (silver and gold).
        devices: The ``anonymous_id`` of every device they used (trimmed).
    """

    customer_id: str
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    email_hashes: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.customer_id or self.customer_id != self.customer_id.strip():
            raise ValueError(f"customer id must be a non-blank, trimmed string, got {self.customer_id!r}")

    @property
    def id_regex(self) -> str:
        """Java regex: a ``customer_id`` value that is the id (surrounding blanks allowed)."""
        return f"^\\s*{java_literal(self.customer_id)}\\s*$"

    @property
    def email_regex(self) -> str | None:
        """Java regex: any of the e-mails, any case, as a whole token; None without e-mails."""
        emails = _distinct(e.strip() for e in self.emails)
        if not emails:
            return None
        return f"(?i){_BEFORE}(?:{'|'.join(java_literal(e) for e in emails)}){_AFTER}"

    @property
    def text_regex(self) -> str:
        """Java regex: a mention in free text (the id, an e-mail in any case, a phone, a device)."""
        plain = [
            java_literal(value)
            for value in (self.customer_id, *_distinct(self.phones), *_distinct(self.devices))
        ]
        emails = [f"(?i:{java_literal(e)})" for e in _distinct(e.strip() for e in self.emails)]
        return f"{_BEFORE}(?:{'|'.join([*plain, *emails])}){_AFTER}"

    @property
    def stats_regex(self) -> str:
        """Java regex: the first :data:`STATS_PREFIX_CHARS` characters of any identifier.

        What Delta's min/max statistics in ``_delta_log`` would hold of a value.
        """
        values = (self.customer_id, *self.phones, *self.devices, *self.email_hashes)
        plain = [java_literal(v[:STATS_PREFIX_CHARS]) for v in _distinct(values)]
        emails = [
            f"(?i:{java_literal(e[:STATS_PREFIX_CHARS])})" for e in _distinct(e.strip() for e in self.emails)
        ]
        return f"{_BEFORE}(?:{'|'.join([*plain, *emails])})"

    def needles_row(self, salt: str) -> tuple[object, ...]:
        """The one row of :data:`NEEDLES_SCHEMA` for these identifiers and ``salt``."""
        return (
            self.id_regex,
            self.email_regex,
            self.text_regex,
            _distinct(self.email_hashes),
            _distinct(d.strip() for d in self.devices),
            salt,
        )


@dataclass(frozen=True)
class ScrubPlan:
    """How to scrub one table, as conditions and values over the table's and the needles' columns.

    Attributes:
        table: ``layer.table``.
        delete_when: Rows to delete (customer tables), or None.
        update_when: Rows to update (those not deleted), or None.
        assignments: New value of each changed column (evaluated on the row before the update).
    """

    table: str
    delete_when: Column | None
    update_when: Column | None
    assignments: Mapping[str, Column]

    @property
    def affected_when(self) -> Column:
        """Rows the plan deletes or changes: what an erased table must no longer hold."""
        return _any(c for c in (self.delete_when, self.update_when) if c is not None)


def java_literal(text: str) -> str:
    r"""``text`` as a literal inside a Java regular expression (``\Q...\E`` quoting).

    >>> java_literal("a.b")
    '\\Qa.b\\E'
    """
    return "\\Q" + text.replace("\\E", "\\E\\\\E\\Q") + "\\E"


def mentions(column: Column, data_type: T.DataType, pattern: Column) -> Column:
    """True when a text inside ``column`` matches the regex in ``pattern``; never null.

    Strings are matched directly; arrays, maps (keys and values) and structs are searched
    recursively; other types never match. A null pattern matches nothing.
    """
    if isinstance(data_type, T.StringType):
        return F.coalesce(F.rlike(column, pattern), F.lit(False))
    if isinstance(data_type, T.ArrayType) and _holds_text(data_type):
        inner = data_type.elementType
        return F.coalesce(F.exists(column, lambda item: mentions(item, inner, pattern)), F.lit(False))
    if isinstance(data_type, T.MapType) and _holds_text(data_type):
        key_type, value_type = data_type.keyType, data_type.valueType
        in_keys = F.exists(F.map_keys(column), lambda key: mentions(key, key_type, pattern))
        in_values = F.exists(F.map_values(column), lambda value: mentions(value, value_type, pattern))
        return F.coalesce(in_keys | in_values, F.lit(False))
    if isinstance(data_type, T.StructType) and _holds_text(data_type):
        return _any(mentions(column[f.name], f.dataType, pattern) for f in data_type.fields)
    return F.lit(False)


def redact(column: Column, data_type: T.DataType, pattern: Column) -> Column:
    """``column`` with every match of ``pattern`` in its texts replaced by :data:`ERASED_TEXT`.

    Same recursion as :func:`mentions`; map keys are kept. Null stays null; a value without
    a match comes back equal.
    """
    if isinstance(data_type, T.StringType):
        return F.regexp_replace(column, pattern, F.lit(ERASED_TEXT))
    if isinstance(data_type, T.ArrayType) and _holds_text(data_type):
        inner = data_type.elementType
        return F.transform(column, lambda item: redact(item, inner, pattern))
    if isinstance(data_type, T.MapType) and _holds_text(data_type.valueType):
        inner = data_type.valueType
        return F.transform_values(column, lambda _key, value: redact(value, inner, pattern))
    if isinstance(data_type, T.StructType) and _holds_text(data_type):
        fields = [redact(column[f.name], f.dataType, pattern).alias(f.name) for f in data_type.fields]
        return F.when(column.isNull(), F.lit(None).cast(data_type)).otherwise(F.struct(*fields))
    return column


def pseudonym(column: Column, salt: Column) -> Column:
    """``erased-`` and 32 hex digits of SHA-256(salt, value); null stays null.

    With a random salt that is discarded after the erasure, the pseudonym cannot be linked
    back to the value, yet every occurrence of one value gets the same pseudonym in that
    erasure, so the events of a device still form the same sessions.
    """
    digest = F.sha2(F.concat(salt, F.lit("\u001f"), column), 256)
    return F.when(column.isNull(), F.lit(None).cast(T.StringType())).otherwise(
        F.concat(F.lit(PSEUDONYM_PREFIX), F.substring(digest, 1, 32))
    )


def refers_to_customer(column: Column) -> Column:
    """True when a ``customer_id`` value is the customer's id (needles column :data:`ID_REGEX`)."""
    return F.coalesce(F.rlike(column, F.col(ID_REGEX)), F.lit(False))


def plan_scrub(table: str, schema: T.StructType) -> ScrubPlan:
    """The scrub of one table (see the module docstring for the rules).

    Args:
        table: ``layer.table``, e.g. ``bronze.orders``.
        schema: The table's schema.

    Returns:
        The plan; its expressions read the customer's identifiers from the needles'
        columns (:data:`NEEDLES_SCHEMA`), so they apply to the table joined with them.
        ``update_when`` is None when no column of the table can hold the customer.
    """
    types = {f.name: f.dataType for f in schema.fields}
    text_pattern = F.col(TEXT_REGEX)
    text_columns = [name for name, data_type in types.items() if _holds_text(data_type)]
    mentioned = _any(mentions(F.col(_q(c)), types[c], text_pattern) for c in text_columns)

    delete_when: Column | None = None
    if table in CUSTOMER_TABLES:
        delete_when = _is_customer_row(types) | _any(
            mentions(F.col(_q(c)), types[c], text_pattern) for c in RAW_TEXT_COLUMNS if c in types
        )
        update_when = mentioned
        assignments = {c: redact(F.col(_q(c)), types[c], text_pattern) for c in text_columns}
    else:
        refers = refers_to_customer(F.col(CUSTOMER_ID)) if CUSTOMER_ID in types else F.lit(False)
        on_device = (
            F.coalesce(F.array_contains(F.col(DEVICES), F.trim(F.col(DEVICE_ID))), F.lit(False))
            if DEVICE_ID in types
            else F.lit(False)
        )
        update_when = refers | on_device | mentioned
        assignments = _activity_assignments(types, text_columns, refers, on_device)
    if not assignments:
        return ScrubPlan(table, delete_when, None, {})
    if table.startswith("quarantine.") and ROW_KEY in types:
        assignments[ROW_KEY] = _quarantine_row_key(schema, assignments)
    return ScrubPlan(table, delete_when, update_when, assignments)


# --- helpers -------------------------------------------------------------------------------


def _activity_assignments(
    types: Mapping[str, T.DataType], text_columns: list[str], refers: Column, on_device: Column
) -> dict[str, Column]:
    """New values of an activity row: the customer and their devices out, mentions redacted."""
    text_pattern = F.col(TEXT_REGEX)
    assignments: dict[str, Column] = {}
    for name in text_columns:
        current, data_type = F.col(_q(name)), types[name]
        redacted = redact(current, data_type, text_pattern)
        if name in (CUSTOMER_ID, *PERSONAL_ACTIVITY_COLUMNS):
            assignments[name] = F.when(refers, F.lit(None).cast(data_type)).otherwise(redacted)
        elif name in (DEVICE_ID, SESSION_ID):
            assignments[name] = F.when(on_device, pseudonym(current, F.col(SALT))).otherwise(redacted)
        elif name in RAW_TEXT_COLUMNS:
            is_mentioned = mentions(current, data_type, text_pattern)
            assignments[name] = F.when(is_mentioned, F.lit(None).cast(data_type)).otherwise(current)
        else:
            assignments[name] = redacted
    if CUSTOMER_SK in types and CUSTOMER_ID in types:
        unknown = F.lit(UNKNOWN_SK).cast(types[CUSTOMER_SK])
        assignments[CUSTOMER_SK] = F.when(refers, unknown).otherwise(F.col(CUSTOMER_SK))
    if IS_CUSTOMER_STITCHED in types and CUSTOMER_ID in types:
        stitched = F.col(IS_CUSTOMER_STITCHED)
        assignments[IS_CUSTOMER_STITCHED] = F.when(refers, F.lit(False)).otherwise(stitched)
    return assignments


def _is_customer_row(types: Mapping[str, T.DataType]) -> Column:
    """A row of a customer table that is the customer: their id, one of their e-mails or hashes."""
    conditions = []
    if CUSTOMER_ID in types:
        conditions.append(refers_to_customer(F.col(CUSTOMER_ID)))
    if EMAIL in types:
        conditions.append(F.coalesce(F.rlike(F.col(EMAIL), F.col(EMAIL_REGEX)), F.lit(False)))
    if EMAIL_HASH in types:
        conditions.append(F.coalesce(F.array_contains(F.col(EMAIL_HASHES), F.col(EMAIL_HASH)), F.lit(False)))
    return _any(conditions)


def _quarantine_row_key(schema: T.StructType, assignments: Mapping[str, Column]) -> Column:
    """The ``_row_key`` of a scrubbed quarantine row, as ``quarantine_rows`` would compute it.

    The fingerprint is the SHA-256 of the JSON of the row's content after the scrub; the
    occurrence number (after ``#``) is kept. So quarantining the scrubbed bronze row again
    (a full refresh of silver) finds it already there instead of adding it twice.
    """
    content = [
        assignments.get(f.name, F.col(_q(f.name))).alias(f.name)
        for f in schema.fields
        if f.name not in _QUARANTINE_NOT_CONTENT
    ]
    fingerprint = F.sha2(F.to_json(F.struct(*content)), 256)
    occurrence = F.element_at(F.split(F.col(ROW_KEY), "#"), -1)
    return F.concat_ws("#", fingerprint, occurrence)


def _q(name: str) -> str:
    return f"`{name}`"


def _distinct(values: Iterable[str]) -> list[str]:
    return sorted({v for v in values if v})


def _any(conditions: Iterable[Column]) -> Column:
    result = F.lit(False)
    for condition in conditions:
        result = result | condition
    return result


def _holds_text(data_type: T.DataType) -> bool:
    if isinstance(data_type, T.StringType):
        return True
    if isinstance(data_type, T.ArrayType):
        return _holds_text(data_type.elementType)
    if isinstance(data_type, T.MapType):
        return _holds_text(data_type.keyType) or _holds_text(data_type.valueType)
    if isinstance(data_type, T.StructType):
        return any(_holds_text(f.dataType) for f in data_type.fields)
    return False
