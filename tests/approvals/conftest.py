"""The approval tests share the tool server and fixtures of tests/tools."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from tool_fixtures import *  # noqa: F403
