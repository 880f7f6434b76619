"""What the CLI and the API ask the memory for, with the tenant's policy applied: the similar cases of one
stored exception, and how far the background indexer has got."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from breakdesk.memory.embedders import embedder_name
from breakdesk.memory.index import Filters
from breakdesk.memory.service import Memory, SimilarResult
from breakdesk.memory.text import pack_rendering
from breakdesk.pipeline.orchestrator import NoActivePacks, Orchestrator
from breakdesk.store.cases import rerender_position

DEFAULT_K = 5


async def _active_packs(store: Any, tenant: str, packs_for: Callable[[str], Awaitable[Any]] | None) -> Any | None:
    """The tenant's active packs from `packs_for` (a server's orchestrator cache) or the store; None without
    any: past cases outlive a deactivated policy."""
    try:
        return await (packs_for or Orchestrator(store, memory=False).active_packs)(tenant)
    except NoActivePacks:
        return None


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
    packs = await _active_packs(store, tenant, packs_for)
    if packs is not None:
        settings, domain = packs.tenant.spec.embeddings, packs.domain
        size = k if k is not None else packs.tenant.spec.similarCases
    return await Memory.shared(store).similar(
        tenant, exception_id, k=size if size is not None else DEFAULT_K, filters=filters, embeddings=settings,
        domain=domain,
    )


@dataclass(frozen=True, slots=True)
class MemoryStatus:
    """How far the background indexer has got with one tenant: what is indexed, what it has yet to look at,
    embed or render again. All zero and False once it has caught up."""

    cases: int
    #: entries of the tenant's audit chain it has yet to look at (each change to an exception is one: exceptions
    #: to index, cases to render again)
    behind: int
    #: the tenant policy's embedder (`Embedder.name`), None for lexical and structured search only
    embedder: str | None
    #: cases without a vector of that embedder yet (0 without one)
    to_embed: int
    #: whether the active domain pack renders some cases differently and they are not all checked yet
    rerender_pending: bool
    #: cases the re-rendering walk has yet to read (0 when none is pending); the rows it re-rendered count
    #: until it reads them again further on, so this falls to 0 as the walk ends, not steadily
    to_rerender: int = 0

    def as_dict(self) -> dict[str, Any]:
        """As the API shows it (`MemoryStatusOut`) and `breakdesk memory status --json` prints it."""
        return {"cases": self.cases, "behind": self.behind, "embedder": self.embedder, "toEmbed": self.to_embed,
                "rerenderPending": self.rerender_pending, "toRerender": self.to_rerender}


async def memory_status(store: Any, tenant: str, packs_for: Callable[[str], Awaitable[Any]] | None = None
                        ) -> MemoryStatus:
    """The tenant's `MemoryStatus`: a few small reads, nothing loaded (no resident index, no model)."""
    settings, rendering = None, None
    packs = await _active_packs(store, tenant, packs_for)
    if packs is not None:
        settings, rendering = packs.tenant.spec.embeddings, pack_rendering(packs.domain)
    state = await store.memory_state(tenant)
    head = (await store.audit_head(tenant))[0]
    name = embedder_name(settings)
    embedded = state.embedded_upto if state is not None and state.model == name else 0
    checked = rerender_position(state, rendering) if rendering is not None else None
    return MemoryStatus(
        cases=await store.count_cases(tenant),
        behind=max(0, head - (state.scanned_seq if state is not None else 0)),
        embedder=name,
        to_embed=await store.count_cases(tenant, embedded) if name is not None else 0,
        rerender_pending=checked is not None,
        to_rerender=await store.count_cases(tenant, checked) if checked is not None else 0,
    )
