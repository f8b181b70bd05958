"""Analysis in notebooks (the package imports nothing itself).

- :mod:`.notebook`: ``open_lake`` (a Delta session on a lake, its tables by name), ``Lake``.
- :mod:`.queries`: the questions analysts ask of gold and ops, as ``DataFrame -> DataFrame``
  functions (sales, segments, popularity, funnels, quality and run history).
"""
