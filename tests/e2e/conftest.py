"""End-to-end fixtures: each example tenant's run is done once per session and shared by the tests."""

from __future__ import annotations

import pytest
from e2e_harness import Runs


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("e2e-runs"))
