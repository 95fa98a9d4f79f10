"""Spark with Delta: the session factory, and (with later issues) maintenance jobs and the dbt runner."""
