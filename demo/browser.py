"""Headless Chromium (Debian's ``chromium`` package, installed by ``make setup``) for the report.

The demo takes the report's screenshot with it, and the tests load the report in it to
check that the page renders and its charts drew their data. Every flag that lets Chromium
reach out is off (background networking, component updates, sync, QUIC), and host names
resolve to nothing, so a page that needed the network would show it: the report must not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")

# Without the background-networking flags Chromium stalls on a closed network.
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


class BrowserError(RuntimeError):
    """Chromium is missing, failed, or produced nothing."""


def find_chromium() -> str | None:
    """``CHROMIUM`` from the environment, else Debian's ``/usr/bin/chromium``, else one on PATH."""
    configured = os.environ.get("CHROMIUM")
    for candidate in (configured,) if configured else CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _run(page: Path, *flags: str, timeout: float) -> subprocess.CompletedProcess[str]:
    chromium = find_chromium()
    if chromium is None:
        raise BrowserError("no Chromium found: `make setup` installs Debian's chromium package")
    with tempfile.TemporaryDirectory(prefix="lakehouse-chromium-") as profile:
        argv = [
            chromium,
            *BASE_FLAGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *flags,
            page.resolve().as_uri(),
        ]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as error:
            raise BrowserError(f"Chromium did not finish within {timeout:.0f}s") from error
    if result.returncode != 0:
        raise BrowserError(f"Chromium exited {result.returncode}: {result.stderr[-2000:]}")
    return result


def rendered_dom(page: Path, timeout: float = 180.0, budget_ms: int = 20000) -> tuple[str, str]:
    """The page's DOM after its scripts ran, and Chromium's log (console messages included)."""
    result = _run(page, f"--virtual-time-budget={budget_ms}", "--dump-dom", timeout=timeout)
    return result.stdout, result.stderr


def screenshot(
    page: Path, png: Path, width: int = 1400, height: int = 2600, timeout: float = 180.0, budget_ms: int = 20000
) -> Path:
    """A PNG of the page at ``width`` x ``height`` CSS pixels, after its scripts ran."""
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    _run(
        page,
        f"--virtual-time-budget={budget_ms}",
        f"--window-size={width},{height}",
        f"--screenshot={png.resolve()}",
        timeout=timeout,
    )
    if not png.exists() or png.stat().st_size == 0:
        raise BrowserError(f"Chromium wrote no screenshot to {png}")
    return png


__all__ = ["BASE_FLAGS", "BrowserError", "find_chromium", "rendered_dom", "screenshot"]
