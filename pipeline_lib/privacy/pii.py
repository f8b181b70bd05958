"""Pseudonymous keys for personal data: HMAC-SHA-256 with Spark built-ins only.

HMAC(K, m) = H((K' xor opad) || H((K' xor ipad) || m)) with H = SHA-256, block size 64
bytes, K' = K padded with zero bytes to 64 (or SHA-256(K) first when K is longer than 64
bytes). The key is known on the driver, so both padded keys are computed in Python and
enter the plan as binary literals; the message side runs as ``sha2``/``unhex``/``concat``
on the executors. No Python UDF is involved.

The key comes from the environment variable named by ``privacy.hmac_key_env``. Without it,
and only when ``privacy.allow_insecure_default_key`` is true (local development), the
documented :data:`INSECURE_DEFAULT_KEY` is used with a warning: hashes made with it are
not secret, since anybody can recompute them from a guessed e-mail.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Mapping

from pyspark.sql import Column
from pyspark.sql import functions as F

__all__ = [
    "INSECURE_DEFAULT_KEY",
    "PII_COLUMNS",
    "HmacKeyMissingError",
    "hmac_key",
    "hmac_sha256_hex",
    "normalize_email",
    "sha256_hex",
]

log = logging.getLogger(__name__)

INSECURE_DEFAULT_KEY = b"ecom-lakehouse-insecure-local-key"
# Personal data in clear (a person's e-mail, name, phone, address): in silver.customers only,
# never in gold, and never in a table's column statistics.
PII_COLUMNS = ("email", "first_name", "last_name", "phone", "postal_code")
_BLOCK = 64


class HmacKeyMissingError(RuntimeError):
    """The HMAC key's environment variable is not set and the insecure default is not allowed."""


def hmac_key(
    env_var: str, *, allow_insecure_default: bool, environ: Mapping[str, str] | None = None
) -> bytes:
    """The HMAC key from ``env_var`` (UTF-8), or the insecure default when allowed.

    Raises:
        HmacKeyMissingError: The variable is unset or empty and the default is not allowed.
    """
    environ = os.environ if environ is None else environ
    value = environ.get(env_var, "")
    if value:
        return value.encode("utf-8")
    if not allow_insecure_default:
        raise HmacKeyMissingError(
            f"the e-mail hash key is missing: set the environment variable {env_var} "
            f"(or allow privacy.allow_insecure_default_key, for local development only)"
        )
    warnings.warn(
        f"{env_var} is not set: hashing e-mails with the documented INSECURE default key "
        f"(privacy.allow_insecure_default_key is true); never use this outside local development",
        stacklevel=2,
    )
    return INSECURE_DEFAULT_KEY


def normalize_email(email: Column | str) -> Column:
    """The e-mail trimmed and lower-cased; blank becomes null."""
    column = F.col(email) if isinstance(email, str) else email
    trimmed = F.lower(F.trim(column))
    return F.when(trimmed == "", F.lit(None).cast("string")).otherwise(trimmed)


def hmac_sha256_hex(message: Column | str, *, key: bytes) -> Column:
    """HMAC-SHA-256 of a string column's UTF-8 bytes, as 64 lower-case hex digits; null stays null.

    Equal to ``hmac.new(key, message.encode(), hashlib.sha256).hexdigest()``.
    """
    column = F.col(message) if isinstance(message, str) else message
    block_key = hashlib.sha256(key).digest() if len(key) > _BLOCK else key
    block_key = block_key.ljust(_BLOCK, b"\x00")
    inner_pad = bytes(b ^ 0x36 for b in block_key)
    outer_pad = bytes(b ^ 0x5C for b in block_key)
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), column.cast("binary")), 256))
    return F.sha2(F.concat(F.lit(outer_pad), inner), 256)


def sha256_hex(message: Column | str) -> Column:
    """Plain SHA-256 of a string column's UTF-8 bytes, 64 lower-case hex digits; null stays null.

    Unkeyed, as ad platforms expect for customer matching (Google Customer Match, Meta
    Custom Audiences hash ``normalize_email(email)`` this way): anybody can recompute it from
    a guessed address, so it is an export format, never a pseudonym for the lake (the lake
    uses :func:`hmac_sha256_hex`). Equal to ``hashlib.sha256(message.encode()).hexdigest()``.
    """
    column = F.col(message) if isinstance(message, str) else message
    return F.sha2(column, 256)
