"""E-mail pseudonymisation: HMAC-SHA-256 with built-ins, and the key's source."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pyspark.sql import functions as F

from pipeline_lib.privacy.pii import (
    INSECURE_DEFAULT_KEY,
    HmacKeyMissingError,
    hmac_key,
    hmac_sha256_hex,
    normalize_email,
)


@pytest.mark.parametrize("key", [b"k", b"secret-key-\xff", b"x" * 64, b"y" * 100])
def test_hmac_matches_python_hmac(spark, key):
    messages = ["anna@example.com", "", "ünïcode@exämple.de", None]
    source = spark.createDataFrame([(m,) for m in messages], "email string")
    actual = [r["h"] for r in source.select(hmac_sha256_hex("email", key=key).alias("h")).collect()]
    expected = [
        None if m is None else hmac.new(key, m.encode(), hashlib.sha256).hexdigest() for m in messages
    ]
    assert actual == expected


def test_normalize_email_trims_and_lowers(spark):
    source = spark.createDataFrame([("  Anna@Example.COM ",), ("   ",), (None,)], "email string")
    actual = [r["e"] for r in source.select(normalize_email(F.col("email")).alias("e")).collect()]
    assert actual == ["anna@example.com", None, None]


def test_hmac_key_from_environment():
    assert hmac_key("K", allow_insecure_default=False, environ={"K": "abc"}) == b"abc"


def test_hmac_key_insecure_default_warns():
    with pytest.warns(UserWarning, match="INSECURE"):
        assert hmac_key("K", allow_insecure_default=True, environ={}) == INSECURE_DEFAULT_KEY


def test_hmac_key_missing_raises():
    with pytest.raises(HmacKeyMissingError, match="set the environment variable K"):
        hmac_key("K", allow_insecure_default=False, environ={"K": ""})
