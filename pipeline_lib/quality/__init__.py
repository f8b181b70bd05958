"""The data-quality engine: rules declared as data, checked with Spark built-ins.

:mod:`.rules` (``with_rule_results``, ``split_by_quality``, ``quality_metrics``,
``enforce_thresholds``, ``QualityThresholdError``) marks each row with the rules of
``conf/quality_rules.yaml`` it fails, splits clean rows from quarantined ones and measures
each delivery. Writing the quarantine and the metrics is I/O: :mod:`pipeline_lib.io.quality`.
"""
