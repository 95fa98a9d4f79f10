"""Kafka to Delta bronze tables, exactly once, with Polars and Arrow."""
