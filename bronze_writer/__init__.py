"""Kafka to Delta bronze tables, exactly once, with Polars and Arrow.

Stages, one module each: ``decode`` (records to a frame, vectorized), ``schema`` (typing
against the table, rescue), ``tables`` (exactly-once Delta commits, dead letters, ingest
log), ``lander`` (one micro-batch end to end), ``app`` (the consumer loop), ``maintenance``
(compact, vacuum, status) and ``cli`` (``bronze-writer``).
"""

from bronze_writer.app import BronzeWriter
from bronze_writer.settings import BronzeSettings

__all__ = ["BronzeSettings", "BronzeWriter"]
