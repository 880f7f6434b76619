"""Similar cases of one stored exception with the tenant's policy applied — shared by the CLI and the API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from breakdesk.memory.index import Filters
from breakdesk.memory.service import Memory, SimilarResult
from breakdesk.pipeline.orchestrator import NoActivePacks, Orchestrator

DEFAULT_K = 5


async def similar_for(
    store: Any,
    tenant: str,
    exception_id: str,
    k: int | None,
    filters: Filters,
    packs_for: Callable[[str], Awaitable[Any]] | None = None,
) -> SimilarResult:
    """`k` defaults to the policy's `similarCases`; the policy's embedder is used for the vector side. Works
    without active packs too (lexical + structured only), since past cases outlive a deactivated policy.
    `packs_for` is a compiled-pack source (a server passes its orchestrator's cache)."""
    settings, domain, size = None, None, k
    try:
        packs = await (packs_for or Orchestrator(store, memory=False).active_packs)(tenant)
        settings, domain = packs.tenant.spec.embeddings, packs.domain
        size = k if k is not None else packs.tenant.spec.similarCases
    except NoActivePacks:
        pass
    return await Memory.shared(store).similar(
        tenant, exception_id, k=size if size is not None else DEFAULT_K, filters=filters, embeddings=settings,
        domain=domain,
    )
