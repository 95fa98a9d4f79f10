"""The demo's tests share ``demo_support`` (settings on the session's broker and stand-in)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
