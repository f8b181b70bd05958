"""The one I/O package: every Delta read, write, MERGE and commit; the landing zone; state files.

Jobs touch tables only through these modules (``tests/unit/test_io_boundary.py`` fails when
one does not). The package imports nothing itself, so importing one module never loads the
others. Public API:

- :mod:`.delta`: ``table_path``, ``table_exists``, ``read_table``, ``write_table``, ``upsert``,
  ``append_new``, ``replace_groups``, ``create_empty_table``, ``table_version``,
  ``MergeCounts``; commit metadata (``commit_metadata``, ``read_commit``, ``recent_commits``);
  key checks (``require_columns``, ``assert_unique_keys``) and their errors.
- :mod:`.quality`: the quarantine (``write_quarantine``, ``resolve_quarantined``,
  ``resolve_all_but``) and ``ops.quality_metrics`` (``write_quality_metrics``,
  ``current_quality_metrics``).
- :mod:`.landing`: delivery files (``list_delivery_files``, ``read_deliveries``,
  ``csv_header``, ``parses_as_rfc4180``).
- :mod:`.storage`: facts about the lake and landing zone read without Spark
  (``delta_version``, ``landing_digest``, ``read_state``, ``write_state``).
- :mod:`.frames`: ``local_frame``, a few driver-held rows as a DataFrame.
- :mod:`.exports`: one file out of the lake (``write_single_file``, ``export_format``) and
  ``ops.audience_exports`` (``log_export``, ``ExportRecord``).
"""
