"""The configuration reference is generated from the settings models and must stay current."""

from __future__ import annotations

import subprocess
import sys

from lakehouse_common import config_reference


def test_checked_in_reference_matches_the_settings_models():
    # A stale reference fails here with the command that fixes it.
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse_common.config_reference", "--check"],
        capture_output=True,
        text=True,
        cwd=config_reference.PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_every_service_has_a_section_and_secrets_are_marked():
    text = config_reference.render()
    for service in config_reference.DOCUMENTED:
        assert f"## {service}" in text
    assert "`CDC_MONGO_URI` 🔒" in text
    assert "`CDC_KAFKA__SASL_PASSWORD` 🔒" in text


def test_nested_settings_become_double_underscore_variables():
    variables = config_reference.environment_variables("bronze-writer")
    assert "BRONZE_KAFKA__BOOTSTRAP_SERVERS" in variables
    assert not any(variable.endswith("__") for variable in variables)


def test_defaults_do_not_leak_the_checkout_location():
    assert str(config_reference.PROJECT_ROOT) not in config_reference.render()
