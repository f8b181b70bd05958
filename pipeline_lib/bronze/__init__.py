"""Bronze, the pure parts (the package imports nothing itself).

- :mod:`.schemas`: the landing contract (``LANDING_SOURCES``, ``LandingSource``) and the
  lineage columns every bronze row carries (``SOURCE_FILE``, ``INGEST_DATE``,
  ``INGESTED_AT``, ``RUN_ID``, ``CORRUPT_RECORD``, ``RESCUED_DATA``).
- :mod:`.transforms`: a delivered file's rows to bronze rows (``align_csv_to_contract``,
  ``parse_json_lines``, ``conform_to_bronze``, ``with_lineage``, ``with_run_lineage``).
"""
