"""MongoDB change streams to Kafka: snapshot, stream, checkpoint, replay.

Entry points: ``CdcService(settings).run()`` and the ``cdc-service`` console script
(``cdc_service.cli``). docs/cdc_service.md describes configuration, commands, crash
semantics and failure handling.
"""

from cdc_service.service import CdcService
from cdc_service.settings import CdcSettings

__all__ = ["CdcService", "CdcSettings"]
