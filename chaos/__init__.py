"""The chaos harness (``make chaos``, ``lakehouse-chaos``): faults against the real pipeline, then proof.

A workload gives every MongoDB write a sequence number while the harness SIGKILLs
cdc-service, bronze-writer, both at once and the Kafka broker, and pauses the broker past
the producer's delivery timeout. Then it proves that bronze holds every write exactly once,
that bronze replays to MongoDB's final state and, after a dbt build, that silver equals
MongoDB. Both delivery modes. ``docs/chaos.md`` describes the run and its result file.
"""

from chaos.settings import ChaosSettings

__all__ = ["ChaosSettings"]
