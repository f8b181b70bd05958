"""Shared PySpark library of the e-commerce lakehouse."""
