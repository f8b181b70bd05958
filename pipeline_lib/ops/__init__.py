"""Operations: run records, what each job consumed, job locks, retries on Delta conflicts.

The package imports nothing itself. Public API:

- :mod:`.runs`: ``RunRecord``, ``record_runs`` (``ops.pipeline_runs``).
- :mod:`.watermarks`: ``consumed_metadata``, ``record_consumption``, ``processed_versions``,
  ``current_watermarks`` (incremental reads; the state committed with each job's data).
- :mod:`.locks`: ``job_lock``, ``JobLockedError`` (one running instance per job).
- :mod:`.retry`: ``retry_on_conflict``, ``is_delta_conflict``,
  ``ConflictRetriesExhaustedError`` (a job Delta refused because another writer committed).
"""
