"""Fixtures for the tool-execution tests (defined in tool_fixtures, shared with tests/approvals)."""

from tool_fixtures import *  # noqa: F403
