"""CLI for tools and approvals: `breakdesk approvals list|show|approve|reject|expire`, `breakdesk executions`,
`breakdesk resume`, `breakdesk scheduler` and `breakdesk demo-tools`."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from breakdesk.approvals.scheduler import Scheduler
from breakdesk.approvals.service import ApprovalError, ApprovalService, Decision
from breakdesk.cli import app
from breakdesk.cli.common import console, fail, unknown_exception
from breakdesk.cli.runtime import known_tenant, run_with_store
from breakdesk.cli.store_cmds import TenantOpt, UrlOpt
from breakdesk.pipeline.execution import ExecutionOutcome, ExecutionService
from breakdesk.pipeline.orchestrator import NoActivePacks, Orchestrator
from breakdesk.store.approvals import Approval
from breakdesk.tools.executor import ExecutorSettings, ToolExecutor

if TYPE_CHECKING:
    from breakdesk.tools.demo_server import BackgroundServer

#: Requests expired, and stalled runs resumed, per round of `approvals expire` and `resume` (which go on while a
#: round comes back full): bounded memory and transaction sizes, however many are due.
EXPIRE_PAGE = 500
RESUME_PAGE = 1000

approvals_app = typer.Typer(help="Human approvals: list, approve, reject, expire.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")

ActorOpt = Annotated[
    str | None, typer.Option("--as", help="Who decides (default: your login name). Never the requester.")
]
StalledAfterOpt = Annotated[
    float, typer.Option("--stalled-after", min=0, max=31_536_000,
                        help="Seconds without activity before a run is resumed (at most a year).")
]
ApprovalIdArg = Annotated[
    str, typer.Argument(metavar="APPROVAL_ID", help="The approval request's id (`approvals list`).")
]
RoleOpt = Annotated[
    list[str] | None, typer.Option("--role", "-r", help="Role(s) the decider holds (repeatable; default approver).")
]


def configure_cli_logging() -> None:
    """Keep per-attempt logs off the CLI's output: warnings and errors only, on stderr."""
    if structlog.is_configured():
        return
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        # stderr as it is when a line is logged, not when this ran: a stream swapped since (tests capture
        # each test's output and close it after) must not take every later warning down with it
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
    )


@dataclass
class Services:
    orchestrator: Orchestrator
    execution: ExecutionService
    approvals: ApprovalService
    executor: ToolExecutor


@asynccontextmanager
async def services(store: Any, settings: ExecutorSettings | None = None) -> AsyncIterator[Services]:
    """The pipeline, executor, execution and approval services over one store (and one connection pool)."""
    configure_cli_logging()
    executor = ToolExecutor(settings)
    try:
        orch = Orchestrator(store)
        execution = ExecutionService(store, executor, packs=orch.active_packs)  # one compiled-pack cache
        orch.execution = execution
        yield Services(orch, execution, ApprovalService(store, execution), executor)
    finally:
        await executor.aclose()


# ------------------------------------------------------------------------------------------------ output


def print_approvals(items: list[Approval]) -> None:
    """A request per block: its id and exception (never cut: they are what `approve` / `reject` take), status
    and votes on one line; expiry, roles and why it waits indented below. Not a table: at 80 columns a
    six-column table cut the status and the reasons, and cropped the expiry. `Text`: reasons are data."""
    console.print(Text(f"{len(items)} approval request(s)", style="bold"))
    for a in items:
        votes = sum(1 for v in a.approvers if v.get("decision") == "approve")
        status = a.status + ("" if a.step_index is None else f" {a.scope}")
        console.print(Text.assemble((a.approval_id, "bold cyan"), "  ", a.exception_id, "  ", status,
                                    f"  {votes}/{a.approvals_needed} approvals"))
        reasons = "; ".join(str(r) for r in a.evidence.get("reasons") or [])
        console.print(Padding(Text(f"expires {a.expires_at:%Y-%m-%d %H:%M} · roles {', '.join(a.allowed_roles)}"
                                   + (f" · {reasons}" if reasons else ""), style="dim"), (0, 0, 0, 4)))


def print_execution(outcome: ExecutionOutcome | None) -> None:
    if outcome is None:
        return
    console.print(f"execution: [bold]{outcome.status}[/] — {escape(outcome.reason)}")
    for s in outcome.steps:
        console.print(f"  {s.index:>2} {s.step_id:<20} {s.tool or '-':<26} {s.status}"
                      + (f"  [dim]{escape(s.reason[:100])}[/]" if s.reason else ""), highlight=False)


def print_decision(d: Decision) -> None:
    a = d.approval
    if d.outcome == "vote-recorded":
        votes = sum(1 for v in a.approvers if v.get("decision") == "approve")
        console.print(f"vote recorded on {a.approval_id}: {votes} of {a.approvals_needed} approvals")
    else:
        console.print(f"{a.approval_id} [bold]{a.status}[/] by {a.decided_by}")
    print_execution(d.execution)


def _load_edits(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    text = value
    if not value.lstrip().startswith(("{", "[")) and value.strip():  # else inline JSON
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--edits {value}: neither a JSON object nor a readable UTF-8 file "
                 f"({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})")
    try:
        data = json.loads(text)
    except ValueError as exc:
        fail(f"--edits is not JSON: {exc}")
    if not isinstance(data, dict):
        fail("--edits must be a JSON object: {stepId: {argument: value}}")
    return data


def _run_decision(fn: Any, db: str | None) -> Any:
    async def go(store: Any) -> Any:
        async with services(store) as svc:
            try:
                return await fn(svc)
            except ApprovalError as exc:
                fail(str(exc), code=1)

    return run_with_store(go, db)


# ----------------------------------------------------------------------------------------------- approvals


@approvals_app.command("list")
def approvals_list(
    tenant: TenantOpt,
    status: Annotated[str | None, typer.Option("--status", help="PENDING, APPROVED, REJECTED or EXPIRED.")] = "PENDING",
    exception: Annotated[str | None, typer.Option("--exception", help="Only this exception's requests.")] = None,
    all_statuses: Annotated[bool, typer.Option("--all", help="Every status.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many requests.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    db: UrlOpt = None,
) -> None:
    """List approval requests (pending ones by default), newest first."""

    async def go(store: Any) -> list[Approval]:
        await known_tenant(store, tenant)
        if exception is not None and await store.get_exception(tenant, exception) is None:
            unknown_exception(exception, tenant)
        page, _ = await store.list_approvals(
            tenant, status=None if all_statuses else status, exception_id=exception, limit=limit
        )
        return page

    items = run_with_store(go, db, reads=True)
    if as_json:
        console.print_json(json.dumps([a.as_dict() for a in items]))
    else:
        print_approvals(items)


@approvals_app.command("show")
def approvals_show(approval_id: ApprovalIdArg, tenant: TenantOpt, db: UrlOpt = None) -> None:
    """Print one request: its plan, evidence, votes and decision (JSON)."""

    async def go(store: Any) -> Approval | None:
        return await store.get_approval(tenant, approval_id)

    found = run_with_store(go, db, reads=True)
    if found is None:
        fail(f"no approval {approval_id!r} for tenant {tenant!r}", code=1)
    console.print_json(json.dumps(found.as_dict()))


@approvals_app.command("approve")
def approvals_approve(
    approval_id: ApprovalIdArg,
    tenant: TenantOpt,
    actor: ActorOpt = None,
    role: RoleOpt = None,
    comment: Annotated[str, typer.Option("--comment", "-m", help="A note kept with the vote.")] = "",
    edits: Annotated[
        str | None, typer.Option("--edits", help="JSON (or a JSON file): {stepId: {argument: value}}.")
    ] = None,
    no_execute: Annotated[bool, typer.Option("--no-execute", help="Record the decision only.")] = False,
    db: UrlOpt = None,
) -> None:
    """Approve a request (four-eyes, N-of-M); the last needed approval resumes the exception's execution."""
    who = actor if actor is not None else getpass.getuser()
    parsed = _load_edits(edits)
    decision = _run_decision(
        lambda svc: svc.approvals.approve(tenant, approval_id, who, role or ["approver"], comment, parsed,
                                          execute=not no_execute),
        db,
    )
    print_decision(decision)


@approvals_app.command("reject")
def approvals_reject(
    approval_id: ApprovalIdArg,
    tenant: TenantOpt,
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (required).")],
    actor: ActorOpt = None,
    role: RoleOpt = None,
    close: Annotated[bool, typer.Option("--close", help="Close the exception instead of escalating it.")] = False,
    db: UrlOpt = None,
) -> None:
    """Reject a request with a reason: the exception is escalated to a person (or closed with --close)."""
    who = actor if actor is not None else getpass.getuser()
    decision = _run_decision(
        lambda svc: svc.approvals.reject(tenant, approval_id, who, role or ["approver"], comment, close=close), db
    )
    print_decision(decision)


@approvals_app.command("expire")
def approvals_expire(db: UrlOpt = None) -> None:
    """Expire every pending request whose TTL ran out (all tenants) and escalate its exception."""

    async def go(store: Any) -> list[Approval]:
        service, expired = ApprovalService(store), []
        while True:  # a page at a time; a full page of expiries means there may be more
            page = await service.expire_due(limit=EXPIRE_PAGE)
            expired.extend(page)
            if len(page) < EXPIRE_PAGE:
                return expired

    expired = run_with_store(go, db)
    console.print(f"{len(expired)} approval request(s) expired")
    for a in expired:
        console.print(f"  {a.tenant_id} {a.approval_id} → exception {a.exception_id} escalated")


# ---------------------------------------------------------------------------------------------- execution


@app.command("executions")
def executions_show(
    exception_id: Annotated[str, typer.Argument(metavar="EXCEPTION_ID", help="The exception whose journal to print.")],
    tenant: TenantOpt,
    db: UrlOpt = None,
) -> None:
    """Print an exception's execution journal: every step decision and HTTP attempt."""

    async def go(store: Any) -> list[Any] | None:
        if await store.get_exception(tenant, exception_id) is None:
            return None
        return await store.execution_records(tenant, exception_id)

    rows = run_with_store(go, db, reads=True)
    if rows is None:
        unknown_exception(exception_id, tenant)
    if not rows:
        console.print(f"no execution recorded for {exception_id} (no plan has run for it)", style="dim")
        return
    # Borderless, names folded rather than cut, errors on their own lines: the columns a reader scans
    # (tool, status, HTTP code, time) stay whole at 80 columns.
    table = Table("step", "phase", "try", "tool", "status", "HTTP", "ms", title=f"Execution of {exception_id}",
                  box=None, padding=(0, 0, 0, 2), pad_edge=False, header_style="bold")
    table.columns[0].overflow = table.columns[3].overflow = "fold"  # step, tool
    for col in table.columns[4:]:
        col.no_wrap = True
    for col in table.columns[5:]:
        col.justify = "right"
    errors: list[str] = []
    for r in rows:
        table.add_row(f"{r.step_index} {r.step_id}", r.phase, str(r.attempt), r.tool or "-",
                      r.status + (" ✓" if r.final else ""), str(r.status_code or ""),
                      f"{r.latency_ms:.1f}" if r.latency_ms is not None else "")
        if r.error:
            errors.append(f"step {r.step_index} {r.step_id}, try {r.attempt}: {r.error}")
    console.print(table)
    for line in errors:
        console.print(Padding(Text(line, style="red"), (0, 0, 0, 2)))


@app.command("resume")
def resume(
    tenant: TenantOpt,
    stalled_after: StalledAfterOpt = 120.0,
    db: UrlOpt = None,
) -> None:
    """Resume IN_PROGRESS executions nobody is driving (after a worker crash)."""

    async def go(store: Any) -> list[ExecutionOutcome]:
        await known_tenant(store, tenant)
        outcomes: list[ExecutionOutcome] = []
        async with services(store) as svc:
            while True:  # a page at a time: a resumed run is no longer idle, so the next page is new runs
                page = await svc.execution.resume_stalled(tenant, timedelta(seconds=stalled_after),
                                                          limit=RESUME_PAGE)
                outcomes.extend(page)
                if len(page) < RESUME_PAGE:
                    return outcomes

    try:
        outcomes = run_with_store(go, db)
    except NoActivePacks as exc:
        fail(str(exc))
    done = [o for o in outcomes if o.executed]
    console.print(f"{len(outcomes)} stalled execution(s), {len(done)} advanced")
    for o in outcomes:
        console.print(f"  {o.exception_id}: {o.status} — {escape(o.reason)}", highlight=False)


@app.command("scheduler")
def scheduler(
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between passes.")] = 15.0,
    stalled_after: StalledAfterOpt = 120.0,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    db: UrlOpt = None,
) -> None:
    """The worker's maintenance loop: expire approvals past their TTL, resume stalled executions."""

    async def go(store: Any) -> None:
        async with services(store) as svc:
            sched = Scheduler(store, svc.approvals, svc.execution, interval=interval,
                              stalled_after=timedelta(seconds=stalled_after))
            if once:
                report = await sched.tick()
                console.print(f"expired {len(report.expired)}, resumed {len(report.resumed)}")
                return
            stop = asyncio.Event()
            console.print(f"scheduler running every {interval:g}s (Ctrl-C stops)")
            try:
                await sched.run(stop)
            finally:
                stop.set()

    try:
        run_with_store(go, db)
    except KeyboardInterrupt:
        console.print("stopped")


# ---------------------------------------------------------------------------------------------- demo tools


@app.command("demo-tools")
def demo_tools(
    port: Annotated[int, typer.Option("--port", min=1, max=65535,
                                      help="Port to bind (the example packs' tools call 8765).")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve realistic fake responses for every tool of the example finance and healthcare packs."""
    from breakdesk.tools.demo_server import DEMO_ENV_SECRETS, DEMO_FILE_SECRETS, serve

    console.print(f"demo tools on http://{host}:{port} (the example packs call http://127.0.0.1:8765)")
    console.print("write tools need credentials; for `breakdesk run` against this server export e.g.:")
    for name, value in DEMO_ENV_SECRETS.items():
        console.print(f"  export {name}={value}", highlight=False)
    console.print(f"  and a secrets file (BREAKDESK_SECRETS_FILE) holding {', '.join(DEMO_FILE_SECRETS)}",
                  highlight=False)
    serve(host, port)


@contextmanager
def demo_tool_environment() -> Iterator[tuple[ExecutorSettings, BackgroundServer]]:
    """For `breakdesk demo`: the demo tool server in-process (on 8765 when free, else any free port, with
    the example packs' URLs rewritten to it) and demo values for the secrets the example packs reference,
    where the environment does not already provide them. Everything is undone on exit."""
    from breakdesk.tools.demo_server import (
        DEMO_ENV_SECRETS,
        DEMO_FILE_SECRETS,
        PACK_BASE_URL,
        BackgroundServer,
        port_is_free,
    )
    from breakdesk.tools.secrets import SECRETS_FILE_ENV

    server = BackgroundServer(8765 if port_is_free(8765) else None).start()
    saved = {k: os.environ.get(k) for k in (*DEMO_ENV_SECRETS, SECRETS_FILE_ENV)}
    tmp = tempfile.TemporaryDirectory(prefix="breakdesk-demo-")
    try:
        for name, value in DEMO_ENV_SECRETS.items():
            os.environ.setdefault(name, value)
        if not os.environ.get(SECRETS_FILE_ENV):
            path = Path(tmp.name) / "secrets.json"
            path.write_text(json.dumps(DEMO_FILE_SECRETS), encoding="utf-8")
            os.environ[SECRETS_FILE_ENV] = str(path)
        rewrites = {} if server.base_url == PACK_BASE_URL else {PACK_BASE_URL: server.base_url}
        yield ExecutorSettings(url_rewrites=rewrites), server
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        server.stop()
        tmp.cleanup()
