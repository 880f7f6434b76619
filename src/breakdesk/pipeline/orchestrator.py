"""The orchestrator: the imperative shell around the pure stages.

It loads the tenant's active packs (compiled once per version), dedupes against the store, turns repeated
fingerprints of open exceptions into recurrences, runs the stages and writes each batch in ordered write
transactions (one per batch on SQLite, chunks written while the next chunk is decided on PostgreSQL): an
exception's events, projection and audit entries commit together or not at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from breakdesk.approvals.requests import request_for_decision, tenant_ttl
from breakdesk.audit.chain import canonical_json
from breakdesk.domain.construct import ev
from breakdesk.domain.ids import new_exception_id
from breakdesk.domain.models import AgentDecision, ExceptionRecord, ResolutionStatus
from breakdesk.heap import batch_scope
from breakdesk.packs.compiler import CompiledDomainPack, CompiledTenantPolicy, compile_domain, compile_tenant
from breakdesk.packs.loader import model_from_data
from breakdesk.packs.problems import PackError
from breakdesk.packs.schema import DomainPack, TenantPolicy
from breakdesk.pipeline.intake import IntakeRejected, intake
from breakdesk.pipeline.stages import Decided, decide
from breakdesk.pipeline.types import IntakeResult, RecurrenceInfo, StageEvent, Submission
from breakdesk.slicing import Slicer
from breakdesk.store.executions import ExecutionContext
from breakdesk.store.records import AuditRow, EventRow, ExceptionRow, ExceptionWrite

log = logging.getLogger(__name__)  # memory


class NoActivePacks(Exception):
    """The tenant has no active domain pack or tenant policy: nothing can be decided."""


@dataclass(frozen=True, slots=True)
class ActivePacks:
    domain: CompiledDomainPack
    tenant: CompiledTenantPolicy


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What became of one submission: `processed` (a new exception), `recurrence`, `duplicate` or `rejected`."""

    line: int | None
    outcome: str
    exception_id: str | None


@dataclass
class BatchReport:
    processed: int = 0
    recurrences: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    by_type: Counter[str] = field(default_factory=Counter)
    by_severity: Counter[str] = field(default_factory=Counter)
    by_actionability: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    approval_required: int = 0
    escalated: int = 0
    stage_errors: int = 0
    exception_ids: list[str] = field(default_factory=list)
    items: list[ItemOutcome] = field(default_factory=list)
    elapsed_s: float = 0.0

    def merge(self, other: BatchReport) -> None:
        self.processed += other.processed
        self.recurrences += other.recurrences
        self.duplicates += other.duplicates
        self.rejected.extend(other.rejected)
        for mine, theirs in (
            (self.by_type, other.by_type),
            (self.by_severity, other.by_severity),
            (self.by_actionability, other.by_actionability),
            (self.by_status, other.by_status),
        ):
            mine.update(theirs)
        self.approval_required += other.approval_required
        self.escalated += other.escalated
        self.stage_errors += other.stage_errors
        self.exception_ids.extend(other.exception_ids)
        self.items.extend(other.items)
        self.elapsed_s += other.elapsed_s


def _utcnow() -> datetime:
    return datetime.now(UTC)


def idempotency_key(ir: IntakeResult, explicit_id: bool, queue_id: int | None = None) -> str | None:
    """Caller key, else sourceSystem + source id, else a caller-chosen exception id, else the intake-queue
    item (so an item processed again after a crash dedupes instead of opening a second exception)."""
    if ir.idempotency_key:
        return f"key:{ir.idempotency_key}"
    if ir.source_id:
        return f"src:{ir.record.source_system}:{ir.source_id}"
    if explicit_id:
        return f"id:{ir.record.exception_id}"
    if queue_id is not None:
        return f"queue:{queue_id}"
    return None


def _decision_dict(d: AgentDecision | None) -> dict[str, Any] | None:
    """The decision's JSON form (camelCase, as `model_dump(by_alias=True, exclude_none=True)` would give),
    built directly: this runs seven times per exception on the durable hot path."""
    if d is None:
        return None
    evidence = []
    for e in d.evidence:
        item: dict[str, Any] = {"kind": e.kind, "message": e.message}
        if e.ref is not None:
            item["ref"] = e.ref
        if e.data is not None:
            item["data"] = e.data
        evidence.append(item)
    return {"decision": d.decision, "confidence": d.confidence, "evidence": evidence, "nextStep": d.next_step}


def record_json(
    rec: ExceptionRecord,
    *,
    severity: str | None = None,
    status: str | None = None,
    detected_rules: list[str] | None = None,
    suggested_actions: list[str] | None = None,
) -> dict[str, Any]:
    """The canonical record's JSON form (what `model_dump(mode="json", by_alias=True)` gives), built directly
    on the hot path; `tests/unit` checks the two agree."""
    return {
        "exceptionId": rec.exception_id,
        "tenantId": rec.tenant_id,
        "sourceSystem": rec.source_system,
        "exceptionType": rec.exception_type,
        "severity": severity if severity is not None else (rec.severity.value if rec.severity else None),
        "timestamp": rec.timestamp.isoformat().replace("+00:00", "Z"),
        "rawPayload": rec.raw_payload,
        "normalizedContext": rec.normalized_context,
        "detectedRules": detected_rules if detected_rules is not None else list(rec.detected_rules),
        "suggestedActions": suggested_actions if suggested_actions is not None else list(rec.suggested_actions),
        "resolutionStatus": status if status is not None else rec.resolution_status.value,
        "auditTrail": [e.model_dump(mode="json", by_alias=True) for e in rec.audit_trail],
    }



def execution_context(write: ExceptionWrite) -> ExecutionContext:
    """What the execution service needs about an exception this batch just wrote, taken from the write
    itself (nothing is read back)."""
    payloads = {ev.stage: ev.payload for ev in write.events if ev.stage in ("resolution", "policy")}
    policy = payloads.get("policy") or {}
    return ExecutionContext(
        exception=dataclasses.asdict(write.row),
        plan=(payloads.get("resolution") or {}).get("plan"),
        policy=policy,
        recurrence=ExecutionContext.decided_recurrence(policy),
    )


#: Exceptions per write transaction for a store that does not say (`StoreBase.write_chunk` does): large
#: enough to spread a transaction's fixed cost (a dozen statements and a commit) thin, small enough that the
#: database has a chunk to work on while the next is decided.
DEFAULT_WRITE_CHUNK = 250


class _ChunkWriter:
    """Writes a batch's results in ordered chunks while the batch is still being decided.

    At most one chunk is in flight: a chunk's transaction starts only after the previous one committed, so a
    recurrence always finds its target stored and the audit chain grows in submission order. While a chunk
    is in flight, `step` yields to the event loop once per exception so the driver's completions are picked
    up promptly; the database itself (SQLite's thread, the PostgreSQL server) works in parallel with the
    deciding. Deciding never holds the event loop for more than a slice (`breakdesk.slicing`) at a time
    either: in a server the same loop answers requests, whose latency would otherwise include a whole
    batch's CPU."""

    def __init__(self, store: Any, tenant_id: str, chunk: int, slicer: Slicer) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.chunk = chunk
        self.pending: asyncio.Task[Any] | None = None
        # how much of each list (writes, queue ids, approvals, cases) earlier chunks took
        self.taken = (0, 0, 0, 0)
        self.slicer = slicer

    async def step(self, writes: list[ExceptionWrite], queue_ids: list[int], approvals: list[Any],
                   cases: list[Any]) -> None:
        """Called before each exception is decided: start the next chunk when one is full."""
        if len(writes) - self.taken[0] >= self.chunk:
            await self._start(writes, queue_ids, approvals, cases)
        elif (self.pending is not None and not self.pending.done()) or self.slicer.spent():
            await self.slicer.yield_now()

    async def finish(self, writes: list[ExceptionWrite], queue_ids: list[int], approvals: list[Any],
                     cases: list[Any]) -> None:
        """Write what is left (queue items whose submissions needed no write included) and wait for it all."""
        await self._start(writes, queue_ids, approvals, cases)
        await self._wait()

    async def drain(self) -> None:
        """Let an in-flight chunk finish, whatever happened to the batch meanwhile (its outcome is either
        reported by `finish` or superseded by the error being raised)."""
        if self.pending is not None and not self.pending.done():
            await asyncio.wait([self.pending])
        if self.pending is not None and not self.pending.cancelled():
            self.pending.exception()  # retrieved: an error superseded by another must not be logged as lost

    async def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await pending

    async def _start(self, writes: list[ExceptionWrite], queue_ids: list[int], approvals: list[Any],
                     cases: list[Any]) -> None:
        await self._wait()  # the previous chunk commits first (and its failure stops the batch here)
        w, q, a, c = self.taken
        self.taken = (len(writes), len(queue_ids), len(approvals), len(cases))
        chunk_writes, chunk_queue = writes[w:], queue_ids[q:]
        if chunk_writes:
            chunk_cases = cases[c:]
            self.pending = asyncio.ensure_future(self.store.write_batch(
                self.tenant_id, chunk_writes, complete_queue_ids=chunk_queue, approvals=approvals[a:],
                **({"cases": chunk_cases} if chunk_cases else {})))
        elif chunk_queue:
            self.pending = asyncio.ensure_future(self.store.mark_done(self.tenant_id, chunk_queue))


class Orchestrator:
    def __init__(
        self,
        store: Any,
        *,
        clock: Callable[[], datetime] = _utcnow,
        id_factory: Callable[[], str] = new_exception_id,
        actor: str = "pipeline",
        execution: Any | None = None,
        memory: Any = None,
        write_chunk: int | None = None,
    ) -> None:
        if write_chunk is not None and write_chunk < 1:
            raise ValueError("write_chunk must be at least 1")
        self.store = store
        self.clock = clock
        self.id_factory = id_factory
        self.actor = actor
        #: `breakdesk.pipeline.execution.ExecutionService`: when set, non-dry runs execute ready plans.
        self.execution = execution
        # --- memory: `breakdesk.memory.Memory`; None = the process-wide memory of `store` (when the store
        # has the memory tables), False = no similar-case memory
        if memory is None and hasattr(store, "cases_after"):
            from breakdesk.memory.service import Memory

            memory = Memory.shared(store)
        self.memory = memory or None
        # --- end memory
        #: Exceptions per write transaction (see `process`); by default what suits the store's database.
        self.write_chunk: int = (
            int(getattr(store, "write_chunk", DEFAULT_WRITE_CHUNK)) if write_chunk is None else write_chunk
        )
        self._compiled: dict[tuple[str, str, str], ActivePacks] = {}

    # ----------------------------------------------------------------------------------------------- packs

    async def active_packs(self, tenant_id: str) -> ActivePacks:
        """The tenant's compiled active packs. Every batch calls this, so it first reads only the two content
        hashes (one statement) and fetches and compiles the packs only when that pair is new."""
        hashes = await self.store.active_pack_hashes(tenant_id)
        cached = self._compiled.get((tenant_id, hashes.get("domain", ""), hashes.get("tenant", "")))
        if cached is not None:
            return cached
        dom = await self.store.active_pack(tenant_id, "domain")
        ten = await self.store.active_pack(tenant_id, "tenant")
        if dom is None or ten is None:
            missing = " and ".join(k for k, v in (("domain pack", dom), ("tenant policy", ten)) if v is None)
            raise NoActivePacks(f"tenant {tenant_id!r} has no active {missing}; publish and activate one first")
        key = (tenant_id, dom.content_hash, ten.content_hash)
        cached = self._compiled.get(key)
        if cached is not None:
            return cached
        domain_model = model_from_data(dom.content, f"{dom.name}@{dom.version}")
        tenant_model = model_from_data(ten.content, f"{ten.name}@{ten.version}")
        if not isinstance(domain_model, DomainPack) or not isinstance(tenant_model, TenantPolicy):
            raise PackError([])
        domain = compile_domain(domain_model, domain_model.name)
        tenant = compile_tenant(tenant_model, domain, tenant_model.tenantId)
        packs = ActivePacks(domain, tenant)
        self._compiled[key] = packs
        return packs

    # --------------------------------------------------------------------------------------------- process

    async def process(
        self, tenant_id: str, submissions: Iterable[Submission], *, dry_run: bool = True
    ) -> BatchReport:
        """Process one batch (caller sizes it) and return once all of it is stored.

        The batch is written in transactions of `write_chunk` exceptions, each started as soon as its
        exceptions are decided, so the database works on one chunk while the next is decided. An exception
        commits in exactly one transaction together with its events, audit entry, approval request, memory
        case and intake-queue completion, and chunks commit in order, so a crash leaves a prefix of the batch
        stored and no half-processed exception; running the batch again dedupes what was stored."""
        writer = _ChunkWriter(self.store, tenant_id, self.write_chunk, Slicer())
        try:
            return await self._process(tenant_id, submissions, dry_run, writer)
        finally:
            await writer.drain()  # never return (or raise) with a transaction still in flight

    async def _process(
        self, tenant_id: str, submissions: Iterable[Submission], dry_run: bool, writer: _ChunkWriter
    ) -> BatchReport:
        t0 = time.perf_counter()
        # The collector pauses while the batch is decided and written (`heap.batch_scope`), not while its
        # plans' tool calls run, which can take as long as the tools' timeouts. The batch's writes are gone
        # when `_decide_and_write` returns, so the collection that ends the pause does not traverse them.
        with batch_scope():
            report, ready = await self._decide_and_write(tenant_id, submissions, dry_run, writer)
        # --- execution: hand ready plans to the tool executor
        if ready is not None:
            assert self.execution is not None
            for result in await self.execution.run_many(tenant_id, ready):
                if result.executed and result.status != "IN_PROGRESS":
                    report.by_status["IN_PROGRESS"] -= 1
                    report.by_status[result.status] += 1
        # --- end execution
        report.elapsed_s = time.perf_counter() - t0
        return report

    async def _decide_and_write(
        self, tenant_id: str, submissions: Iterable[Submission], dry_run: bool, writer: _ChunkWriter
    ) -> tuple[BatchReport, list[ExecutionContext] | None]:
        """The batch decided and stored; with the plans ready to execute, or None when this batch executes
        nothing (a dry run, a dryRun tenant, or no execution service)."""
        packs = await self.active_packs(tenant_id)
        report = BatchReport()
        now = self.clock()
        accepted: list[tuple[Submission, IntakeResult, str | None]] = []
        for sub in submissions:
            await writer.slicer.tick()
            explicit = isinstance(sub.data, dict) and isinstance(sub.data.get("exceptionId"), str)
            try:
                eid = str(sub.data["exceptionId"]).strip() if explicit else self.id_factory()
                if not eid or len(eid) > 200:
                    raise IntakeRejected("exceptionId must be 1..200 characters")
                ir = intake(sub, tenant_id, eid, packs.domain)
            except IntakeRejected as exc:
                report.rejected.append(Rejected(sub.line, str(exc)))
                report.items.append(ItemOutcome(sub.line, "rejected", None))
                continue
            except Exception as exc:  # malformed data must never stop the batch
                report.rejected.append(Rejected(sub.line, f"unprocessable: {type(exc).__name__}: {exc}"[:300]))
                report.items.append(ItemOutcome(sub.line, "rejected", None))
                continue
            accepted.append((sub, ir, idempotency_key(ir, explicit, sub.queue_id)))
        done_queue_ids: list[int] = []  # queue items whose submission was not rejected

        def outcome(sub: Submission, kind: str, exception_id: str | None) -> None:
            report.items.append(ItemOutcome(sub.line, kind, exception_id))
            if kind != "rejected" and sub.queue_id is not None:
                done_queue_ids.append(sub.queue_id)

        # --- memory: a search process starts on the batch's similar cases while the store answers the lookup
        started = await self._memory_start(tenant_id, [ir for _, ir, _ in accepted], packs)
        # --- end memory
        # dedupe against the store and within the batch; one read covers every accepted item (a superset of
        # the ids and fingerprints the checks below consult)
        if accepted:
            lookup = await self.store.batch_lookup(
                tenant_id,
                [k for _, _, k in accepted if k],
                [ir.record.exception_id for _, ir, _ in accepted],
                [ir.fingerprint for _, ir, _ in accepted],
            )
            known, taken = lookup.known_keys, lookup.taken_ids
            open_by_fp, stats = lookup.open_by_fingerprint, lookup.fingerprint_stats
        else:
            known, taken, open_by_fp, stats = {}, set(), {}, {}
        fresh: list[tuple[Submission, IntakeResult, str | None]] = []
        seen_keys: set[str] = set()
        batch_dups: list[tuple[Submission, str]] = []  # repeats of a key first seen in this batch
        for item in accepted:
            k = item[2]
            if k and k in known:
                report.duplicates += 1
                outcome(item[0], "duplicate", known[k])
                continue
            if k and k in seen_keys:
                report.duplicates += 1
                batch_dups.append((item[0], k))
                continue
            if k:
                seen_keys.add(k)
            fresh.append(item)
        # A caller-chosen exceptionId already in use (under another idempotency key) is a rejection, not a crash.
        unique: list[tuple[Submission, IntakeResult, str | None]] = []
        for item in fresh:
            eid = item[1].record.exception_id
            if eid in taken:
                report.rejected.append(Rejected(item[0].line, f"exceptionId {eid!r} is already used by another exception"))
                outcome(item[0], "rejected", None)
                continue
            taken.add(eid)
            unique.append(item)
        fresh = unique

        batch_open: dict[str, str] = {}
        writes: list[ExceptionWrite] = []
        approvals: list[Any] = []  # approval requests, stored in the same transaction as their exceptions
        # --- memory: similar cases and last resolutions for triage; case rows written with the batch
        mem = await self._memory_batch(tenant_id, [ir for _, ir, _ in fresh if ir.fingerprint not in open_by_fp],
                                       packs, started)
        cases: list[Any] = []
        # --- end memory
        for sub, ir, key in fresh:
            await writer.step(writes, done_queue_ids, approvals, cases)
            fp = ir.fingerprint
            target = open_by_fp.get(fp) or batch_open.get(fp)
            if target is not None:
                writes.append(self._recurrence_write(ir, key, target, sub, now))
                report.recurrences += 1
                outcome(sub, "recurrence", target)
                if key:
                    known[key] = target
                continue
            st = stats.get(fp)
            if mem is not None:  # memory: the search process's answers may still be on their way
                await mem.wait(ir.record.exception_id)
            last_res = mem.last_resolution.get(fp) if mem is not None else None  # memory
            rec = (RecurrenceInfo(st.occurrences, st.first_seen, st.last_seen, st.last_exception_id, last_res)
                   if st else None)
            similar = mem.similar.get(ir.record.exception_id, ()) if mem is not None else ()  # memory
            decided = decide(ir, packs.domain, packs.tenant, received_at=sub.received_at, now=now,
                             recurrence=rec, similar=similar, dry_run=dry_run)
            if decided.status.is_open:
                batch_open[fp] = ir.record.exception_id
            writes.append(self._new_write(decided, key, packs, sub, now, rec.count if rec else 0))
            if mem is not None:  # memory: index the exception in its own transaction
                cases.append(mem.case_doc(ir, status=decided.status.value, received_at=sub.received_at,
                                          severity=decided.triage.severity.value if decided.triage else None))
            # --- approvals: a non-dry run's PENDING_APPROVAL exception gets its approval request in this write
            if not dry_run and decided.status == ResolutionStatus.PENDING_APPROVAL and decided.plan is not None:
                request = request_for_decision(decided, tenant_id, self.actor, now, tenant_ttl(packs.tenant.spec))
                approvals.append(request)
                writes[-1].audits.append(AuditRow(self.actor, "approval.requested", request.exception_id, now, {
                    "approvalId": request.approval_id, "allowedRoles": list(request.allowed_roles),
                    "approvalsNeeded": request.approvals_needed, "expiresAt": request.expires_at.isoformat()}))
            # --- end approvals
            self._count(report, decided)
            outcome(sub, "processed", ir.record.exception_id)
            if key:
                known[key] = ir.record.exception_id
        for sub, k in batch_dups:
            outcome(sub, "duplicate", known.get(k))
        await writer.finish(writes, done_queue_ids, approvals, cases)
        if self.memory is not None and cases:  # memory: a search process reads them while the next batch comes
            self.memory.written(tenant_id)
        if self.execution is None or dry_run or packs.tenant.spec.dryRun:
            return report, None
        return report, [execution_context(w) for w in writes if w.is_new and w.row.status == "IN_PROGRESS"]

    # --- memory
    async def _memory_start(self, tenant_id: str, items: list[IntakeResult], packs: ActivePacks) -> Any:
        """`Memory.start_batch`: the batch's searches handed to a search process, or None."""
        if self.memory is None:
            return None
        try:
            return await self.memory.start_batch(tenant_id, items, packs.domain, packs.tenant.spec.similarCases)
        except Exception as exc:
            log.warning("memory unavailable for tenant %s: %s", tenant_id, exc)
            return None

    async def _memory_batch(self, tenant_id: str, items: list[IntakeResult], packs: ActivePacks,
                            started: Any) -> Any:
        """The memory's contribution to a batch (`breakdesk.memory.BatchMemory`), or None without a memory.
        A memory failure never stops the pipeline: the batch is triaged without similar cases and the
        background indexer indexes its exceptions later."""
        if self.memory is None:
            return None
        try:
            return await self.memory.for_batch(tenant_id, items, packs.domain, packs.tenant.spec.similarCases,
                                               started)
        except Exception as exc:
            log.warning("memory unavailable for tenant %s: %s", tenant_id, exc)
            return None
    # --- end memory

    @staticmethod
    def _count(report: BatchReport, d: Decided) -> None:
        report.processed += 1
        report.exception_ids.append(d.intake.record.exception_id)
        report.by_type[d.intake.record.exception_type] += 1
        if d.triage:
            report.by_severity[d.triage.severity.value] += 1
        if d.policy:
            report.by_actionability[d.policy.actionability.value] += 1
        report.by_status[d.status.value] += 1
        report.approval_required += int(d.approval_required)
        report.escalated += int(d.escalated)
        report.stage_errors += int(d.error is not None)

    def _events(
        self, exception_id: str, events: list[StageEvent], at: datetime, packs: ActivePacks | None, action: str
    ) -> tuple[list[EventRow], list[AuditRow]]:
        """One event per stage decision, and one audit entry for the pass that records every decision in it.

        The audit entry carries each stage's decision, confidence, next step and evidence, plus a digest of
        the stage events, so the chain also vouches for the events: one hash-chain link per exception
        instead of one per stage keeps durable throughput up without auditing less."""
        rows: list[EventRow] = []
        stages: list[dict[str, Any]] = []
        encoded: list[bytes] = []
        for event in events:
            decision = _decision_dict(event.decision)
            decision_json = None if decision is None else canonical_json(decision)
            payload_json = canonical_json(event.payload)
            rows.append(EventRow(exception_id, event.stage, at, decision, event.payload,
                                 (None if decision_json is None else decision_json.decode(), payload_json.decode())))
            stages.append({"stage": event.stage, **(decision or {})})
            encoded.append(b"".join((b"[", orjson.dumps(event.stage), b",", decision_json or b"null", b",",
                                     payload_json, b"]")))
        # sha256 of canonical_json([[stage, decision, payload], ...]): the events exactly as their columns
        # store them (encoded once, for both), so an auditor can recompute it from `exception_events`.
        digest = hashlib.sha256(b"[" + b",".join(encoded) + b"]").hexdigest()
        detail: dict[str, Any] = {"stages": stages, "eventsDigest": digest}
        if packs is not None:
            detail["packs"] = [packs.domain.ref, packs.tenant.ref]
        return rows, [AuditRow(self.actor, action, exception_id, at, detail)]

    def _new_write(
        self, d: Decided, key: str | None, packs: ActivePacks, sub: Submission, now: datetime, recurrence: int = 0
    ) -> ExceptionWrite:
        ir = d.intake
        tri, pol, plan = d.triage, d.policy, d.plan
        record = record_json(
            ir.record,
            severity=tri.severity.value if tri else None,
            status=d.status.value,
            detected_rules=list(tri.matched_rules) if tri else [],
            suggested_actions=[f"{s.step_id}: {s.tool or s.description} [{s.status}]" for s in plan.steps]
            if plan
            else [],
        )
        row = ExceptionRow(
            tenant_id=ir.record.tenant_id,
            exception_id=ir.record.exception_id,
            source_system=ir.record.source_system,
            exception_type=ir.record.exception_type,
            status=d.status.value,
            received_at=sub.received_at,
            record=record,
            severity=tri.severity.value if tri else None,
            actionability=pol.actionability.value if pol else None,
            playbook_id=pol.playbook_id if pol else None,
            approval_required=d.approval_required,
            confidence=tri.confidence if tri else ir.type_confidence,
            priority=float(tri.priority) if tri else 0.0,
            fingerprint=ir.fingerprint,
            idempotency_key=key,
            source_id=ir.source_id,
            domain_pack=packs.domain.ref,
            tenant_policy=packs.tenant.ref,
            triaged_at=now if tri else None,
            resolved_at=None,
            updated_at=now,
            summary=tri.summary if tri else (d.error or ""),
        )
        for event in d.events:
            if event.stage == "policy":
                # the conditions' `recurrence` the plan was made with, for a run resumed from the store (after a
                # restart, an approval): counts read later cannot tell it (batches decided concurrently)
                event.payload["recurrence"] = recurrence
        events, audits = self._events(row.exception_id, d.events, now, packs, "pipeline.decided")
        return ExceptionWrite(row=row, events=events, audits=audits, is_new=True)

    def _recurrence_write(
        self, ir: IntakeResult, key: str | None, target: str, sub: Submission, now: datetime
    ) -> ExceptionWrite:
        decision = AgentDecision(
            decision=f"recurrence of {target}",
            confidence=ir.decision.confidence,
            evidence=(
                ev("recurrence", message=f"same fingerprint as open exception {target}", ref=target),
                *ir.decision.evidence,
            ),
            next_step="none",
        )
        row = ExceptionRow(
            tenant_id=ir.record.tenant_id,
            exception_id=ir.record.exception_id,
            source_system=ir.record.source_system,
            exception_type=ir.record.exception_type,
            status=ResolutionStatus.RECEIVED.value,
            received_at=sub.received_at,
            record=record_json(ir.record),
            fingerprint=ir.fingerprint,
            idempotency_key=key,
            source_id=ir.source_id,
            updated_at=now,
        )
        event = StageEvent("recurrence", decision, {"occurrence": ir.record.exception_id,
                                                 "rawPayload": ir.record.raw_payload})
        events, audits = self._events(target, [event], now, None, "recurrence.recorded")
        return ExceptionWrite(row=row, events=events, audits=audits, is_new=False, recurrence_of=target)
