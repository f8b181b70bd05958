"""Personal data, the pure parts (the package imports nothing itself).

- :mod:`.pii`: pseudonymous keys with Spark built-ins (``hmac_sha256_hex``,
  ``normalize_email``, ``hmac_key``; ``HmacKeyMissingError``).
- :mod:`.erasure`: the right to erasure (``CustomerIdentifiers``, ``plan_scrub``,
  ``ScrubPlan``, ``refers_to_customer``): what identifies a customer and how each table is
  scrubbed.
"""
