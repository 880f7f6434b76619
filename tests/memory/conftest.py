"""Memory fixtures: stores on both databases, tenants of the example finance pack, and the minilm model
loaded once per session (one torch thread)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from memkit import make_tenant

from breakdesk.store import Store


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def tenant_factory(store: Store) -> Callable[..., Any]:
    return lambda changes=None: make_tenant(store, changes)


@pytest.fixture(scope="session")
def minilm() -> Any:
    """The minilm embedder, loaded once per session on one thread (the [semantic] extra is required:
    CI installs it, so a missing extra fails instead of skipping)."""
    import torch

    from breakdesk.memory.embedders import MiniLMEmbedder

    torch.set_num_threads(1)
    emb = MiniLMEmbedder(threads=1)
    emb.encode(["warm up"])
    return emb
