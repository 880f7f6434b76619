"""Playbook execution: the imperative shell that turns an approved plan into tool calls, durably.

For an exception in IN_PROGRESS with a recorded plan (the last `resolution` event), steps run in order:

- a step whose `when` reads earlier outputs is decided now (CEL over `steps.<id>.output`), as are arguments
  that read them; everything else is what the plan (and the approver) saw, with an approver's edits applied;
- every step is checked again before it runs, against the tenant's *current* packs: the playbook is still
  approved and unchanged, the tool is defined, allow-listed and not blocked, and the approval it needs exists
  (a step marked `requiresApproval` whose arguments the plan approval could not show pauses with
  NEEDS_APPROVAL and gets its own request);
- every attempt and step decision is journalled (execution row + event + audit entry). A tool that is not
  idempotent gets a STARTED row *before* its request is sent and its outcome is written before anything else
  is sent; outcomes of idempotent calls ride along with the next write (at worst a crash repeats an
  idempotent call). A restarted worker resumes at the first unsettled step; a STARTED row left by a dead
  runner means the call may have reached the tool, so a non-idempotent step is then escalated, not resent;
- a failed step follows its `onFailure`: `continue` goes on, `compensate` calls the compensation tool (the
  exception ends FAILED when it succeeds, ESCALATED when it does not), `retry` (retries already spent by the
  executor) and `escalate` end ESCALATED.

The exception ends RESOLVED when every step succeeded or was skipped (or failed with `continue`), and
ESCALATED when a manual or blocked step is left for a person. Plans recorded in a dry run, and tenants whose
policy says `dryRun`, are never executed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import structlog

from breakdesk.approvals.requests import plan_request, step_request, tenant_ttl
from breakdesk.domain.construct import ev
from breakdesk.domain.models import AgentDecision, ExceptionRecord, ResolutionStatus
from breakdesk.packs.compiler import CompiledPlaybook, CompiledStep, CompiledTenantPolicy
from breakdesk.pipeline.context import condition_vars
from breakdesk.rules.cel import make_context
from breakdesk.rules.templates import RenderError
from breakdesk.store.approvals import Approval
from breakdesk.store.errors import NotFound
from breakdesk.store.executions import (
    ClaimLost,
    ExecutionContext,
    ExecutionRecord,
    JournalEntry,
    StatusChanged,
)
from breakdesk.store.records import AuditRow, EventRow
from breakdesk.tools.executor import (
    Attempt,
    EffectiveTool,
    ToolCall,
    ToolExecutor,
    ToolResult,
    attempt_budget,
    effective_tool,
    policy_refusal,
)

SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
SKIPPED = "SKIPPED"
NEEDS_APPROVAL = "NEEDS_APPROVAL"
MANUAL = "MANUAL"
UNKNOWN = "UNKNOWN"
STARTED = "STARTED"

log = structlog.get_logger("breakdesk.execution")

#: A STARTED attempt older than its timeout plus this grace is presumed abandoned by a dead runner.
DEFAULT_GRACE = timedelta(seconds=5)
#: Journal entries of idempotent calls kept in memory at most before they are written anyway.
MAX_PENDING_EVENTS = 64


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class StepOutcome:
    index: int
    step_id: str
    tool: str | None
    status: str  # SUCCEEDED | FAILED | SKIPPED | NEEDS_APPROVAL | MANUAL | UNKNOWN
    reason: str = ""
    attempts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "stepId": self.step_id, "tool": self.tool, "status": self.status,
                "reason": self.reason, "attempts": self.attempts}


@dataclass(frozen=True, slots=True)
class ExecutionOutcome:
    """What one `run` did. `status` is the exception's status afterwards; `executed` is False when nothing
    was run (not IN_PROGRESS, dry run, in flight elsewhere)."""

    tenant_id: str
    exception_id: str
    status: str
    executed: bool
    reason: str = ""
    steps: tuple[StepOutcome, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"tenantId": self.tenant_id, "exceptionId": self.exception_id, "status": self.status,
                "executed": self.executed, "reason": self.reason, "steps": [s.as_dict() for s in self.steps]}


class _Stop(Exception):
    """Ends a run early with an outcome (paused, in flight elsewhere, concluded)."""

    def __init__(self, outcome: ExecutionOutcome) -> None:
        self.outcome = outcome


PacksFor = Callable[[str], Awaitable[Any]]


class ExecutionService:
    """Runs plans. Safe to call repeatedly and concurrently: a run that finds nothing to do returns at once,
    and two runners of one exception cannot both send a step (the journal's keys decide)."""

    def __init__(
        self,
        store: Any,
        executor: ToolExecutor,
        *,
        clock: Callable[[], datetime] = _utcnow,
        packs: PacksFor | None = None,
        actor: str = "executor",
        concurrency: int = 64,
        grace: timedelta = DEFAULT_GRACE,
        packs_ttl: float = 1.0,
    ) -> None:
        self.store = store
        self.executor = executor
        self.clock = clock
        self.actor = actor
        self.grace = grace
        self.packs_ttl = packs_ttl
        self._packs_cache: dict[str, tuple[float, Any]] = {}
        self._packs_reads: dict[str, asyncio.Task[Any]] = {}
        self._semaphore = asyncio.Semaphore(concurrency)
        self.writer = GroupWriter(store)
        self._active: set[tuple[str, str]] = set()
        if packs is None:
            from breakdesk.pipeline.orchestrator import Orchestrator

            packs = Orchestrator(store).active_packs
        #: Compiled active packs of a tenant (share the orchestrator's cache: `packs=orchestrator.active_packs`).
        self.packs_for: PacksFor = packs

    # ------------------------------------------------------------------------------------------- entry

    async def run(self, tenant_id: str, exception_id: str | ExecutionContext) -> ExecutionOutcome:
        """Execute (or resume) the exception's plan as far as it can go now. Pass an `ExecutionContext`
        instead of the id when the caller has just written the exception (it is then not read back)."""
        context = exception_id if isinstance(exception_id, ExecutionContext) else None
        exception_id = context.exception_id if context is not None else str(exception_id)
        key = (tenant_id, exception_id)
        if key in self._active:
            return ExecutionOutcome(tenant_id, exception_id, "IN_PROGRESS", False, "already running in this process")
        self._active.add(key)
        try:
            async with self._semaphore:
                return await self._run(tenant_id, exception_id, context)
        except _Stop as stop:
            return stop.outcome
        except StatusChanged as exc:
            row = await self.store.get_exception(tenant_id, exception_id)
            status = row["status"] if row else "UNKNOWN"
            return ExecutionOutcome(tenant_id, exception_id, status, False, f"stopped: {exc}")
        except ClaimLost as exc:
            return ExecutionOutcome(tenant_id, exception_id, "IN_PROGRESS", False, f"stopped: {exc}")
        finally:
            self._active.discard(key)

    async def _current_packs(self, tenant_id: str) -> Any:
        """The tenant's active packs, re-read at most every `packs_ttl` seconds: policy changes reach runs
        within that time, and a thousand concurrent runs do not each re-read the catalog. Runs that find the
        entry out of date together share one read (else every expiry costs one catalog read per run)."""
        now = time.monotonic()
        hit = self._packs_cache.get(tenant_id)
        if hit is not None and now - hit[0] < self.packs_ttl:
            return hit[1]
        read = self._packs_reads.get(tenant_id)
        if read is None:
            read = self._packs_reads[tenant_id] = asyncio.get_running_loop().create_task(
                self._read_packs(tenant_id, now)
            )
            read.add_done_callback(lambda t: self._packs_read_done(tenant_id, t))
        return await asyncio.shield(read)  # a run that stops does not cancel the others' read

    async def _read_packs(self, tenant_id: str, now: float) -> Any:
        packs = await self.packs_for(tenant_id)
        self._packs_cache[tenant_id] = (now, packs)
        return packs

    def _packs_read_done(self, tenant_id: str, task: asyncio.Task[Any]) -> None:
        if self._packs_reads.get(tenant_id) is task:
            del self._packs_reads[tenant_id]
        if not task.cancelled():
            task.exception()  # the runs that awaited it report the error

    async def run_many(
        self, tenant_id: str, exception_ids: Iterable[str | ExecutionContext]
    ) -> list[ExecutionOutcome]:
        """Run several exceptions concurrently (bounded by `concurrency`); outcomes in input order. One run's
        failure (e.g. the database is unreachable) becomes its outcome instead of failing the others; the
        scheduler resumes such runs later."""
        items = list(exception_ids)
        results = await asyncio.gather(*(self.run(tenant_id, e) for e in items), return_exceptions=True)
        out: list[ExecutionOutcome] = []
        for item, result in zip(items, results, strict=True):
            if isinstance(result, ExecutionOutcome):
                out.append(result)
                continue
            if not isinstance(result, Exception):
                raise result  # cancellation and the like are not a run's outcome
            eid = item.exception_id if isinstance(item, ExecutionContext) else str(item)
            log.warning("execution.error", tenant=tenant_id, exception=eid, error=f"{type(result).__name__}: {result}")
            out.append(ExecutionOutcome(tenant_id, eid, "IN_PROGRESS", False,
                                        f"not executed: {type(result).__name__}: {result}"[:500]))
        return out

    async def resume_stalled(
        self, tenant_id: str, idle_for: timedelta = timedelta(minutes=2), limit: int = 100
    ) -> list[ExecutionOutcome]:
        """Resume IN_PROGRESS exceptions nobody touched for `idle_for` (a dead worker's runs, or plans that
        were never handed to an executor)."""
        ids = await self.store.stalled_executions(tenant_id, self.clock() - idle_for, limit)
        return await self.run_many(tenant_id, ids)

    # --------------------------------------------------------------------------------------------- run

    async def _run(self, tenant_id: str, exception_id: str, given: ExecutionContext | None) -> ExecutionOutcome:
        ctx = given or await self.store.execution_context(tenant_id, exception_id)
        if ctx is None:
            raise NotFound(f"exception {exception_id!r} does not exist for tenant {tenant_id!r}")
        row, plan = ctx.exception, ctx.plan
        if row["status"] != ResolutionStatus.IN_PROGRESS.value:
            return ExecutionOutcome(tenant_id, exception_id, row["status"], False,
                                    f"status is {row['status']}: nothing to execute")
        run = _Run(self, tenant_id, row, plan, ctx.policy, ctx.recurrence)
        if plan is None:
            return await run.conclude(ResolutionStatus.ESCALATED, "no plan was recorded for this exception")
        if plan.get("dryRun"):
            return ExecutionOutcome(tenant_id, exception_id, row["status"], False,
                                    "the plan was recorded in a dry run: tools are not called")
        packs = await self._current_packs(tenant_id)
        if packs.tenant.spec.dryRun:
            return ExecutionOutcome(tenant_id, exception_id, row["status"], False,
                                    f"tenant policy {packs.tenant.ref} is dryRun: tools are not called")
        run.tenant = packs.tenant
        run.approvals = ctx.approvals
        run.records = ctx.records
        return await run.execute()


class GroupWriter:
    """Group commit of journal entries: concurrent runs hand their entries to one writer task, which writes
    everything queued so far in one transaction per tenant. A lone run waits no longer than before; many
    concurrent runs share transactions instead of queueing for the database's write lock one by one."""

    def __init__(self, store: Any, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[tuple[str, JournalEntry, asyncio.Future[None]]] = []
        self._draining = False
        self._task: asyncio.Task[None] | None = None  # held so the running drain is not garbage-collected

    async def write(self, tenant_id: str, entry: JournalEntry) -> None:
        """Returns once the entry is committed; raises what refused it (StatusChanged, ClaimLost, ...).

        With no write in flight the entry is written at once by its own run (no task, no future: a lone
        run's claims are on its critical path); entries arriving meanwhile queue for one group write."""
        if self._draining:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._pending.append((tenant_id, entry, future))
            await future
            return
        self._draining = True
        try:
            result = (await self.store.record_executions(tenant_id, [entry]))[0]
        finally:
            if self._pending:  # queued while this write ran: hand them to a drain task
                self._task = asyncio.get_running_loop().create_task(self._drain())
            else:
                self._draining = False
        if result is not None:
            raise result

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                by_tenant: dict[str, list[tuple[str, JournalEntry, asyncio.Future[None]]]] = {}
                for item in batch:
                    by_tenant.setdefault(item[0], []).append(item)
                for tenant_id, items in by_tenant.items():
                    try:
                        results: list[Any] = await self.store.record_executions(tenant_id, [e for _, e, _ in items])
                    except Exception as exc:  # the database failed: every waiting run gets the error
                        results = [exc] * len(items)
                    for (_, _, future), result in zip(items, results, strict=True):
                        if future.done():
                            continue
                        if result is None:
                            future.set_result(None)
                        else:
                            future.set_exception(result)
        finally:
            self._draining = False


# ------------------------------------------------------------------------------------------------- a run


@dataclass
class _Journal:
    inserts: list[ExecutionRecord] = field(default_factory=list)
    settles: list[ExecutionRecord] = field(default_factory=list)
    decisions: list[ExecutionRecord] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    audits: list[AuditRow] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.inserts or self.settles or self.decisions or self.events or self.audits)


class _Run:
    """One pass over one exception's plan (not shared between tasks)."""

    def __init__(self, svc: ExecutionService, tenant_id: str, row: dict[str, Any], plan: dict[str, Any] | None,
                 policy: dict[str, Any], recurrence: int | None = None) -> None:
        self.svc = svc
        #: `recurrence` in conditions: the fingerprint's earlier occurrences, as the plan was made with
        self.recurrence = recurrence
        self.tenant_id = tenant_id
        self.exception_id: str = row["exception_id"]
        self.row = row
        self.plan = plan or {}
        self.policy = policy
        self.tenant: CompiledTenantPolicy | None = None
        self.approvals: list[Approval] = []
        self.records: list[ExecutionRecord] = []
        self.journal = _Journal()
        self.steps_ctx: dict[str, dict[str, Any]] = {}
        self.outcomes: list[StepOutcome] = []
        self.manual: list[str] = []
        self._record: ExceptionRecord | None = None

    # ---------------------------------------------------------------------------------------- helpers

    @property
    def now(self) -> datetime:
        return self.svc.clock()

    def _audit(self, action: str, detail: dict[str, Any]) -> None:
        self.journal.audits.append(AuditRow(self.svc.actor, action, self.exception_id, self.now, detail))

    def _event(self, stage: str, payload: dict[str, Any], decision: AgentDecision | None = None) -> None:
        d = None if decision is None else decision.model_dump(mode="json", by_alias=True, exclude_none=True)
        self.journal.events.append(EventRow(self.exception_id, stage, self.now, d, payload))

    def _ctx(self) -> Any:
        if self._record is None:
            self._record = ExceptionRecord.model_validate(self.row["record"], strict=False)
        return make_context(condition_vars(
            self._record,
            severity=self.row.get("severity"),
            confidence=self.row.get("confidence"),
            recurrence=self.recurrence if self.recurrence is not None else int(self.row.get("recurrence_count") or 0),
            steps=self.steps_ctx,
        ))

    async def flush(self, *, claim: ExecutionRecord | None = None, fields: dict[str, Any] | None = None,
                    approval: Approval | None = None) -> None:
        """Persist everything journalled so far (and a claim, a status change, a request) atomically."""
        j = self.journal
        if j.empty() and claim is None and not fields and approval is None:
            return
        entry = JournalEntry(
            self.exception_id, inserts=[*j.inserts, *([claim] if claim is not None else [])], settles=j.settles,
            decisions=j.decisions, events=j.events, audits=j.audits, fields=fields, approval=approval,
        )
        await self.svc.writer.write(self.tenant_id, entry)
        self.journal = _Journal()

    def _records_for(self, index: int, phase: str) -> list[ExecutionRecord]:
        return [r for r in self.records if r.step_index == index and r.phase == phase]

    def _decide(self, ps: dict[str, Any], status: str, reason: str, *, final: bool = True) -> StepOutcome:
        """Journal a step decided without a call (attempt 0)."""
        now = self.now
        self.journal.decisions.append(ExecutionRecord(
            self.exception_id, ps["index"], "step", 0, ps["stepId"], ps.get("tool"), status, final, now,
            error=reason or None, finished_at=now,
        ))
        payload = {"stepIndex": ps["index"], "stepId": ps["stepId"], "tool": ps.get("tool"), "status": status,
                   "reason": reason}
        self._event("execution.step", payload)
        self._audit("execution.step", payload)
        out = StepOutcome(ps["index"], ps["stepId"], ps.get("tool"), status, reason)
        self.outcomes.append(out)
        return out

    def _approved(self, scope_index: int | None) -> Approval | None:
        for a in reversed(self.approvals):
            if a.status == "APPROVED" and a.step_index == scope_index:
                return a
        return None

    def _pending(self, scope_index: int | None) -> Approval | None:
        for a in self.approvals:
            if a.status == "PENDING" and a.step_index == scope_index:
                return a
        return None

    def _edits(self, step_id: str, index: int) -> dict[str, Any] | None:
        for a in (self._approved(index), self._approved(None)):
            if a is not None and a.edits and isinstance(a.edits.get(step_id), dict):
                return dict(a.edits[step_id])
        return None

    # ------------------------------------------------------------------------------------------ control

    async def conclude(self, status: ResolutionStatus, reason: str) -> NoReturn:
        now = self.now
        next_step = {"RESOLVED": "none", "FAILED": "human_review", "ESCALATED": "human_review"}[status.value]
        evidence = [ev("execution", message=reason)]
        evidence += [ev("step", message=f"{o.step_id}: {o.status}" + (f" ({o.reason})" if o.reason else ""),
                        ref=o.tool) for o in self.outcomes]
        decision = AgentDecision(
            decision=f"execution {status.value.lower()}",
            confidence=float(self.row.get("confidence") or 1.0),
            evidence=tuple(evidence[:50]),
            next_step=next_step,
        )
        payload = {"status": status.value, "reason": reason, "steps": [o.as_dict() for o in self.outcomes]}
        self._event("execution", payload, decision)
        self._audit("execution.finished", {"status": status.value, "reason": reason,
                                           "steps": [f"{o.step_id}:{o.status}" for o in self.outcomes]})
        record = dict(self.row["record"] or {})
        record["resolutionStatus"] = status.value
        fields: dict[str, Any] = {"status": status.value, "record": record, "updated_at": now}
        if status == ResolutionStatus.RESOLVED:
            fields["resolved_at"] = now
        await self.flush(fields=fields)
        raise _Stop(ExecutionOutcome(self.tenant_id, self.exception_id, status.value, True, reason,
                                     tuple(self.outcomes)))

    async def pause(self, request: Approval, reason: str, ps: dict[str, Any] | None) -> NoReturn:
        if ps is not None:
            self._decide(ps, NEEDS_APPROVAL, reason, final=False)
        decision = AgentDecision(decision="paused for approval", confidence=float(self.row.get("confidence") or 1.0),
                                 evidence=(ev("approval", message=reason, ref=request.approval_id),),
                                 next_step="await_approval")
        self._event("execution", {"status": "PENDING_APPROVAL", "reason": reason,
                                  "approvalId": request.approval_id, "steps": [o.as_dict() for o in self.outcomes]},
                    decision)
        self._audit("approval.requested", {"approvalId": request.approval_id, "scope": request.scope,
                                           "allowedRoles": list(request.allowed_roles),
                                           "approvalsNeeded": request.approvals_needed, "reason": reason})
        record = dict(self.row["record"] or {})
        record["resolutionStatus"] = ResolutionStatus.PENDING_APPROVAL.value
        await self.flush(fields={"status": ResolutionStatus.PENDING_APPROVAL.value, "approval_required": True,
                                 "record": record, "updated_at": self.now}, approval=request)
        raise _Stop(ExecutionOutcome(self.tenant_id, self.exception_id, "PENDING_APPROVAL", True, reason,
                                     tuple(self.outcomes)))

    def _roles(self) -> tuple[list[str], int]:
        roles = [r for r in self.policy.get("approvers") or [] if isinstance(r, str)] or ["approver"]
        needed = self.policy.get("approvalsNeeded")
        return roles, int(needed) if isinstance(needed, int) and needed > 0 else 1

    # --------------------------------------------------------------------------------------------- steps

    def _playbook(self) -> CompiledPlaybook | str:
        """The compiled playbook the plan came from, or why it can no longer run."""
        tenant = self.tenant
        assert tenant is not None
        pid = self.plan.get("playbookId")
        if not pid:
            return "the plan has no playbook"
        pb = tenant.domain.playbooks.get(pid)
        if pb is None:
            return f"playbook {pid} is not defined by the active domain pack {tenant.domain.ref}"
        if pid not in tenant.approved_playbooks:
            return f"playbook {pid} is no longer approved by {tenant.ref}"
        if pid in tenant.blocked_playbooks:
            return f"playbook {pid} is blocked by {tenant.ref}"
        steps = self.plan.get("steps") or []
        if len(steps) != len(pb.steps) or any(
            s.get("stepId") != c.id or (s.get("tool") is not None and s.get("tool") != c.tool)
            for s, c in zip(steps, pb.steps, strict=False)
        ):
            return f"playbook {pid} changed in {tenant.domain.ref} since the plan was made; it must be planned again"
        return pb

    async def execute(self) -> ExecutionOutcome:
        try:
            pb = self._playbook()
            if isinstance(pb, str):
                await self.conclude(ResolutionStatus.ESCALATED, f"not executed: {pb}")
            if self.plan.get("approvalRequired") and self._approved(None) is None:
                existing = self._pending(None)
                if existing is not None:
                    await self.pause_existing(existing)
                roles, needed = self._roles()
                request = plan_request(
                    tenant_id=self.tenant_id, exception_id=self.exception_id, plan=self.plan,
                    evidence={"reasons": ["the plan requires approval and none was granted"]},
                    requested_by=self.svc.actor, roles=roles, needed=needed, now=self.now, ttl=self._ttl(),
                )
                await self.pause(request, "the plan requires an approval before any tool runs", None)
            for ps, cstep in zip(self.plan["steps"], pb.steps, strict=True):
                await self._step(ps, cstep)
            if self.manual:
                await self.conclude(ResolutionStatus.ESCALATED,
                                    f"automated steps done; left for a person: {', '.join(self.manual)}")
            await self.conclude(ResolutionStatus.RESOLVED, "every step succeeded or was skipped")
        except _Stop as stop:
            return stop.outcome

    async def pause_existing(self, request: Approval) -> NoReturn:
        """The exception is IN_PROGRESS but its approval is still pending: put it back to waiting."""
        record = dict(self.row["record"] or {})
        record["resolutionStatus"] = ResolutionStatus.PENDING_APPROVAL.value
        payload = {"status": "PENDING_APPROVAL", "approvalId": request.approval_id, "reason": "approval still pending"}
        self._event("execution", payload)
        self._audit("execution.waiting", payload)  # a status change: in the chain, as every other one
        await self.flush(fields={"status": ResolutionStatus.PENDING_APPROVAL.value, "record": record,
                                 "updated_at": self.now})
        raise _Stop(ExecutionOutcome(self.tenant_id, self.exception_id, "PENDING_APPROVAL", False,
                                     f"approval {request.approval_id} is still pending"))

    async def _step(self, ps: dict[str, Any], cstep: CompiledStep) -> None:
        index, step_id, tool = ps["index"], ps["stepId"], ps.get("tool")
        recs = self._records_for(index, "step")
        settled = next((r for r in reversed(recs) if r.final), None)
        if settled is not None:
            await self._replay(ps, cstep, settled, recs)
            return
        pstatus = ps.get("status")
        if pstatus == "SKIPPED":
            self.steps_ctx[step_id] = {"status": SKIPPED}
            self._decide(ps, SKIPPED, ps.get("reason") or "condition is false")
            return
        if tool is None:  # MANUAL, or BLOCKED (a plan never carries a forbidden tool)
            if cstep.when is not None and cstep.when_reads_steps:
                res = cstep.when.evaluate(self._ctx())
                if not res.matched:
                    self.steps_ctx[step_id] = {"status": SKIPPED}
                    self._decide(ps, SKIPPED, f"when {cstep.when.source!r}: {res.error or 'condition is false'}")
                    return
            why = "performed by a person" if pstatus == "MANUAL" else f"blocked ({ps.get('reason')}): a person must do it"
            self.steps_ctx[step_id] = {"status": MANUAL}
            self.manual.append(step_id)
            self._decide(ps, MANUAL, why)
            return
        tenant = self.tenant
        assert tenant is not None
        refusal = policy_refusal(tenant, tool)
        if refusal is not None:
            await self._failed(ps, cstep, self._decide(ps, FAILED, f"refused at execution: {refusal}"), sent=False)
            return
        if cstep.when is not None and cstep.when_reads_steps:
            res = cstep.when.evaluate(self._ctx())
            if not res.matched:
                self.steps_ctx[step_id] = {"status": SKIPPED}
                self._decide(ps, SKIPPED, f"when {cstep.when.source!r}: {res.error or 'condition is false'}")
                return
        edited = self._edits(step_id, index)
        args = edited if edited is not None else ps.get("args")
        if args is None or (pstatus == "INVALID_ARGS" and edited is None):
            try:
                args = cstep.args.render(self._ctx())
            except RenderError as exc:
                await self._failed(ps, cstep, self._decide(ps, FAILED, f"arguments cannot be rendered: {exc}"),
                                   sent=False)
                return
        if cstep.spec.requiresApproval and not self._step_covered(ps, edited):
            await self._request_step_approval(ps, args)
        eff = effective_tool(tenant, tool)
        await self._call(ps, cstep, eff, args, recs)

    def _ttl(self) -> timedelta:
        """The tenant's approval TTL under its current policy (requests made by this run expire after it)."""
        return tenant_ttl(self.tenant.spec if self.tenant is not None else None)

    def _step_covered(self, ps: dict[str, Any], edited: dict[str, Any] | None) -> bool:
        """A step that always needs a person is covered by its own approval, or by the plan approval when
        the approver saw its arguments (or wrote them)."""
        if self._approved(ps["index"]) is not None:
            return True
        plan_ok = self._approved(None)
        if plan_ok is None:
            return False
        return edited is not None or (ps.get("args") is not None and ps.get("status") == "PLANNED")

    async def _request_step_approval(self, ps: dict[str, Any], args: Any) -> None:
        existing = self._pending(ps["index"])
        if existing is not None:
            await self.pause_existing(existing)
        roles, needed = self._roles()
        shown = dict(self.plan)
        shown["steps"] = [
            {**s, "args": self.svc.executor.redactor.redact(args)} if s["index"] == ps["index"] else s
            for s in self.plan.get("steps") or []
        ]
        evidence = {
            "reasons": [f"step {ps['stepId']} always needs approval and its arguments were only known at execution"],
            "outputs": self.svc.executor.redactor.redact(
                {k: v.get("output") for k, v in self.steps_ctx.items() if "output" in v}
            ),
        }
        request = step_request(
            tenant_id=self.tenant_id, exception_id=self.exception_id, step_index=ps["index"], step_id=ps["stepId"],
            plan=shown, evidence=evidence, requested_by=self.svc.actor, roles=roles, needed=needed, now=self.now,
            ttl=self._ttl(),
        )
        await self.pause(request, f"step {ps['stepId']} needs approval", ps)

    async def _replay(self, ps: dict[str, Any], cstep: CompiledStep, settled: ExecutionRecord,
                      recs: Sequence[ExecutionRecord]) -> None:
        """A step settled by an earlier pass: restore its output, and finish its failure handling if needed."""
        step_id = ps["stepId"]
        attempts = sum(1 for r in recs if r.attempt >= 1)
        out = StepOutcome(ps["index"], step_id, ps.get("tool"), settled.status, settled.error or "", attempts)
        self.outcomes.append(out)
        if settled.status == SUCCEEDED:
            self.steps_ctx[step_id] = {"status": SUCCEEDED, "output": settled.output}
        elif settled.status == SKIPPED:
            self.steps_ctx[step_id] = {"status": SKIPPED}
        elif settled.status == MANUAL:
            self.steps_ctx[step_id] = {"status": MANUAL}
            self.manual.append(step_id)
        else:
            sent = any(r.attempt >= 1 for r in recs)
            await self._failed(ps, cstep, out, sent=sent, unknown=settled.status == UNKNOWN)

    async def _call(self, ps: dict[str, Any], cstep: CompiledStep, eff: EffectiveTool, args: Any,
                    recs: Sequence[ExecutionRecord]) -> None:
        tenant = self.tenant
        assert tenant is not None
        index, step_id = ps["index"], ps["stepId"]
        retry = ps.get("onFailure") == "retry"
        budget = attempt_budget(eff, tenant, retry)
        calls = [r for r in recs if r.attempt >= 1]
        first = (max(r.attempt for r in calls) + 1) if calls else 1
        left = budget - len(calls)
        last = calls[-1] if calls else None
        if last is not None and last.status == STARTED:
            if last.deadline is not None and last.deadline > self.now:
                raise _Stop(ExecutionOutcome(self.tenant_id, self.exception_id, "IN_PROGRESS", False,
                                             f"attempt {last.attempt} of step {step_id} is in flight elsewhere"))
            abandoned = ExecutionRecord(
                self.exception_id, index, "step", last.attempt, step_id, eff.name, UNKNOWN, not eff.idempotent,
                last.started_at, idempotency_key=last.idempotency_key, args=last.args, finished_at=self.now,
                error="the runner stopped while this attempt was in flight: its outcome is unknown",
            )
            self.journal.settles.append(abandoned)
            self._attempt_event(ps, eff, abandoned)
            if not eff.idempotent:
                out = StepOutcome(index, step_id, eff.name, UNKNOWN,
                                  f"{abandoned.error}; {eff.name} is not idempotent, so it is not sent again",
                                  len(calls))
                self.outcomes.append(out)
                await self._failed(ps, cstep, out, sent=True, unknown=True)
                return
        if left <= 0 and last is not None and last.status == FAILED:
            out = StepOutcome(index, step_id, eff.name, FAILED, last.error or "failed", len(calls))
            self.outcomes.append(out)
            await self._failed(ps, cstep, out, sent=True)
            return
        key = f"{self.tenant_id}:{self.exception_id}:{step_id}"
        result = await self.svc.executor.call(
            ToolCall(tenant, eff.name, args, key, self.exception_id, retry, first, max(1, left)),
            _Hooks(self, ps, eff, "step", key, args),
        )
        out = self._settle_result(ps, eff, result, "step", len(calls))
        if result.succeeded:
            self.steps_ctx[step_id] = {"status": SUCCEEDED, "output": result.output}
            return
        await self._failed(ps, cstep, out, sent=any(a.sent for a in result.attempts) or bool(calls),
                           unknown=result.outcome_unknown)

    def _settle_result(self, ps: dict[str, Any], eff: EffectiveTool, result: ToolResult, phase: str,
                       earlier: int) -> StepOutcome:
        """Mark the call's last journalled attempt as the step's settling row (or journal the refusal)."""
        index, step_id = ps["index"], ps["stepId"]
        status = SUCCEEDED if result.succeeded else (UNKNOWN if result.outcome_unknown and not eff.idempotent
                                                     else FAILED)
        if result.refused or not result.attempts:
            if phase == "step":
                return self._decide(ps, FAILED, result.error or "refused")
            now = self.now
            self.journal.decisions.append(ExecutionRecord(
                self.exception_id, index, phase, 0, step_id, eff.name, FAILED, True, now,
                args=result.args, error=result.error, finished_at=now,
            ))
            return StepOutcome(index, step_id, eff.name, FAILED, result.error or "refused")
        pending = [*self.journal.inserts, *self.journal.settles]
        last_no = result.attempts[-1].number
        for r in pending:
            if r.step_index == index and r.phase == phase and r.attempt == last_no:
                r.final = True
                r.status = status
        reason = "" if result.succeeded else (result.error or "failed")
        out = StepOutcome(index, step_id, eff.name, status, reason, earlier + len(result.attempts))
        if phase == "step":
            self.outcomes.append(out)
        return out

    def _attempt_event(self, ps: dict[str, Any], eff: EffectiveTool, rec: ExecutionRecord) -> None:
        payload = {
            "stepIndex": rec.step_index, "stepId": rec.step_id, "phase": rec.phase, "tool": eff.name,
            "attempt": rec.attempt, "status": rec.status, "statusCode": rec.status_code,
            "latencyMs": None if rec.latency_ms is None else round(rec.latency_ms, 3), "error": rec.error,
            "args": rec.args, "idempotencyKey": rec.idempotency_key,
        }
        self._audit("tool.attempt", payload)
        self._event("tool.attempt", {**payload, "output": rec.output})

    async def _failed(self, ps: dict[str, Any], cstep: CompiledStep, out: StepOutcome, *, sent: bool,
                      unknown: bool = False) -> None:
        step_id = ps["stepId"]
        self.steps_ctx[step_id] = {"status": FAILED, "error": out.reason}
        policy = ps.get("onFailure") or "escalate"
        what = f"step {step_id} ({out.tool or 'no tool'}) {out.status.lower()}: {out.reason}"
        if policy == "continue":
            return
        if policy == "compensate" and sent:
            await self._compensate(ps, cstep, what)
        if unknown:
            await self.conclude(ResolutionStatus.ESCALATED, f"{what}; the outcome is unknown, a person must check")
        if policy == "retry":
            await self.conclude(ResolutionStatus.ESCALATED, f"{what}; retries exhausted")
        await self.conclude(ResolutionStatus.ESCALATED, what)

    async def _compensate(self, ps: dict[str, Any], cstep: CompiledStep, what: str) -> None:
        tenant = self.tenant
        assert tenant is not None
        index, step_id = ps["index"], ps["stepId"]
        comp = ps.get("compensate") or cstep.spec.compensate
        if comp is None:
            await self.conclude(ResolutionStatus.ESCALATED, f"{what}; no compensation tool is declared")
        recs = self._records_for(index, "compensate")
        settled = next((r for r in reversed(recs) if r.final), None)
        if settled is not None:
            if settled.status == SUCCEEDED:
                await self.conclude(ResolutionStatus.FAILED, f"{what}; compensated with {comp}")
            await self.conclude(ResolutionStatus.ESCALATED, f"{what}; compensation {comp} failed: {settled.error}")
        refusal = policy_refusal(tenant, comp)
        if refusal is not None:
            await self.conclude(ResolutionStatus.ESCALATED, f"{what}; compensation refused: {refusal}")
        eff = effective_tool(tenant, comp)
        try:
            if cstep.compensate_args.kind == "literal" and not cstep.compensate_args.value:
                props = eff.compiled.spec.parameters.get("properties") or {}
                step_args = ps.get("args") or {}
                args = {k: v for k, v in step_args.items() if k in props}
            else:
                args = cstep.compensate_args.render(self._ctx())
        except RenderError as exc:
            await self.conclude(ResolutionStatus.ESCALATED, f"{what}; compensation arguments: {exc}")
        calls = [r for r in recs if r.attempt >= 1]
        last = calls[-1] if calls else None
        if last is not None and last.status == STARTED and last.deadline is not None and last.deadline > self.now:
            raise _Stop(ExecutionOutcome(self.tenant_id, self.exception_id, "IN_PROGRESS", False,
                                         f"compensation of step {step_id} is in flight elsewhere"))
        first = (max(r.attempt for r in calls) + 1) if calls else 1
        key = f"{self.tenant_id}:{self.exception_id}:{step_id}:compensate"
        result = await self.svc.executor.call(
            ToolCall(tenant, comp, args, key, self.exception_id, False, first),
            _Hooks(self, ps, eff, "compensate", key, args),
        )
        self._settle_result(ps, eff, result, "compensate", len(calls))
        if result.succeeded:
            await self.conclude(ResolutionStatus.FAILED, f"{what}; compensated with {comp}")
        await self.conclude(ResolutionStatus.ESCALATED, f"{what}; compensation {comp} failed: {result.error}")


class _Hooks:
    """Journals around each HTTP attempt: a STARTED claim before a non-idempotent send, the outcome after."""

    def __init__(self, run: _Run, ps: dict[str, Any], eff: EffectiveTool, phase: str, key: str, args: Any) -> None:
        self.run = run
        self.ps = ps
        self.eff = eff
        self.phase = phase
        self.key = key
        self.args = run.svc.executor.redactor.redact(args)
        self.claimed: set[int] = set()

    async def before_send(self, number: int, deadline: datetime) -> None:
        claim = None
        if not self.eff.idempotent:
            claim = ExecutionRecord(
                self.run.exception_id, self.ps["index"], self.phase, number, self.ps["stepId"], self.eff.name,
                STARTED, False, self.run.now, idempotency_key=self.key, args=self.args,
                deadline=self.run.now + timedelta(seconds=self.eff.timeout) + self.run.svc.grace,
            )
            self.claimed.add(number)
        journal = self.run.journal
        # Outcomes of idempotent calls may wait for the next write (a crash can only make the run repeat an
        # idempotent call); a claim, and the outcome of a claimed call, are written before anything is sent.
        if claim is not None or journal.settles or len(journal.events) >= MAX_PENDING_EVENTS:
            await self.run.flush(claim=claim)

    async def after_attempt(self, attempt: Attempt) -> None:
        run = self.run
        rec = ExecutionRecord(
            run.exception_id, self.ps["index"], self.phase, attempt.number, self.ps["stepId"], self.eff.name,
            attempt.status, False, attempt.started_at, idempotency_key=self.key, args=self.args, output=attempt.output,
            status_code=attempt.status_code, latency_ms=attempt.latency_ms, error=attempt.error,
            finished_at=attempt.finished_at,
        )
        (run.journal.settles if attempt.number in self.claimed else run.journal.inserts).append(rec)
        run._attempt_event(self.ps, self.eff, rec)
