"""Default locations of a checkout's fetched artifacts, for settings defaults.

The services read every location from their settings; these are only the defaults, so a
development checkout works without configuration. Deployed images set the locations
explicitly (``LAKEHOUSE_CACHE_DIR`` and the services' own variables). ``local_stack``
builds on the same rule; the services never import ``local_stack``.
"""

from __future__ import annotations

import os
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Root of the setup's cache (JVM artifacts, tools); ``LAKEHOUSE_CACHE_DIR`` overrides it."""
    return Path(os.environ.get("LAKEHOUSE_CACHE_DIR", SOURCE_ROOT / ".cache")).resolve()


def jvm_component_dir(component: str) -> Path:
    """Where ``make setup`` puts one JVM component (``delta``, ``s3``, ``kafka``, ...)."""
    return cache_dir() / "jvm" / component


__all__ = ["SOURCE_ROOT", "cache_dir", "jvm_component_dir"]
