"""The demo: the whole pipeline on one machine (``make demo``, ``lakehouse-demo``).

Starts Kafka and the MongoDB stand-in (or uses ``MONGO_URI``), loads the generator's data,
runs cdc-service and bronze-writer while the data changes, waits until bronze has caught up,
runs dbt, and checks that silver holds what MongoDB holds. See docs/runbook.md.
"""

from demo.run import DemoError, DemoRun
from demo.settings import DemoSettings

__all__ = ["DemoError", "DemoRun", "DemoSettings"]
