"""Exceptions: accept (durably, or processed inline with ?wait=true), list, read, events, human actions,
and the state of an accepted submission."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import TypeAdapter

from breakdesk.api import convert
from breakdesk.api.auth import Principal
from breakdesk.api.body import parse_json, read_body, require_json, validate
from breakdesk.api.deps import ApiContext, authorize, context, not_found, require
from breakdesk.api.problems import COMMON_PROBLEM_RESPONSES, ApiProblem, problem_openapi
from breakdesk.api.rbac import ACTION_PERMISSIONS
from breakdesk.api.schemas import (
    Accepted,
    AcceptedItem,
    ActionRequest,
    ActionResult,
    AssignAction,
    CloseAction,
    CommentAction,
    DecisionItem,
    Decisions,
    EventOut,
    EventPage,
    ExceptionDetail,
    ExceptionPage,
    IntakeStatus,
    OverrideSeverityAction,
    QueryDateTime,
    ReopenAction,
)
from breakdesk.domain.construct import said_ev
from breakdesk.domain.models import AgentDecision, ResolutionStatus, Severity
from breakdesk.pipeline.intake import intake
from breakdesk.pipeline.orchestrator import BatchReport, idempotency_key
from breakdesk.pipeline.types import Submission
from breakdesk.store import TERMINAL_STATUSES, AuditRow, Conflict, EventRow, IntakeItem, NotFound, QueueItem
from breakdesk.store._base import utcnow
from breakdesk.store.metrics import OVERRIDE_STAGE

router = APIRouter(prefix="/v1/tenants/{tenantId}", tags=["exceptions"], responses=COMMON_PROBLEM_RESPONSES)

TenantPath = Annotated[str, Path(alias="tenantId", min_length=1, max_length=100)]
ExceptionPath = Annotated[str, Path(alias="exceptionId", min_length=1, max_length=200)]
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"

TIMELINE_LIMIT = 500
AUDIT_LIMIT = 500


# ----------------------------------------------------------------------------------------------- accept


def _split(data: Any, tenant_id: str, max_items: int) -> tuple[list[dict[str, Any]], list[str | None]]:
    """Shape checks only: objects, item keys, tenant. Content problems surface later as rejected items."""
    if isinstance(data, list):
        items, prefix = data, "$"
    elif isinstance(data, dict) and set(data) == {"items"} and isinstance(data["items"], list):
        items, prefix = data["items"], "$.items"
    elif isinstance(data, dict):
        items, prefix = [data], None
    else:
        raise ApiProblem(
            "validation-error",
            "send one exception (a JSON object), an array of them, or {\"items\": [...]}",
            errors=[{"in": "body", "path": "$", "message": "expected an object or an array of objects"}],
        )
    if not items:
        raise ApiProblem(
            "validation-error", "the batch is empty", errors=[{"in": "body", "path": prefix or "$", "message": "no items"}]
        )
    if len(items) > max_items:
        raise ApiProblem("batch-too-large", f"{len(items)} items in one request; the limit is {max_items}")
    errors: list[dict[str, Any]] = []
    keys: list[str | None] = []
    for n, item in enumerate(items):
        where = "$" if prefix is None else f"{prefix}[{n}]"
        if not isinstance(item, dict):
            errors.append({"in": "body", "path": where, "message": "an exception must be a JSON object"})
            keys.append(None)
            continue
        if not item:
            errors.append({"in": "body", "path": where, "message": "the exception is empty"})
        key = item.get("idempotencyKey")
        if key is not None:
            if isinstance(key, bool) or not isinstance(key, str | int) or not str(key).strip() or len(str(key)) > 200:
                errors.append(
                    {"in": "body", "path": f"{where}.idempotencyKey", "message": "must be a string of 1 to 200 characters"}
                )
                key = None
            else:
                key = str(key).strip()
        keys.append(key)
        given = item.get("tenantId")
        if given is not None and given != tenant_id:
            errors.append({"in": "body", "path": f"{where}.tenantId", "message": "does not match the tenant in the path"})
    if errors:
        raise ApiProblem("validation-error", f"{len(errors)} problem(s) in the body", errors=errors)
    return items, keys


def _request_hash(raw: bytes, wait: bool) -> str:
    return hashlib.sha256(b"wait=%d\n" % int(wait) + raw).hexdigest()


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _status_url(tenant_id: str, queue_id: int) -> str:
    return f"/v1/tenants/{tenant_id}/intake/{queue_id}"


@router.post(
    "/exceptions",
    status_code=202,
    response_model=Accepted,
    summary="Submit one exception or a batch",
    description=(
        "Accepts one exception, an array, or `{\"items\": [...]}` (limits: the tenant's batch size and body size) "
        "into the durable intake queue and answers 202 with a queue id per item. With `?wait=true` the items are "
        "processed before answering (200 with each item's decision; at most `BREAKDESK_WAIT_MAX_ITEMS` items, 100 by "
        "default, else 413 `batch-too-large`). `Idempotency-Key` makes the whole request "
        "replayable; an item's own `idempotencyKey` dedupes it across requests."
    ),
    responses={
        200: {"model": Decisions, "description": "?wait=true: the decision for each item."},
        409: problem_openapi("?wait=true and the tenant has no active packs."),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Submission"}}},
        }
    },
)
async def submit(
    request: Request,
    tenant_id: TenantPath,
    principal: Annotated[Principal, Depends(require("exceptions.submit"))],
    wait: Annotated[bool, Query(description="Process before answering and return the decisions.")] = False,
    idempotency_key_header: Annotated[
        str | None, Header(alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_PATTERN)
    ] = None,
) -> Response:
    ctx = context(request)
    limits = await ctx.limits_for(tenant_id)
    require_json(request)
    raw = await read_body(request, limits.max_body_bytes)
    request_hash = _request_hash(raw, wait)
    if idempotency_key_header is not None:
        stored = await ctx.store.get_stored_response(tenant_id, idempotency_key_header)
        if stored is not None:
            if stored.request_hash != request_hash:
                raise ApiProblem(
                    "idempotency-key-reused",
                    "this Idempotency-Key was used for a different request; use a new key for a new request",
                )
            return _json(stored.status_code, stored.body, {"Idempotent-Replayed": "true"})
    items, item_keys = _split(parse_json(raw), tenant_id, limits.max_batch_items)
    if wait:
        if len(items) > ctx.settings.wait_max_items:
            raise ApiProblem(
                "batch-too-large", f"?wait=true takes at most {ctx.settings.wait_max_items} items; submit larger batches without it"
            )
        await ctx.orchestrator.active_packs(tenant_id)  # NoActivePacks: 409 before anything is queued
    intake_items = [
        IntakeItem(
            payload,
            f"item:{key}" if key is not None
            else (f"req:{idempotency_key_header}:{n}" if idempotency_key_header is not None else None),
        )
        for n, (payload, key) in enumerate(zip(items, item_keys, strict=True))
    ]
    queued = await ctx.accept.enqueue(tenant_id, intake_items)
    fresh = sum(1 for q in queued if not q.duplicate)
    ctx.metrics.accepted.inc(fresh)
    if wait:
        status, body = 200, (await _process_inline(ctx, tenant_id, items, [q.id for q in queued])).model_dump(
            mode="json", by_alias=True
        )
    else:
        accepted = Accepted(
            accepted=fresh,
            duplicates=len(queued) - fresh,
            items=[
                AcceptedItem(index=n, queue_id=q.id, duplicate=q.duplicate, status_url=_status_url(tenant_id, q.id))
                for n, q in enumerate(queued)
            ],
        )
        status, body = 202, accepted.model_dump(mode="json", by_alias=True)
        if ctx.worker is not None:
            ctx.worker.wake()
    if idempotency_key_header is not None:
        stored = await ctx.store.store_response(tenant_id, idempotency_key_header, request_hash, status, body)
        status, body = stored.status_code, stored.body
    headers = {"Location": _status_url(tenant_id, queued[0].id)} if len(queued) == 1 and status == 202 else None
    return _json(status, body, headers)


async def _process_inline(ctx: ApiContext, tenant_id: str, items: list[dict[str, Any]], queue_ids: list[int]) -> Decisions:
    now = utcnow()
    subs = [Submission(item, now, line=n, queue_id=qid) for n, (item, qid) in enumerate(zip(items, queue_ids, strict=True))]
    ctx.inline_queue_ids.update(queue_ids)
    try:
        report = await _process_retrying(ctx, tenant_id, subs)
        reasons = {r.line: r.reason for r in report.rejected}
        for line, reason in reasons.items():
            if line is not None:
                with contextlib.suppress(NotFound):  # rejected or finished before (a replayed item)
                    await ctx.store.mark_rejected(tenant_id, queue_ids[line], reason[:2000])
    finally:
        ctx.inline_queue_ids.difference_update(queue_ids)
    rows: dict[str, dict[str, Any]] = {}
    for outcome in report.items:
        if outcome.exception_id is not None and outcome.exception_id not in rows:
            row = await ctx.store.get_exception(tenant_id, outcome.exception_id)
            if row is not None:
                rows[outcome.exception_id] = row
    by_line = {o.line: o for o in report.items}
    out: list[DecisionItem] = []
    for n, qid in enumerate(queue_ids):
        o = by_line.get(n)
        if o is None:
            continue
        row = rows.get(o.exception_id or "")
        out.append(
            DecisionItem(
                index=n,
                queue_id=qid,
                outcome=o.outcome,
                exception_id=o.exception_id,
                exception_type=row["exception_type"] if row else None,
                severity=row["severity"] if row else None,
                status=row["status"] if row else None,
                actionability=row["actionability"] if row else None,
                playbook_id=row["playbook_id"] if row else None,
                approval_required=row["approval_required"] if row else None,
                reason=reasons.get(n),
            )
        )
    return Decisions(
        processed=report.processed,
        recurrences=report.recurrences,
        duplicates=report.duplicates,
        rejected=len(report.rejected),
        items=out,
    )


async def _process_retrying(ctx: ApiContext, tenant_id: str, subs: list[Submission]) -> BatchReport:
    """A concurrent writer of the same keys makes the first attempt conflict; the second one dedupes."""
    try:
        return await ctx.orchestrator.process(tenant_id, subs, dry_run=False)
    except Conflict:
        return await ctx.orchestrator.process(tenant_id, subs, dry_run=False)


# ------------------------------------------------------------------------------------------------ reads

Sort = Literal["-received_at", "received_at", "-updated_at", "updated_at", "-priority", "priority"]



@router.get("/exceptions", response_model=ExceptionPage, summary="List exceptions (filters, cursor pages, sort)")
async def list_exceptions(
    request: Request,
    response: Response,
    tenant_id: TenantPath,
    principal: Annotated[Principal, Depends(require("exceptions.read"))],
    status: Annotated[list[ResolutionStatus] | None, Query(description="Repeat for several.")] = None,
    type_: Annotated[list[Annotated[str, Query(max_length=200)]] | None, Query(alias="type", max_length=50)] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    source: Annotated[list[Annotated[str, Query(max_length=200)]] | None, Query(max_length=50)] = None,
    since: Annotated[QueryDateTime | None, Query(description="received at or after (ISO 8601)")] = None,
    until: Annotated[QueryDateTime | None, Query(description="received before (ISO 8601)")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in summary, exception id or source id.")] = None,
    sort: Sort = "-received_at",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> ExceptionPage:
    ctx = context(request)
    rows, next_cursor = await ctx.store.list_exceptions(
        tenant_id,
        status=[s.value for s in status] if status else None,
        exception_type=type_ or None,
        severity=[s.value for s in severity] if severity else None,
        source_system=source or None,
        since=since,
        until=until,
        text=q or None,
        limit=limit,
        cursor=cursor,
        sort=sort,
    )
    if next_cursor is not None:
        url = request.url.include_query_params(cursor=next_cursor)
        response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return ExceptionPage(items=[convert.summary(r) for r in rows], next_cursor=next_cursor)


async def _exception_or_404(ctx: ApiContext, tenant_id: str, exception_id: str) -> dict[str, Any]:
    row = await ctx.store.get_exception(tenant_id, exception_id)
    if row is None:
        raise not_found("exception")
    return row


@router.get(
    "/exceptions/{exceptionId}",
    response_model=ExceptionDetail,
    summary="One exception: record, decision timeline, evidence and audit entries",
)
async def get_exception(
    request: Request,
    tenant_id: TenantPath,
    exception_id: ExceptionPath,
    principal: Annotated[Principal, Depends(require("exceptions.read"))],
) -> ExceptionDetail:
    ctx = context(request)
    row = await _exception_or_404(ctx, tenant_id, exception_id)
    events = await ctx.store.get_events(tenant_id, exception_id)
    audit = await ctx.store.get_audit(tenant_id, subject=exception_id, limit=AUDIT_LIMIT + 1)
    shown = events[:TIMELINE_LIMIT]
    return ExceptionDetail(
        exception=convert.summary(row),
        record=row.get("record") or {},
        timeline=[convert.event(e) for e in shown],
        evidence=convert.evidence(shown),
        audit=[convert.audit_entry(a) for a in audit[:AUDIT_LIMIT]],
        events_truncated=len(events) > TIMELINE_LIMIT,
        audit_truncated=len(audit) > AUDIT_LIMIT,
    )


@router.get("/exceptions/{exceptionId}/events", response_model=EventPage, summary="The exception's event stream")
async def get_events(
    request: Request,
    tenant_id: TenantPath,
    exception_id: ExceptionPath,
    principal: Annotated[Principal, Depends(require("exceptions.read"))],
    after_seq: Annotated[int, Query(alias="afterSeq", ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> EventPage:
    ctx = context(request)
    events = await ctx.store.get_events(tenant_id, exception_id)
    if not events:
        await _exception_or_404(ctx, tenant_id, exception_id)
    page = [e for e in events if int(e["seq"]) > after_seq][: limit + 1]
    more = len(page) > limit
    page = page[:limit]
    return EventPage(items=[convert.event(e) for e in page], next_after_seq=int(page[-1]["seq"]) if more else None)


# ---------------------------------------------------------------------------------------------- actions

_ACTION_ADAPTER: TypeAdapter[Any] = TypeAdapter(ActionRequest)


@router.post(
    "/exceptions/{exceptionId}/actions",
    response_model=ActionResult,
    summary="A human action: assign, comment, close, reopen, override severity",
    description="`override_severity` needs the approver role; the other actions need operator.",
    responses={409: problem_openapi("The action does not fit the exception's state (e.g. closing a closed one).")},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActionRequest"}}},
        }
    },
)
async def act(
    request: Request,
    tenant_id: TenantPath,
    exception_id: ExceptionPath,
    principal: Annotated[Principal, Depends(require("exceptions.act"))],
) -> ActionResult:
    ctx = context(request)
    require_json(request)
    action = validate(_ACTION_ADAPTER, await read_body(request, 64 * 1024))
    authorize(principal, ACTION_PERMISSIONS[action.action])
    row = await _exception_or_404(ctx, tenant_id, exception_id)
    now = utcnow()
    stage, fields, payload, decision = _plan_action(action, row, now)
    detail = {k: v for k, v in payload.items() if k != "learning"}
    audit = AuditRow(principal.actor, f"exception.{action.action}", exception_id, now, detail)
    seqs = await ctx.store.append_events(
        tenant_id, exception_id, [EventRow(exception_id, stage, now, decision, payload)], [audit], fields=fields or None
    )
    updated = await _exception_or_404(ctx, tenant_id, exception_id)
    return ActionResult(
        exception=convert.summary(updated),
        event=EventOut(seq=seqs[0], stage=stage, at=now, decision=decision, payload=payload),
    )


def _decision(text: str, said: str | None, next_step: str, default: str | None = None) -> dict[str, Any]:
    """The action's decision: its evidence is what the person wrote (`said`) or, when they wrote nothing,
    `default` (the decision itself unless given), marked as filled in so it is never read as their words."""
    item = said_ev("human", said, default or text)
    return AgentDecision(decision=text, confidence=1.0, evidence=(item,), next_step=next_step).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )


def _plan_action(
    action: Any, row: dict[str, Any], now: datetime
) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(event stage, projection changes, event payload, decision) for one action; refuses impossible ones."""
    status = str(row["status"])
    record = dict(row.get("record") or {})
    if isinstance(action, AssignAction):
        payload = {"action": "assign", "assignee": action.assignee, "previous": row.get("assignee")}
        if action.comment:
            payload["comment"] = action.comment
        who = action.assignee or "nobody"
        decision = _decision(f"assigned to {who}", action.comment, "work")
        return "human.assign", {"assignee": action.assignee}, payload, decision
    if isinstance(action, CommentAction):
        return "human.comment", {}, {"action": "comment", "text": action.text}, _decision("comment", action.text, "none")
    if isinstance(action, CloseAction):
        if status == ResolutionStatus.CLOSED.value:
            raise ApiProblem("invalid-state", "the exception is already closed")
        record["resolutionStatus"] = ResolutionStatus.CLOSED.value
        payload = {"action": "close", "previousStatus": status, "reason": action.reason, "resolution": action.resolution}
        fields = {"status": ResolutionStatus.CLOSED.value, "resolved_at": now, "record": record}
        decision = _decision("closed", action.reason, "none", "closed by a person")
        return "human.close", fields, payload, decision
    if isinstance(action, ReopenAction):
        if status not in TERMINAL_STATUSES:
            raise ApiProblem("invalid-state", f"only a closed, resolved or failed exception can be reopened (it is {status})")
        record["resolutionStatus"] = ResolutionStatus.TRIAGED.value
        payload = {"action": "reopen", "previousStatus": status, "reason": action.reason}
        fields = {"status": ResolutionStatus.TRIAGED.value, "resolved_at": None, "record": record}
        decision = _decision("reopened", action.reason, "human_review", "reopened by a person")
        return "human.reopen", fields, payload, decision
    assert isinstance(action, OverrideSeverityAction)
    previous = row.get("severity")
    new = action.severity.value
    if previous == new:
        raise ApiProblem("invalid-state", f"the severity is already {new}")
    record["severity"] = new
    learning = {
        "kind": "severity-override",
        "exceptionType": row.get("exception_type"),
        "fingerprint": row.get("fingerprint"),
        "from": previous,
        "to": new,
        "domainPack": row.get("domain_pack"),
        "tenantPolicy": row.get("tenant_policy"),
        "reason": action.reason,
    }
    payload = {"action": "override_severity", "previous": previous, "severity": new, "reason": action.reason, "learning": learning}
    return OVERRIDE_STAGE, {"severity": new, "record": record}, payload, _decision(
        f"severity overridden {previous} → {new}", action.reason, "none"
    )


# ----------------------------------------------------------------------------------------------- intake


async def _exception_of(ctx: ApiContext, tenant_id: str, item: QueueItem) -> str | None:
    """The exception a processed submission became, found by the same idempotency key the pipeline used."""
    if item.state != "DONE":
        return None
    try:
        packs = await ctx.orchestrator.active_packs(tenant_id)
        data = item.payload
        explicit = isinstance(data.get("exceptionId"), str)
        eid = str(data["exceptionId"]).strip() if explicit else "probe"
        ir = intake(Submission(data, item.received_at, queue_id=item.id), tenant_id, eid or "probe", packs.domain)
    except Exception:  # packs changed or were deactivated since: the link is best effort
        return None
    key = idempotency_key(ir, explicit, item.id)
    if key is None:
        return None
    return (await ctx.store.find_by_idempotency_keys(tenant_id, [key])).get(key)


@router.get(
    "/intake/{queueId}",
    response_model=IntakeStatus,
    tags=["exceptions"],
    summary="State of an accepted submission (PENDING, DONE with its exception, or REJECTED with the reason)",
)
async def intake_status(
    request: Request,
    tenant_id: TenantPath,
    queue_id: Annotated[int, Path(alias="queueId", ge=1, le=2**62)],
    principal: Annotated[Principal, Depends(require("intake.read"))],
) -> IntakeStatus:
    ctx = context(request)
    item = await ctx.store.get_queue_item(tenant_id, queue_id)
    if item is None:
        raise not_found("intake item")
    return IntakeStatus(
        queue_id=item.id,
        state=item.state,
        attempts=item.attempts,
        received_at=item.received_at,
        error=item.error,
        exception_id=await _exception_of(ctx, tenant_id, item),
    )

