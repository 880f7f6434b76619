"""Similar past cases of an exception: what an operator looks at to see how the same problem was solved;
and how far the memory's background indexer has got with the tenant.

Search is confined to the caller's tenant by the memory itself (an index per tenant; every hit is checked
to belong to it), and an exception of another tenant is the same 404 as one that does not exist."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from breakdesk.api.auth import Principal
from breakdesk.api.deps import context, not_found, require
from breakdesk.api.problems import COMMON_PROBLEM_RESPONSES
from breakdesk.api.schemas import MemoryStatusOut, QueryDateTime, SimilarCaseOut, SimilarCases
from breakdesk.domain.models import ResolutionStatus, Severity
from breakdesk.memory import Filters, NotIndexed
from breakdesk.memory.lookup import memory_status, similar_for

router = APIRouter(prefix="/v1/tenants/{tenantId}", tags=["exceptions"], responses=COMMON_PROBLEM_RESPONSES)

TenantPath = Annotated[str, Path(alias="tenantId", min_length=1, max_length=100)]
ExceptionPath = Annotated[str, Path(alias="exceptionId", min_length=1, max_length=200)]
Text = Annotated[str, Query(max_length=200)]


@router.get(
    "/exceptions/{exceptionId}/similar",
    response_model=SimilarCases,
    summary="Past cases most like this exception, with scores, why they match and how they were resolved",
)
async def get_similar(
    request: Request,
    tenant_id: TenantPath,
    exception_id: ExceptionPath,
    principal: Annotated[Principal, Depends(require("exceptions.read"))],
    k: Annotated[
        int | None, Query(ge=1, le=50, description="How many (default: the policy's similarCases, 5 without active packs).")
    ] = None,
    type_: Annotated[list[Text] | None, Query(alias="type", max_length=50, description="Only these types.")] = None,
    severity: Annotated[list[Severity] | None, Query(description="Only these severities.")] = None,
    status: Annotated[list[ResolutionStatus] | None, Query(description="Only these statuses.")] = None,
    source: Annotated[list[Text] | None, Query(max_length=50, description="Only these source systems.")] = None,
    resolved: Annotated[bool, Query(description="Only cases with a recorded resolution.")] = False,
    since: Annotated[QueryDateTime | None, Query(description="Received at or after (ISO 8601).")] = None,
    until: Annotated[QueryDateTime | None, Query(description="Received before (ISO 8601).")] = None,
) -> SimilarCases:
    ctx = context(request)
    filters = Filters(
        types=tuple(type_ or ()),
        severities=tuple(s.value for s in severity or ()),
        statuses=tuple(s.value for s in status or ()),
        sources=tuple(source or ()),
        resolved_only=resolved,
        since=since,
        until=until,
    )
    try:
        result = await similar_for(ctx.store, tenant_id, exception_id, k, filters, ctx.orchestrator.active_packs)
    except NotIndexed:
        raise not_found("exception") from None
    return SimilarCases(
        exception_id=result.exception_id,
        model=result.model,
        vector_source=result.vector_source,
        indexed_cases=result.indexed_cases,
        query_embedding_ms=round(result.query_embedding_ms, 3),
        search_ms=round(result.search_ms, 3),
        items=[
            SimilarCaseOut(
                exception_id=h.exception_id, score=round(h.score, 4), why=h.why, exception_type=h.exception_type,
                status=h.status, severity=h.severity, resolution=h.resolution, lexical=round(h.lexical, 4),
                semantic=None if h.semantic is None else round(h.semantic, 4), matched_terms=list(h.matched_terms),
                shared_entities=list(h.shared_entities),
            )
            for h in result.hits
        ],
    )


@router.get(
    "/memory",
    response_model=MemoryStatusOut,
    summary="How far the similar-case memory's indexer has got: changes to look at, cases to embed or render again",
)
async def get_memory_status(
    request: Request,
    tenant_id: TenantPath,
    principal: Annotated[Principal, Depends(require("exceptions.read"))],
) -> MemoryStatusOut:
    ctx = context(request)
    return MemoryStatusOut(**(await memory_status(ctx.store, tenant_id, ctx.orchestrator.active_packs)).as_dict())
