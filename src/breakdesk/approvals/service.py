"""The approval service: list, approve, reject and expire approval requests, then resume execution.

Rules applied to every decision, inside the store transaction that records it:
- four-eyes: the approver is never the requester, and never an automated actor (the pipeline, the executor,
  the scheduler, or any `system:` / `service:` / `bot:` principal);
- roles: the approver holds one of the request's allowed roles (a tenant `admin` also counts as `approver`);
- N-of-M: the request is APPROVED once `approvals_needed` distinct people approved the *same* plan: an
  approval with edits changes the plan, so earlier votes for the unedited plan no longer count;
- a decision is a conditional update of a PENDING request, so of any number of concurrent calls exactly one
  approves (or rejects, or expires) it, and only that call resumes execution;
- an approval with edits and a rejection are recorded as human-override learning facts.

Rejection escalates the exception (a person takes over) or, with `close=True`, closes it. Expiry (the TTL ran
out) escalates it with the reason recorded; `expire_due` is called by the worker's scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from breakdesk.audit.chain import content_hash, utc_iso
from breakdesk.domain.construct import ev, said_ev
from breakdesk.domain.models import AgentDecision, ResolutionStatus
from breakdesk.pipeline.execution import ExecutionOutcome, ExecutionService, PacksFor
from breakdesk.store.approvals import Approval, ApprovalChange
from breakdesk.store.errors import Conflict, NotFound
from breakdesk.store.records import AuditRow, EventRow

#: Actors that are never a "second pair of eyes".
AUTOMATED_ACTORS = frozenset({"pipeline", "executor", "scheduler", "system", "worker", "demo"})
AUTOMATED_PREFIXES = ("system:", "service:", "svc:", "bot:", "pipeline:")


class ApprovalError(Exception):
    """Base class; `status_code` is the HTTP status the API should answer with."""

    status_code = 400


class ApprovalNotFound(ApprovalError):
    status_code = 404


class ApprovalForbidden(ApprovalError):
    """Four-eyes or role rules refuse this actor."""

    status_code = 403


class ApprovalConflict(ApprovalError):
    """The request is no longer PENDING (decided, expired), this actor already voted, or the exception moved on."""

    status_code = 409


class InvalidDecision(ApprovalError):
    """Malformed edits (unknown step, arguments that fail the tool's schema) or a rejection without a reason."""

    status_code = 422


def is_automated(actor: str) -> bool:
    a = actor.strip().lower()
    return a in AUTOMATED_ACTORS or a.startswith(AUTOMATED_PREFIXES)


def holds_role(roles: Collection[str], allowed: Collection[str]) -> bool:
    held = {r.strip().lower() for r in roles}
    wanted = {r.strip().lower() for r in allowed}
    return bool(held & wanted) or ("admin" in held and "approver" in wanted)


def plan_digest(plan: Mapping[str, Any], edits: Mapping[str, Any] | None) -> str:
    return content_hash({"plan": plan, "edits": edits or {}})[:16]


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of approve / reject: the request afterwards, what happened, and the execution it resumed."""

    approval: Approval
    outcome: str  # vote-recorded | approved | rejected
    execution: ExecutionOutcome | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "approval": self.approval.as_dict(),
            "outcome": self.outcome,
            "execution": self.execution.as_dict() if self.execution else None,
        }


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ApprovalService:
    def __init__(
        self,
        store: Any,
        execution: ExecutionService | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
        packs: PacksFor | None = None,
    ) -> None:
        self.store = store
        self.execution = execution
        self.clock = clock
        if packs is None:
            if execution is not None:
                packs = execution.packs_for
            else:
                from breakdesk.pipeline.orchestrator import Orchestrator

                packs = Orchestrator(store).active_packs
        self._packs = packs

    # ------------------------------------------------------------------------------------------- reads

    async def list_approvals(
        self,
        tenant_id: str,
        *,
        status: str | Sequence[str] | None = None,
        exception_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Approval], str | None]:
        """Newest first; `cursor` continues a previous page."""
        return await self.store.list_approvals(
            tenant_id, status=status, exception_id=exception_id, limit=limit, cursor=cursor
        )

    async def get(self, tenant_id: str, approval_id: str) -> Approval:
        found = await self.store.get_approval(tenant_id, approval_id)
        if found is None:
            raise ApprovalNotFound(f"approval {approval_id!r} does not exist for tenant {tenant_id!r}")
        return found

    # --------------------------------------------------------------------------------------- decisions

    def _check_actor(self, a: Approval, actor: str, roles: Collection[str], automated: bool) -> None:
        if not actor or not actor.strip():
            raise ApprovalForbidden("an approver must be named")
        if automated or is_automated(actor):
            raise ApprovalForbidden(f"{actor!r} is an automated actor: only a person can decide an approval")
        if actor.strip().lower() == a.requested_by.strip().lower():
            raise ApprovalForbidden(f"four-eyes: {actor!r} requested this approval and cannot decide it")
        if not holds_role(roles, a.allowed_roles):
            raise ApprovalForbidden(
                f"{actor!r} holds none of the roles allowed to decide this request: {', '.join(a.allowed_roles)}"
            )

    def _check_open(self, a: Approval, exc: Mapping[str, Any], now: datetime) -> None:
        if a.status != "PENDING":
            raise ApprovalConflict(f"approval {a.approval_id} is already {a.status}")
        if a.expires_at <= now:
            raise ApprovalConflict(f"approval {a.approval_id} expired at {utc_iso(a.expires_at)}")
        if exc["status"] != ResolutionStatus.PENDING_APPROVAL.value:
            raise ApprovalConflict(f"exception {a.exception_id} is {exc['status']}, no longer waiting for approval")

    async def _validate_edits(self, tenant_id: str, a: Approval, edits: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(edits, Mapping) or not edits:
            raise InvalidDecision("edits must map step ids to argument objects")
        packs = await self._packs(tenant_id)
        steps = {s.get("stepId"): s for s in a.plan.get("steps") or []}
        out: dict[str, Any] = {}
        for step_id, args in edits.items():
            ps = steps.get(step_id)
            if ps is None:
                raise InvalidDecision(f"edits name step {step_id!r}, which the plan does not have")
            if a.step_index is not None and ps.get("index") != a.step_index:
                raise InvalidDecision(f"this request covers step {a.step_id!r} only; it cannot edit {step_id!r}")
            tool = ps.get("tool")
            if tool is None:
                raise InvalidDecision(f"step {step_id!r} calls no tool: there are no arguments to edit")
            if not isinstance(args, Mapping):
                raise InvalidDecision(f"edits for step {step_id!r} must be an object of arguments")
            compiled = packs.domain.tools.get(tool)
            if compiled is None:
                raise InvalidDecision(f"tool {tool} of step {step_id!r} is not defined by {packs.domain.ref}")
            errors = compiled.arg_errors(dict(args))
            if errors:
                raise InvalidDecision(f"edited arguments of step {step_id!r}: " + "; ".join(errors[:5]))
            out[str(step_id)] = dict(args)
        return out

    async def approve(
        self,
        tenant_id: str,
        approval_id: str,
        actor: str,
        roles: Collection[str],
        comment: str = "",
        edits: Mapping[str, Any] | None = None,
        *,
        automated: bool = False,
        execute: bool = True,
    ) -> Decision:
        """Record `actor`'s approval; when it completes the request, resume execution (once, whatever the
        concurrency). `edits` maps step ids to replacement arguments (validated against the tools' schemas).
        With `execute=False` the caller resumes later (e.g. a background task, or the scheduler)."""
        roles = [roles] if isinstance(roles, str) else list(roles)
        current = await self.get(tenant_id, approval_id)
        self._check_actor(current, actor, roles, automated)
        valid_edits = await self._validate_edits(tenant_id, current, edits) if edits else None
        approved = [False]

        def decide(a: Approval, exc: Mapping[str, Any]) -> ApprovalChange:
            now = self.clock()
            self._check_actor(a, actor, roles, automated)
            self._check_open(a, exc, now)
            merged = {**(a.edits or {}), **(valid_edits or {})} or None
            digest = plan_digest(a.plan, merged)
            votes = [dict(v) for v in a.approvers]
            if any(v.get("actor") == actor and v.get("planDigest") == digest for v in votes):
                raise ApprovalConflict(f"{actor!r} already approved this plan")
            vote: dict[str, Any] = {"actor": actor, "roles": sorted(roles), "at": utc_iso(now), "comment": comment,
                                    "decision": "approve", "planDigest": digest}
            if valid_edits:
                vote["edits"] = valid_edits
            votes.append(vote)
            count = len({v["actor"] for v in votes if v.get("planDigest") == digest and v.get("decision") == "approve"})
            values: dict[str, Any] = {"approvers": votes, "edits": merged}
            events: list[EventRow] = []
            audits = [AuditRow(actor, "approval.vote", a.exception_id, now,
                               {"approvalId": a.approval_id, "votes": count, "needed": a.approvals_needed,
                                "comment": comment, "edited": sorted(valid_edits or {})})]
            change = ApprovalChange(values, events, audits)
            if count < a.approvals_needed:
                events.append(self._event(a, now, f"approval {count} of {a.approvals_needed} by {actor}",
                                          "await_approval", comment, {"votes": count}))
                return change
            approved[0] = True
            values.update(status="APPROVED", decided_at=now, decided_by=actor, comment=comment or None)
            events.append(self._event(a, now, f"approved by {actor}", "execute", comment,
                                      {"approvers": sorted({v['actor'] for v in votes if v.get('planDigest') == digest}),
                                       "edits": merged}))
            audits.append(AuditRow(actor, "approval.approved", a.exception_id, now,
                                   {"approvalId": a.approval_id, "scope": a.scope, "edits": merged}))
            if merged:
                fact = {"kind": "human-override", "action": "approved-with-edits", "approvalId": a.approval_id,
                        "by": actor, "steps": {sid: {"planned": _planned_args(a, sid), "approved": args}
                                               for sid, args in merged.items()}}
                events.append(self._learning(a, now, fact))
            change.exception_status = ResolutionStatus.IN_PROGRESS.value
            change.from_status = ResolutionStatus.PENDING_APPROVAL.value
            change.exception_fields = {"record": _with_status(exc, ResolutionStatus.IN_PROGRESS), "updated_at": now}
            return change

        updated = await self._change(tenant_id, approval_id, decide)
        if not approved[0]:
            return Decision(updated, "vote-recorded")
        outcome = None
        if execute and self.execution is not None:
            outcome = await self.execution.run(tenant_id, updated.exception_id)
        return Decision(updated, "approved", outcome)

    async def reject(
        self,
        tenant_id: str,
        approval_id: str,
        actor: str,
        roles: Collection[str],
        comment: str,
        *,
        close: bool = False,
        automated: bool = False,
    ) -> Decision:
        """Reject with a reason: the exception is ESCALATED to a person, or CLOSED with `close=True`."""
        if not comment or not comment.strip():
            raise InvalidDecision("a rejection needs a reason (comment)")
        roles = [roles] if isinstance(roles, str) else list(roles)
        current = await self.get(tenant_id, approval_id)
        self._check_actor(current, actor, roles, automated)
        target = ResolutionStatus.CLOSED if close else ResolutionStatus.ESCALATED

        def decide(a: Approval, exc: Mapping[str, Any]) -> ApprovalChange:
            now = self.clock()
            self._check_actor(a, actor, roles, automated)
            self._check_open(a, exc, now)
            votes = [*a.approvers, {"actor": actor, "roles": sorted(roles), "at": utc_iso(now), "comment": comment,
                                    "decision": "reject"}]
            values = {"status": "REJECTED", "approvers": votes, "decided_at": now, "decided_by": actor,
                      "comment": comment}
            fact = {"kind": "human-override", "action": "rejected", "approvalId": a.approval_id, "by": actor,
                    "reason": comment, "playbookId": a.plan.get("playbookId"), "then": target.value}
            events = [
                self._event(a, now, f"rejected by {actor}: {comment}", "human_review" if not close else "none",
                            comment, {"then": target.value}),
                self._learning(a, now, fact),
            ]
            audits = [AuditRow(actor, "approval.rejected", a.exception_id, now,
                               {"approvalId": a.approval_id, "reason": comment, "then": target.value})]
            fields: dict[str, Any] = {"record": _with_status(exc, target), "updated_at": now}
            if close:
                fields["resolved_at"] = now
            return ApprovalChange(values, events, audits, target.value, ResolutionStatus.PENDING_APPROVAL.value,
                                  fields)

        return Decision(await self._change(tenant_id, approval_id, decide), "rejected")

    async def expire_due(
        self, now: datetime | None = None, limit: int = 500, *, tenants: Collection[str] | None = None
    ) -> list[Approval]:
        """Expire every PENDING request whose TTL ran out (all tenants, or only `tenants`) and escalate its
        exception."""
        at = now or self.clock()
        expired: list[Approval] = []
        for tenant_id, approval_id in await self.store.due_approvals(at, limit):
            if tenants is not None and tenant_id not in tenants:
                continue

            def decide(a: Approval, exc: Mapping[str, Any], at: datetime = at) -> ApprovalChange:
                if a.status != "PENDING" or a.expires_at > at:
                    raise ApprovalConflict(f"approval {a.approval_id} is {a.status} and not due")
                reason = f"approval {a.approval_id} expired at {utc_iso(a.expires_at)} without a decision"
                values = {"status": "EXPIRED", "decided_at": at, "decided_by": "scheduler", "comment": reason}
                audits = [AuditRow("scheduler", "approval.expired", a.exception_id, at,
                                   {"approvalId": a.approval_id, "expiresAt": utc_iso(a.expires_at)})]
                change = ApprovalChange(values, [self._event(a, at, reason, "human_review", "", {})], audits)
                if exc["status"] == ResolutionStatus.PENDING_APPROVAL.value:
                    change.exception_status = ResolutionStatus.ESCALATED.value
                    change.from_status = ResolutionStatus.PENDING_APPROVAL.value
                    change.exception_fields = {"record": _with_status(exc, ResolutionStatus.ESCALATED),
                                               "updated_at": at}
                return change

            try:
                expired.append(await self._change(tenant_id, approval_id, decide))
            except ApprovalConflict:
                continue  # decided between the scan and the update
        return expired

    # ----------------------------------------------------------------------------------------- helpers

    async def _change(
        self, tenant_id: str, approval_id: str, decide: Callable[[Approval, Mapping[str, Any]], ApprovalChange]
    ) -> Approval:
        try:
            updated, _ = await self.store.change_approval(tenant_id, approval_id, decide)
        except NotFound as exc:
            raise ApprovalNotFound(str(exc)) from exc
        except Conflict as exc:
            raise ApprovalConflict(str(exc)) from exc
        return updated

    @staticmethod
    def _event(a: Approval, now: datetime, text: str, next_step: str, comment: str,
               extra: dict[str, Any]) -> EventRow:
        # without a comment the evidence repeats the decision, marked as filled in: no one wrote it
        item = said_ev("approval", comment, text[:500], ref=a.approval_id)
        decision = AgentDecision(decision=text[:500], confidence=1.0, evidence=(item,), next_step=next_step)
        payload = {"approvalId": a.approval_id, "scope": a.scope, **extra}
        return EventRow(a.exception_id, "approval", now,
                        decision.model_dump(mode="json", by_alias=True, exclude_none=True), payload)

    @staticmethod
    def _learning(a: Approval, now: datetime, fact: dict[str, Any]) -> EventRow:
        decision = AgentDecision(
            decision=f"human override: {fact['action']}",
            confidence=1.0,
            evidence=(ev("learning", message=str(fact)[:500], ref=a.approval_id),),
            next_step="none",
        )
        return EventRow(a.exception_id, "feedback", now,
                        decision.model_dump(mode="json", by_alias=True, exclude_none=True), {"learning": [fact]})


def _planned_args(a: Approval, step_id: str) -> Any:
    for s in a.plan.get("steps") or []:
        if s.get("stepId") == step_id:
            return s.get("args")
    return None


def _with_status(exc: Mapping[str, Any], status: ResolutionStatus) -> dict[str, Any]:
    record = dict(exc.get("record") or {})
    record["resolutionStatus"] = status.value
    return record
