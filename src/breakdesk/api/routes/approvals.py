"""Approval requests: list and read them, approve (optionally with edited arguments) or reject.

The rules (four-eyes, allowed roles, N-of-M, TTL, exactly-once resumption) live in `breakdesk.approvals`;
this module only maps a caller onto them. The caller's actor is its credential (`apikey:<id>` or
`jwt:<sub>`), and it holds its role and every role below it, so an admin may decide what an approver may.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from breakdesk.api import convert
from breakdesk.api.auth import Principal
from breakdesk.api.body import read_body, require_json, validate
from breakdesk.api.deps import ApiContext, context
from breakdesk.api.deps import require as require_permission
from breakdesk.api.problems import COMMON_PROBLEM_RESPONSES, ApiProblem, kind_for_status, problem_openapi
from breakdesk.api.rbac import Role
from breakdesk.api.schemas import (
    ApprovalDecisionOut,
    ApprovalOut,
    ApprovalPage,
    ApproveRequest,
    RejectRequest,
)
from breakdesk.approvals.service import ApprovalError, Decision

router = APIRouter(prefix="/v1/tenants/{tenantId}", tags=["approvals"], responses=COMMON_PROBLEM_RESPONSES)

TenantPath = Annotated[str, Path(alias="tenantId", min_length=1, max_length=100)]
ApprovalPath = Annotated[str, Path(alias="approvalId", min_length=1, max_length=200)]
Status = Literal["PENDING", "APPROVED", "REJECTED", "EXPIRED"]
BODY_LIMIT = 256 * 1024

_DECISION_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: problem_openapi("Four-eyes or role rules refuse this caller (e.g. it requested the approval)."),
    409: problem_openapi("The request is no longer pending or has expired, its exception no longer waits for "
                         "approval, or (approving) this caller already voted."),
}


def held_roles(principal: Principal) -> list[str]:
    """A role includes every role below it (an admin can decide what an approver can)."""
    return [r.label for r in Role if r <= principal.role]


def _problem(exc: ApprovalError) -> ApiProblem:
    kind = kind_for_status(exc.status_code)
    if kind == "not-found":
        return ApiProblem(kind, "no such approval")
    return ApiProblem(kind, str(exc))


async def _body(request: Request, model: type[Any], optional: bool) -> Any:
    require_json(request)
    raw = await read_body(request, BODY_LIMIT)
    if optional and not raw.strip():
        return model()
    return validate(model, raw)


@router.get("/approvals", response_model=ApprovalPage, summary="Approval requests, newest first")
async def list_approvals(
    request: Request,
    tenant_id: TenantPath,
    principal: Annotated[Principal, Depends(require_permission("approvals.read"))],
    status: Annotated[list[Status] | None, Query(description="Repeat for several; default every status.")] = None,
    exception_id: Annotated[str | None, Query(alias="exceptionId", min_length=1, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> ApprovalPage:
    ctx = context(request)
    page, next_cursor = await ctx.approvals.list_approvals(
        tenant_id, status=status or None, exception_id=exception_id, limit=limit, cursor=cursor
    )
    return ApprovalPage(items=[convert.approval(a) for a in page], next_cursor=next_cursor)


@router.get("/approvals/{approvalId}", response_model=ApprovalOut, summary="One approval request")
async def get_approval(
    request: Request,
    tenant_id: TenantPath,
    approval_id: ApprovalPath,
    principal: Annotated[Principal, Depends(require_permission("approvals.read"))],
) -> ApprovalOut:
    ctx = context(request)
    try:
        return convert.approval(await ctx.approvals.get(tenant_id, approval_id))
    except ApprovalError as exc:
        raise _problem(exc) from None


async def _resume(ctx: ApiContext, decision: Decision, tenant_id: str, wait: bool) -> tuple[Any, bool]:
    """Hand the approved plan to the executor: inline with `?wait=true`, else in the background."""
    if decision.outcome != "approved" or ctx.execution is None:
        return None, False
    if wait:
        return convert.outcome(await ctx.execution.run(tenant_id, decision.approval.exception_id)), False
    ctx.runs.spawn(tenant_id, decision.approval.exception_id)
    return None, True


@router.post(
    "/approvals/{approvalId}/approve",
    response_model=ApprovalDecisionOut,
    summary="Approve (with optional edited arguments); the last needed vote resumes the plan",
    description="Four-eyes: whoever requested the approval, and automated actors, cannot decide it. With "
    "N-of-M approval each distinct person's vote counts once. The approved plan runs in the background "
    "(or inline with `?wait=true`), exactly once whatever the concurrency.",
    responses=_DECISION_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApproveRequest"}}},
        }
    },
)
async def approve(
    request: Request,
    tenant_id: TenantPath,
    approval_id: ApprovalPath,
    principal: Annotated[Principal, Depends(require_permission("approvals.decide"))],
    wait: Annotated[bool, Query(description="Run the resumed plan before answering.")] = False,
) -> ApprovalDecisionOut:
    ctx = context(request)
    body: ApproveRequest = await _body(request, ApproveRequest, optional=True)
    try:
        decision = await ctx.approvals.approve(
            tenant_id, approval_id, principal.actor, held_roles(principal), body.comment, body.edits, execute=False
        )
    except ApprovalError as exc:
        raise _problem(exc) from None
    execution, scheduled = await _resume(ctx, decision, tenant_id, wait)
    return ApprovalDecisionOut(
        outcome=decision.outcome,
        approval=convert.approval(decision.approval),
        execution=execution,
        execution_scheduled=scheduled,
    )


@router.post(
    "/approvals/{approvalId}/reject",
    response_model=ApprovalDecisionOut,
    summary="Reject with a reason: the exception is escalated (or closed with `close: true`)",
    responses=_DECISION_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RejectRequest"}}},
        }
    },
)
async def reject(
    request: Request,
    tenant_id: TenantPath,
    approval_id: ApprovalPath,
    principal: Annotated[Principal, Depends(require_permission("approvals.decide"))],
) -> ApprovalDecisionOut:
    ctx = context(request)
    body: RejectRequest = await _body(request, RejectRequest, optional=False)
    try:
        decision = await ctx.approvals.reject(
            tenant_id, approval_id, principal.actor, held_roles(principal), body.comment, close=body.close
        )
    except ApprovalError as exc:
        raise _problem(exc) from None
    return ApprovalDecisionOut(
        outcome="rejected", approval=convert.approval(decision.approval), execution=None, execution_scheduled=False
    )
