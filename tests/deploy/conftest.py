"""Fixtures for the deployment tests: the compose file, and the chart rendered with each ci/*-values.yaml."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # deploy_support, shared by the tests of this package

from deploy_support import CI_VALUES, COMPOSE_FILE, render  # noqa: E402


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Manifests by values file name (default-values, minimal-values, production-values)."""
    return {path.name.removesuffix(".yaml"): render(path) for path in CI_VALUES}
