"""The execution journal: one row per playbook-step decision and per HTTP attempt, keyed
(tenant, exception, step_index, phase, attempt).

The execution service writes a STARTED row before it sends a request to a tool that is not idempotent, and the
outcome of that call before it sends anything else; outcomes of idempotent calls are written with the next
journal write at the latest. Each write carries the exception's events and audit entries and checks, in the
same transaction, that the exception is still IN_PROGRESS. A restarted worker therefore knows which steps are
settled, which call may have reached a tool (STARTED without an outcome), and never sends a settled
non-idempotent step again (an unsettled idempotent one may be repeated, which is what idempotent means).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Dialect, Row, and_, bindparam, exists, func, null, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import BindParameter, ClauseElement

from breakdesk.audit.chain import body_json, canonical_json
from breakdesk.store._base import (
    Program,
    _type_processor,
    audit_params,
    bulk_statement,
    chunked,
    prepare,
    utcnow,
)
from breakdesk.store.approvals import (
    Approval,
    ApprovalRepo,
    approval_from_row,
    approval_params,
)
from breakdesk.store.errors import Conflict, NotFound, StoreError
from breakdesk.store.exceptions import _UPDATABLE
from breakdesk.store.records import TERMINAL_STATUSES, AuditRow, EventRow, unaudited_change
from breakdesk.store.tables import (
    approvals,
    audit_entries,
    audit_heads,
    exception_events,
    exceptions,
    executions,
    fingerprints,
)

_R = executions.c
_X = exceptions.c
_E = exception_events.c


@dataclass(slots=True)
class JournalEntry:
    """One atomic journal write of one exception's run.

    - `inserts`: new attempt rows (a duplicate key means another runner got there first: ClaimLost);
    - `settles`: this runner's STARTED rows, now with their outcome;
    - `decisions`: attempt-0 rows (SKIPPED, MANUAL, NEEDS_APPROVAL, refused), inserted or replaced;
    - `fields`: exception projection changes (e.g. the final status); the whole entry is refused with
      StatusChanged unless the exception is still `expect_status`;
    - `approval`: a step approval request created with it.
    """

    exception_id: str
    inserts: list[ExecutionRecord] = field(default_factory=list)
    settles: list[ExecutionRecord] = field(default_factory=list)
    decisions: list[ExecutionRecord] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    audits: list[AuditRow] = field(default_factory=list)
    fields: dict[str, Any] | None = None
    approval: Approval | None = None
    expect_status: str = "IN_PROGRESS"


@dataclass(slots=True)
class ExecutionContext:
    """What a run starts from. Read with `execution_context`, or built by the pipeline for an exception it
    has just written (then nothing needs to be read back)."""

    exception: dict[str, Any]
    plan: dict[str, Any] | None
    policy: dict[str, Any]
    approvals: list[Approval] = field(default_factory=list)
    records: list[ExecutionRecord] = field(default_factory=list)
    #: The conditions' `recurrence`: earlier occurrences of the exception's fingerprint when it was decided
    #: (what its plan was made with). None: not known (a run falls back to its merged recurrences).
    recurrence: int | None = None

    @staticmethod
    def decided_recurrence(policy: Mapping[str, Any]) -> int | None:
        """The `recurrence` an exception's plan was made with, as its policy event records it (None: decided
        before it was recorded)."""
        value = policy.get("recurrence")
        return value if isinstance(value, int) else None

    @property
    def exception_id(self) -> str:
        return str(self.exception["exception_id"])


class StatusChanged(Conflict):
    """The exception left the status the execution expected (a person closed it, an approval expired...)."""


class ClaimLost(Conflict):
    """Another runner already recorded this attempt: this runner must stop."""


@dataclass(slots=True)
class ExecutionRecord:
    """One journal row. `final` marks the row that settles its step (phase)."""

    exception_id: str
    step_index: int
    phase: str
    attempt: int
    step_id: str
    tool: str | None
    status: str
    final: bool
    started_at: datetime
    idempotency_key: str | None = None
    args: Any = None
    output: Any = None
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    finished_at: datetime | None = None
    deadline: datetime | None = None

    @property
    def key(self) -> tuple[int, str, int]:
        return self.step_index, self.phase, self.attempt

    def as_dict(self) -> dict[str, Any]:
        """JSON view for the API and CLI."""
        return {
            "stepIndex": self.step_index,
            "stepId": self.step_id,
            "phase": self.phase,
            "attempt": self.attempt,
            "tool": self.tool,
            "status": self.status,
            "final": self.final,
            "idempotencyKey": self.idempotency_key,
            "args": self.args,
            "output": self.output,
            "statusCode": self.status_code,
            "latencyMs": self.latency_ms,
            "error": self.error,
            "startedAt": self.started_at.isoformat(),
            "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
        }


def _record(row: Row) -> ExecutionRecord:
    m = row._mapping
    return ExecutionRecord(
        exception_id=m["exception_id"],
        step_index=int(m["step_index"]),
        phase=m["phase"],
        attempt=int(m["attempt"]),
        step_id=m["step_id"],
        tool=m["tool"],
        status=m["status"],
        final=bool(m["final"]),
        started_at=m["started_at"],
        idempotency_key=m["idempotency_key"],
        args=m["args"],
        output=m["output"],
        status_code=m["status_code"],
        latency_ms=m["latency_ms"],
        error=m["error"],
        finished_at=m["finished_at"],
        deadline=m["deadline"],
    )


def _params(tenant_id: str, r: ExecutionRecord) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "exception_id": r.exception_id,
        "step_index": r.step_index,
        "phase": r.phase,
        "attempt": r.attempt,
        "step_id": r.step_id,
        "tool": r.tool,
        "status": r.status,
        "final": r.final,
        "idempotency_key": r.idempotency_key,
        "args": r.args,
        "output": r.output,
        "status_code": r.status_code,
        "latency_ms": r.latency_ms,
        "error": r.error,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "deadline": r.deadline,
    }


#: Journal transactions of at most this many entries may run inline on SQLite (see `InlineSqliteWriter`);
#: larger group commits go to the driver thread, so the event loop never runs a long transaction.
INLINE_ENTRIES = 8

_SETTLE_FIELDS = ("status", "final", "output", "status_code", "latency_ms", "error", "finished_at", "args")
_H = audit_heads.c
_F = fingerprints.c


# ------------------------------------------------------------------ the journal write, as one program
#
# Every statement of a journal transaction is built and compiled once per dialect (`prepare`), and the
# transaction is a generator of driver statements (`Program`) that `StoreBase._write_program` runs in one
# trip to SQLite's driver thread, or straight on asyncpg. Measured on a non-idempotent step (claim + settle +
# event + audit): SQLAlchemy's per-statement compilation and ~4 thread hand-offs per statement had been
# most of the ~3.2 ms CPU each such transaction cost.


def _b(name: str, column: Any) -> BindParameter[Any]:
    """A named bind parameter typed like `column` (so `prepare` finds its bind processor)."""
    return bindparam(name, type_=column.type)


def _head_and_state(n: int) -> ClauseElement:
    """The tenant's audit head (locked FOR UPDATE on PostgreSQL) joined with the status and last event seq
    of `n` of its exceptions: one statement where there were two. A tenant with none of them still gives
    its head row (outer join); no row at all means the tenant does not exist."""
    last = (
        select(func.coalesce(func.max(_E.seq), 0))
        .where(_E.tenant_id == _X.tenant_id, _E.exception_id == _X.exception_id)
        .correlate(exceptions)
        .scalar_subquery()
    )
    ids = [_b(f"e{i}", _X.exception_id) for i in range(n)]
    joined = audit_heads.outerjoin(exceptions, and_(_X.tenant_id == _H.tenant_id, _X.exception_id.in_(ids)))
    return (
        select(_H.seq, _H.hash, _X.exception_id, _X.status, last)
        .select_from(joined)
        .where(_H.tenant_id == _b("t", _H.tenant_id))
        .with_for_update(of=audit_heads)
    )


def _settle_statement() -> ClauseElement:
    return (
        update(executions)
        .where(
            _R.tenant_id == _b("w_tenant", _R.tenant_id),
            _R.exception_id == _b("w_exception", _R.exception_id),
            _R.step_index == _b("w_index", _R.step_index),
            _R.phase == _b("w_phase", _R.phase),
            _R.attempt == _b("w_attempt", _R.attempt),
            _R.status == _b("w_status", _R.status),
        )
        .values({name: _b(f"v_{name}", _R[name]) for name in _SETTLE_FIELDS})
    )


def _head_update() -> ClauseElement:
    return (
        update(audit_heads)
        .where(_H.tenant_id == _b("w_tenant", _H.tenant_id))
        .values(seq=_b("v_seq", _H.seq), hash=_b("v_hash", _H.hash))
    )


def _fields_statement(keys: tuple[str, ...]) -> ClauseElement:
    return (
        update(exceptions)
        .where(_X.tenant_id == _b("w_tenant", _X.tenant_id), _X.exception_id == _b("w_exception", _X.exception_id))
        .values({k: _b(f"v_{k}", _X[k]) for k in keys})
    )


def _fingerprint_statement(terminal: bool) -> ClauseElement:
    """Keep `fingerprints.open_exception_id` in step with a status change (as `_apply_fields` does)."""
    own = (
        select(_X.fingerprint)
        .where(_X.tenant_id == _b("w_tenant", _X.tenant_id), _X.exception_id == _b("w_exception", _X.exception_id))
        .scalar_subquery()
    )
    stmt = update(fingerprints).where(_F.tenant_id == _b("w_tenant2", _F.tenant_id), _F.fingerprint == own)
    if terminal:
        return stmt.where(_F.open_exception_id == _b("w_exception2", _F.open_exception_id)).values(
            open_exception_id=null()
        )
    return stmt.values(open_exception_id=_b("v_open", _F.open_exception_id))


def _decision_upsert(dialect: Dialect) -> Any:
    """Attempt-0 rows are inserted or replaced (a re-decided step); module-level: it keys the compiled cache."""
    ins = (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(executions)
    ex = ins.excluded
    return ins.on_conflict_do_update(
        index_elements=[_R.tenant_id, _R.exception_id, _R.step_index, _R.phase, _R.attempt],
        set_={
            "status": ex.status,
            "final": ex.final,
            "tool": ex.tool,
            "args": ex.args,
            "error": ex.error,
            "started_at": ex.started_at,
            "finished_at": ex.finished_at,
        },
    )


def _fields_program(dialect: Dialect, tenant_id: str, exception_id: str, fields: dict[str, Any]) -> Program[None]:
    """Projection changes of one exception (the journal's counterpart of `ExceptionRepo._apply_fields`)."""
    unknown = sorted(set(fields) - _UPDATABLE)
    if unknown:
        raise StoreError(f"cannot update exception field(s): {', '.join(unknown)}")
    values = dict(fields)
    values.setdefault("updated_at", utcnow())
    keys = tuple(sorted(values))
    stmt = prepare(("journal.fields", keys), dialect, lambda: _fields_statement(keys))
    named = {f"v_{k}": v for k, v in values.items()}
    named.update(w_tenant=tenant_id, w_exception=exception_id)
    if (yield ("count", stmt.sql, stmt.params(named))) == 0:
        raise NotFound(f"exception {exception_id!r} does not exist for tenant {tenant_id!r}")
    status = values.get("status")
    if status is None:
        return
    terminal = status in TERMINAL_STATUSES
    fp = prepare(("journal.fingerprint", terminal), dialect, lambda: _fingerprint_statement(terminal))
    yield ("count", fp.sql, fp.params({"w_tenant": tenant_id, "w_exception": exception_id, "w_tenant2": tenant_id,
                                      "w_exception2": exception_id, "v_open": exception_id}))


def _journal_program(
    dialect: Dialect, tenant_id: str, entries: Sequence[JournalEntry]
) -> Program[list[StoreError | None]]:
    """One journal transaction: lock the tenant's audit head, refuse entries whose exception is missing or
    not in its expected status, then write the others' rows, events, projection changes, approval requests
    and audit entries. Raises Conflict (rolling everything back) when a settle finds no STARTED row."""
    results: list[StoreError | None] = [None] * len(entries)
    ids = sorted({e.exception_id for e in entries})
    head: tuple[int, str] | None = None
    state: dict[str, list[Any]] = {}
    for part in chunked(ids):
        # IN lists padded to a power of two (repeating the last id): a handful of compiled variants, not one
        # per group size
        size = 1 << (len(part) - 1).bit_length()
        q = prepare(("journal.head_state", size), dialect, partial(_head_and_state, size))
        named: dict[str, Any] = {f"e{i}": part[min(i, len(part) - 1)] for i in range(size)}
        named["t"] = tenant_id
        rows = yield ("rows", q.sql, q.params(named))
        if not rows:
            raise NotFound(f"tenant {tenant_id!r} does not exist")
        if head is None:
            head = (int(rows[0][0]), str(rows[0][1]))
        for _seq, _hash, exc_id, status, seq in rows:
            if exc_id is not None:
                state[exc_id] = [status, int(seq or 0)]
    assert head is not None  # entries is never empty
    accepted: list[JournalEntry] = []
    for i, e in enumerate(entries):
        st = state.get(e.exception_id)
        unaudited = unaudited_change(e.exception_id, e.fields, e.audits)
        if unaudited is not None:
            results[i] = StoreError(unaudited)
        elif st is None:
            results[i] = NotFound(f"exception {e.exception_id!r} does not exist for tenant {tenant_id!r}")
        elif st[0] != e.expect_status:
            results[i] = StatusChanged(f"exception {e.exception_id!r} is {st[0]}, no longer {e.expect_status}")
        else:
            accepted.append(e)
            if e.fields and "status" in e.fields:
                st[0] = e.fields["status"]  # a later entry of the same exception sees the change
    inserts = [_params(tenant_id, r) for e in accepted for r in e.inserts]
    if inserts:
        yield bulk_statement(executions, dialect, inserts)
    settles = [(e, r) for e in accepted for r in e.settles]
    if settles:
        settle = prepare("journal.settle", dialect, _settle_statement)
        for e, r in settles:
            named = {f"v_{name}": getattr(r, name) for name in _SETTLE_FIELDS}
            named.update(w_tenant=tenant_id, w_exception=e.exception_id, w_index=r.step_index, w_phase=r.phase,
                         w_attempt=r.attempt, w_status="STARTED")
            if (yield ("count", settle.sql, settle.params(named))) != 1:
                raise Conflict(f"attempt {r.key} of {e.exception_id!r} is not STARTED by this runner")
    decisions = [_params(tenant_id, r) for e in accepted for r in e.decisions]
    if decisions:
        yield bulk_statement(executions, dialect, decisions, statement=_decision_upsert)
    events: list[dict[str, Any]] = []
    for e in accepted:
        st = state[e.exception_id]
        for ev in e.events:
            st[1] += 1
            events.append({"tenant_id": tenant_id, "exception_id": e.exception_id, "seq": st[1],
                           "stage": ev.stage, "at": ev.at, "decision": ev.decision, "payload": ev.payload})
    if events:
        yield bulk_statement(exception_events, dialect, events)
    for e in accepted:
        if e.fields:
            yield from _fields_program(dialect, tenant_id, e.exception_id, dict(e.fields))
    requests = [e.approval for e in accepted if e.approval is not None]
    if requests:
        yield bulk_statement(approvals, dialect, approval_params(tenant_id, requests))
    audit_rows, new_head = audit_params(tenant_id, head, [a for e in accepted for a in e.audits])
    if audit_rows:
        yield bulk_statement(audit_entries, dialect, audit_rows, encoded=("detail",))
        hu = prepare("journal.head", dialect, _head_update)
        yield ("count", hu.sql, hu.params({"w_tenant": tenant_id, "v_seq": new_head[0], "v_hash": new_head[1]}))
    return results


# ------------------------------------------------ PostgreSQL: a small journal entry as one statement
#
# A claim (with the previous step's settle, its event and audit entry) was eight round trips on PostgreSQL
# (BEGIN, head lock, one per write, COMMIT), which were most of a non-idempotent step's overhead. The
# common shapes (one entry; a few inserts, events and audit entries; at most one settle; no decisions,
# projection changes or approval request) are written by one statement of data-modifying CTEs instead,
# atomic in its implicit transaction: it locks the tenant's audit head first (as every writer does), checks
# the exception's status, settles, inserts, and extends the audit chain with the hashes computed by the
# server from the locked head: sha256(prev_hash || body), the body being the canonical JSON that
# `audit.chain.body_json` builds, split around its only head-dependent part, the sequence number.

#: Largest number of inserts, events or audit entries the single statement takes (else the generic program).
SINGLE_MAX = 8
_EXEC_COLUMNS = tuple(_params("", ExecutionRecord("", 0, "", 0, "", None, "", False, utcnow())))


def _single_shape(entries: Sequence[JournalEntry]) -> tuple[int, int, int, int] | None:
    """(inserts, settles, events, audits) when the entries fit the single statement, else None."""
    if len(entries) != 1:
        return None
    e = entries[0]
    if e.decisions or e.fields or e.approval is not None or len(e.settles) > 1:
        return None
    shape = (len(e.inserts), len(e.settles), len(e.events), len(e.audits))
    if max(shape) > SINGLE_MAX or sum(shape) == 0:
        return None
    return shape


class _Slots:
    """Numbered, typed placeholders ($n::TYPE) in the order their values are appended."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.n = 0

    def __call__(self, column: Any = None, cast: str | None = None) -> str:
        self.n += 1
        return f"${self.n}::{cast or column.type.compile(dialect=self.dialect)}"


def _single_sql(dialect: Dialect, shape: tuple[int, int, int, int]) -> str:
    """The statement for one shape; its placeholders follow `_single_params`' order."""
    n_ins, n_set, n_ev, n_au = shape
    p = _Slots(dialect)
    t, x, expect = p(_X.tenant_id), p(_X.exception_id), p(_X.status)
    ctes = [
        f"head AS (SELECT seq, hash FROM audit_heads WHERE tenant_id = {t} FOR UPDATE)",
        f"st AS (SELECT x.status, (SELECT coalesce(max(e.seq), 0) FROM exception_events e "
        f"WHERE e.tenant_id = x.tenant_id AND e.exception_id = x.exception_id) AS last "
        f"FROM exceptions x WHERE x.tenant_id = {t} AND x.exception_id = {x})",
        f"ok AS (SELECT head.seq, head.hash, st.last FROM head, st WHERE st.status = {expect})",
    ]
    if n_set:
        where = [f"{k} = {p(_R[k])}" for k in ("exception_id", "step_index", "phase", "attempt")]
        sets = ", ".join(f"{k} = {p(_R[k])}" for k in _SETTLE_FIELDS)
        ctes.append(
            f"settled AS (UPDATE executions SET {sets} WHERE tenant_id = {t} AND {' AND '.join(where)} "
            f"AND status = 'STARTED' AND EXISTS (SELECT 1 FROM ok) RETURNING 1)"
        )
        ctes.append(f"go AS (SELECT ok.* FROM ok WHERE (SELECT count(*) FROM settled) = {n_set})")
    else:
        ctes.append("go AS (SELECT ok.* FROM ok)")
    if n_ins:
        rows = ", ".join("(" + ", ".join(p(_R[c]) for c in _EXEC_COLUMNS) + ")" for _ in range(n_ins))
        cols = ", ".join(_EXEC_COLUMNS)
        ctes.append(f"ins AS (INSERT INTO executions ({cols}) SELECT v.* FROM go, (VALUES {rows}) AS v({cols}))")
    if n_ev:
        rows = ", ".join(f"({i + 1}, {p(_E.stage)}, {p(_E.at)}, {p(_E.decision)}, {p(_E.payload)})"
                         for i in range(n_ev))
        ctes.append(
            f"ev AS (INSERT INTO exception_events (tenant_id, exception_id, seq, stage, at, decision, payload) "
            f"SELECT {t}, {x}, go.last + v.n, v.stage, v.at, v.decision, v.payload FROM go, "
            f"(VALUES {rows}) AS v(n, stage, at, decision, payload))"
        )
    if n_au:
        a = audit_entries.c
        joins, selects = [], []
        for i in range(1, n_au + 1):
            prev = "go.hash" if i == 1 else f"c{i - 1}.h"
            at, actor, action, subject = p(a.at), p(a.actor), p(a.action), p(a.subject)
            detail, pre, post = p(a.detail), p(cast="BYTEA"), p(cast="BYTEA")
            joins.append(
                f"CROSS JOIN LATERAL (SELECT encode(sha256(convert_to({prev}, 'UTF8') || {pre} || "
                f"convert_to((go.seq + {i})::text, 'UTF8') || {post}), 'hex') AS h) AS c{i}"
            )
            selects.append(f"SELECT {t}, chain.seq + {i}, {at}, {actor}, {action}, {subject}, {detail}, "
                           f"chain.h{i - 1}, chain.h{i} FROM chain")
        hashes = ", ".join(f"c{i}.h AS h{i}" for i in range(1, n_au + 1))
        ctes.append(f"chain AS (SELECT go.seq, go.hash AS h0, {hashes} FROM go {' '.join(joins)})")
        ctes.append(
            "au AS (INSERT INTO audit_entries (tenant_id, seq, at, actor, action, subject, detail, prev_hash, hash) "
            + " UNION ALL ".join(selects) + ")"
        )
        ctes.append(f"hu AS (UPDATE audit_heads SET seq = chain.seq + {n_au}, hash = chain.h{n_au} FROM chain "
                    f"WHERE audit_heads.tenant_id = {t})")
    settled = "(SELECT count(*) FROM settled)" if n_set else "0"
    return (f"WITH {', '.join(ctes)} SELECT (SELECT count(*) FROM head), (SELECT status FROM st), {settled}, "
            f"(SELECT count(*) FROM go)")


#: Where an audit body holds its sequence number (written as 0 when the server fills it in).
_SEQ_MARK = b',"seq":0,"subject":'

_single_sqls: dict[tuple[int, int, int, int], str] = {}
#: Per dialect: the bind processors of the settle fields, the execution columns, the event columns and the
#: audit entry's timestamp.
_single_procs: dict[str, tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...], Any]] = {}


def _convert(procs: tuple[Any, ...], values: Sequence[Any]) -> list[Any]:
    return [v if p is None or v is None else p(v) for p, v in zip(procs, values, strict=True)]


def _single_program(
    dialect: Dialect, tenant_id: str, entry: JournalEntry, shape: tuple[int, int, int, int]
) -> Program[list[StoreError | None]]:
    """One small journal entry as one statement (see above); results as `_journal_program`'s."""
    sql = _single_sqls.get(shape)
    if sql is None:
        sql = _single_sqls[shape] = _single_sql(dialect, shape)
    procs = _single_procs.get(dialect.name)
    if procs is None:
        procs = _single_procs[dialect.name] = (
            tuple(_type_processor(_R[k].type, dialect) for k in _SETTLE_FIELDS),
            tuple(_type_processor(_R[k].type, dialect) for k in _EXEC_COLUMNS),
            tuple(_type_processor(_E[k].type, dialect) for k in ("stage", "at", "decision", "payload")),
            _type_processor(audit_entries.c.at.type, dialect),
        )
    settle_procs, exec_procs, event_procs, at_proc = procs
    params: list[Any] = [tenant_id, entry.exception_id, entry.expect_status]
    for r in entry.settles:
        params += [r.exception_id, r.step_index, r.phase, r.attempt]
        params += _convert(settle_procs, [getattr(r, k) for k in _SETTLE_FIELDS])
    for r in entry.inserts:
        row = _params(tenant_id, r)
        params += _convert(exec_procs, [row[k] for k in _EXEC_COLUMNS])
    for ev in entry.events:
        params += _convert(event_procs, (ev.stage, ev.at, ev.decision, ev.payload))
    for a in entry.audits:
        detail = canonical_json(a.detail)
        body = body_json(tenant_id, 0, a.at, a.actor, a.action, a.subject, detail)
        # the body ends with {"seq":…,"subject":…,"tenant_id":…}'s members (sorted keys); inside strings a
        # quote is escaped, so the last raw match is that member
        cut = body.rfind(_SEQ_MARK) + len(_SEQ_MARK) - len(b'0,"subject":')
        at = at_proc(a.at) if at_proc is not None else a.at
        params += [at, a.actor, a.action, a.subject, detail.decode(), body[:cut], body[cut + 1 :]]
    heads, status, settled, written = yield ("row", sql, tuple(params))
    if heads == 0:
        raise NotFound(f"tenant {tenant_id!r} does not exist")
    if status is None:
        return [NotFound(f"exception {entry.exception_id!r} does not exist for tenant {tenant_id!r}")]
    if status != entry.expect_status:
        return [StatusChanged(f"exception {entry.exception_id!r} is {status}, no longer {entry.expect_status}")]
    if settled != shape[1] or written != 1:
        raise Conflict(f"an attempt of {entry.exception_id!r} is not STARTED by this runner")
    return [None]


class ExecutionRepo(ApprovalRepo):
    async def execution_records(self, tenant_id: str, exception_id: str) -> list[ExecutionRecord]:
        """The exception's journal in (step, phase, attempt) order."""
        stmt = (
            select(executions)
            .where(_R.tenant_id == tenant_id, _R.exception_id == exception_id)
            .order_by(_R.step_index, _R.phase.desc(), _R.attempt)
        )
        async with self._read() as conn:
            return [_record(r) for r in (await conn.execute(stmt)).all()]

    async def execution_context(self, tenant_id: str, exception_id: str) -> ExecutionContext | None:
        """Everything a run needs, in one read transaction: the projection, the latest plan and policy
        payloads, the approval requests and the journal (None when the exception does not exist)."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(exceptions).where(_X.tenant_id == tenant_id, _X.exception_id == exception_id)
                )
            ).first()
            if row is None:
                return None
            latest: dict[str, Any] = {"resolution": None, "policy": None}
            newest = (
                select(_E.stage, func.max(_E.seq).label("seq"))
                .where(
                    _E.tenant_id == tenant_id,
                    _E.exception_id == exception_id,
                    _E.stage.in_(("resolution", "policy")),
                )
                .group_by(_E.stage)
                .subquery()
            )
            stmt = select(_E.stage, _E.payload).join(
                newest, and_(_E.stage == newest.c.stage, _E.seq == newest.c.seq)
            ).where(_E.tenant_id == tenant_id, _E.exception_id == exception_id)
            for stage, payload in (await conn.execute(stmt)).all():
                latest[stage] = payload
            reqs = (
                await conn.execute(
                    select(approvals)
                    .where(approvals.c.tenant_id == tenant_id, approvals.c.exception_id == exception_id)
                    .order_by(approvals.c.requested_at, approvals.c.approval_id)
                )
            ).all()
            journal = (
                await conn.execute(
                    select(executions)
                    .where(_R.tenant_id == tenant_id, _R.exception_id == exception_id)
                    .order_by(_R.step_index, _R.phase.desc(), _R.attempt)
                )
            ).all()
            policy = latest["policy"] if isinstance(latest["policy"], dict) else {}
            recurrence = ExecutionContext.decided_recurrence(policy)
            if recurrence is None and row.fingerprint is not None:  # (decided before that was recorded)
                # the fingerprint's occurrences less this exception and those merged into it since: the
                # earlier occurrences its plan was made with (the conditions' `recurrence`)
                count = (await conn.execute(select(_F.count).where(
                    _F.tenant_id == tenant_id, _F.fingerprint == row.fingerprint))).scalar()
                if count is not None:
                    recurrence = max(0, int(count) - 1 - int(row.recurrence_count or 0))
        resolution = latest["resolution"] or {}
        return ExecutionContext(
            exception=dict(row._mapping),
            plan=resolution.get("plan") if isinstance(resolution, dict) else None,
            policy=policy,
            approvals=[approval_from_row(r) for r in reqs],
            records=[_record(r) for r in journal],
            recurrence=recurrence,
        )

    async def record_execution(self, tenant_id: str, entry: JournalEntry) -> None:
        """Write one journal entry atomically (raises StatusChanged, ClaimLost or NotFound, writing nothing)."""
        problem = (await self.record_executions(tenant_id, [entry]))[0]
        if problem is not None:
            raise problem

    async def record_executions(
        self, tenant_id: str, entries: Sequence[JournalEntry]
    ) -> list[StoreError | None]:
        """Write many journal entries (of one tenant) in one transaction: group commit for concurrent runs.

        Returns one result per entry: None when written, else the error that refused it (StatusChanged,
        NotFound, ClaimLost); a refused entry writes nothing and does not stop the others. The batch is one
        transaction with a fixed number of statements; if a uniqueness conflict (a lost claim) breaks it,
        the entries are retried one by one to find the loser.
        """
        if not entries:
            return []
        try:
            return await self._record_batch(tenant_id, entries)
        except Conflict:
            if len(entries) == 1:
                return [ClaimLost(f"another runner recorded a step of {entries[0].exception_id!r} first")]
        out: list[StoreError | None] = []
        for entry in entries:
            out.extend(await self.record_executions(tenant_id, [entry]))
        return out

    async def _record_batch(self, tenant_id: str, entries: Sequence[JournalEntry]) -> list[StoreError | None]:
        dialect = self._engine.dialect
        if self._pg and (dialect.server_version_info or (0,)) >= (11,):  # sha256() is PostgreSQL 11+
            shape = _single_shape(entries)
            if shape is not None:
                return await self._write_program(_single_program(dialect, tenant_id, entries[0], shape), single=True)
        # A few entries are a few small statements: on SQLite they may run on the event loop's thread.
        return await self._write_program(_journal_program(dialect, tenant_id, entries),
                                         inline=len(entries) <= INLINE_ENTRIES)

    async def stalled_executions(
        self, tenant_id: str, idle_since: datetime, limit: int = 100
    ) -> list[str]:
        """IN_PROGRESS exceptions nobody has touched since `idle_since` (no projection update, no journal row
        started or finished after it) whose latest plan was not made in a dry run: runs a dead worker left
        behind, or plans that were never handed to an executor."""
        recent = exists().where(
            _R.tenant_id == _X.tenant_id,
            _R.exception_id == _X.exception_id,
            (_R.started_at > idle_since) | (_R.finished_at > idle_since),
        )
        plans = exception_events.alias("plans")
        latest_plan = (
            select(func.max(plans.c.seq))
            .where(
                plans.c.tenant_id == _X.tenant_id,
                plans.c.exception_id == _X.exception_id,
                plans.c.stage == "resolution",
            )
            .correlate(exceptions)
            .scalar_subquery()
        )
        dry = (
            exists()
            .where(
                _E.tenant_id == _X.tenant_id,
                _E.exception_id == _X.exception_id,
                _E.seq == latest_plan,
                _E.payload[("plan", "dryRun")].as_boolean().is_(true()),
            )
            .correlate(exceptions)
        )
        stmt = (
            select(_X.exception_id)
            .where(
                and_(_X.tenant_id == tenant_id, _X.status == "IN_PROGRESS", _X.updated_at <= idle_since),
                ~recent,
                ~dry,
            )
            .order_by(_X.updated_at, _X.exception_id)
            .limit(limit)
        )
        async with self._read() as conn:
            return [r for (r,) in (await conn.execute(stmt)).all()]
