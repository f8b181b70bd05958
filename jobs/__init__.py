"""Entry points of the lakehouse jobs."""
