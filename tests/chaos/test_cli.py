"""``lakehouse-chaos`` refuses bad settings with exit 2 before starting anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lakehouse_common.lifecycle import ExitCode

CLI = Path(sys.executable).with_name("lakehouse-chaos")


def test_bad_settings_exit_2_naming_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "CHAOS_WORK_DIR": str(tmp_path / "chaos"), "CHAOS_DWELL_MIN_SECONDS": "9", "CHAOS_DWELL_MAX_SECONDS": "1"}
    result = subprocess.run([str(CLI), "--cycles", "0"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == ExitCode.BAD_CONFIGURATION, result.stderr
    assert "CHAOS_CYCLES" in result.stderr
    assert not (tmp_path / "chaos").exists()  # nothing was started


def test_help_lists_the_options() -> None:
    result = subprocess.run([str(CLI), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "--cycles" in result.stdout
