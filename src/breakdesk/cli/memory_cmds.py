"""`breakdesk similar` (cases like an exception, and why), `breakdesk memory index` (catch-up, embeddings) and
`breakdesk memory status` (how far the indexer has got)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer
from rich import box
from rich.console import RenderableType
from rich.markup import escape
from rich.padding import Padding
from rich.table import Column, Table
from rich.text import Text

from breakdesk.cli import app
from breakdesk.cli.common import console, fail
from breakdesk.cli.runtime import known_tenant, run_with_store
from breakdesk.cli.store_cmds import UrlOpt
from breakdesk.domain.models import ResolutionStatus
from breakdesk.domain.timestamps import parse_timestamp
from breakdesk.memory import Filters, NotIndexed, SimilarResult
from breakdesk.memory.indexer import IndexerReport, MemoryIndexer
from breakdesk.memory.lookup import MemoryStatus, memory_status, similar_for

memory_app = typer.Typer(help="Similar-case memory: indexing, embeddings and how far they have got.",
                         no_args_is_help=True)
app.add_typer(memory_app, name="memory")


def _utc(value: str) -> datetime:
    """An ISO 8601 date-time (`Z` or an offset allowed) as aware UTC; without a zone it is UTC, as in the API
    (typer's own datetime reads it in the machine's local time, and refuses `Z`)."""
    try:
        return parse_timestamp(datetime.fromisoformat(value.strip()))  # (ISO 8601 only: no epoch numbers)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date-time such as 2025-03-01T12:00:00Z") from exc


@app.command("similar")
def similar(
    exception_id: Annotated[str, typer.Argument(metavar="EXCEPTION_ID", help="Exception id.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant the exception belongs to.")],
    k: Annotated[int | None, typer.Option(
        "-k", min=1, max=50, help="How many (default: the policy's similarCases, 5 without active packs).")] = None,
    exception_type: Annotated[list[str] | None, typer.Option("--type", help="Only these types.")] = None,
    status: Annotated[list[ResolutionStatus] | None, typer.Option("--status", case_sensitive=False,
                                                                  help="Only these statuses.")] = None,
    resolved: Annotated[bool, typer.Option("--resolved", help="Only cases with a resolution.")] = False,
    since: Annotated[datetime | None, typer.Option("--since", parser=_utc, metavar="ISO-8601",
                                                   help="Received at or after (ISO 8601; no zone: UTC).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    db: UrlOpt = None,
) -> None:
    """Past cases most like an exception, with scores, why they match and how they were resolved."""
    filters = Filters(types=tuple(exception_type or ()), statuses=tuple(s.value for s in status or ()),
                      resolved_only=resolved, since=since)

    async def go(store: Any) -> SimilarResult:
        return await similar_for(store, tenant, exception_id, k, filters)

    try:
        result = run_with_store(go, db, reads=True)
    except NotIndexed as exc:
        fail(str(exc), code=1)
    if as_json:
        console.print_json(orjson.dumps(result.as_dict()).decode())
        return
    console.print(Text.assemble(("Cases like ", "bold"), (exception_id, "bold"),
                                f" ({result.indexed_cases} indexed, vectors: {result.vector_source})"))
    for line in hit_lines(result):
        console.print(line)
    if not result.hits:
        console.print("no similar cases match these filters" if not filters.empty else "no similar cases yet",
                      style="dim")


def hit_lines(result: SimilarResult) -> list[RenderableType]:
    """A hit per block: its id, score, type, status and severity on one line, why it is similar and how it
    was resolved indented below. Not a table: at a terminal's usual 80 columns a seven-column table cut the
    ids and explanations, the two things a reader came for. `Text`, so payload values are never markup."""
    out: list[RenderableType] = []
    for i, h in enumerate(result.hits, 1):
        out.append(Text.assemble((f"{i:>2}  ", "dim"), (h.exception_id, "bold cyan"), f"  {h.score:.2f}  ",
                                 h.exception_type, "  ", h.status, (f"  {h.severity}" if h.severity else "")))
        out.append(Padding(Text(h.why), (0, 0, 0, 4)))
        out.append(Padding(Text(f"resolution: {h.resolution}" if h.resolution else "not resolved yet", style="dim"),
                           (0, 0, 0, 4)))
    return out


def _tenant_table(title: str, counts: tuple[str, ...], texts: tuple[str, ...] = ()) -> Table:
    """A row per tenant: its id whole, then right-aligned counts, then text columns. No vertical rules, so
    the memory commands' reports fit the usual 80 columns with a tenant id of 20 characters."""
    return Table(Column("tenant", no_wrap=True), *(Column(h, justify="right") for h in counts), *texts,
                 title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)


@memory_app.command("index")
def index(
    tenant: Annotated[list[str] | None, typer.Option("--tenant", "-t", help="Only these tenants.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep indexing until interrupted.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between passes.")] = 2.0,
    db: UrlOpt = None,
) -> None:
    """Index exceptions missing from the memory, refresh resolved ones, re-render cases a new domain pack
    reads differently, and embed cases in batches: one pass per tenant, in which re-rendering and embedding
    are bounded (`breakdesk memory status` shows what is left; `--follow` goes on)."""

    async def go(store: Any) -> list[tuple[str, IndexerReport]]:
        for t in tenant or ():
            await known_tenant(store, t)
        indexer = MemoryIndexer(store)
        if follow:
            stop = asyncio.Event()
            try:
                await indexer.run(stop, interval, tenant)
            except asyncio.CancelledError:
                stop.set()
            return []
        tenants = tenant or [t.tenant_id for t in await store.list_tenants()]
        return [(t, await indexer.run_once(t)) for t in tenants]

    try:
        reports = run_with_store(go, db)
    except KeyboardInterrupt:
        return
    table = _tenant_table("memory index", ("scanned", "indexed", "resolved", "rerendered", "embedded", "errors"))
    for t, r in reports:
        if r.busy:
            table.add_row(escape(t), "busy: another indexer is in a pass over this tenant", "", "", "", "", "")
            continue
        table.add_row(escape(t), str(r.scanned), str(r.indexed), str(r.resolved), str(r.rerendered),
                      str(r.embedded), str(r.errors))
    console.print(table)


@memory_app.command("status")
def status(
    tenant: Annotated[list[str] | None, typer.Option("--tenant", "-t", help="Only these tenants.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    db: UrlOpt = None,
) -> None:
    """How far the background indexer has got: changes to look at, cases to embed or render again."""

    async def go(store: Any) -> list[tuple[str, MemoryStatus]]:
        tenants = tenant or [t.tenant_id for t in await store.list_tenants()]
        return [(t, await memory_status(store, t)) for t in tenants]

    rows = run_with_store(go, db, reads=True)  # (an unknown tenant: its NotFound, a usage error)
    if as_json:
        console.print_json(orjson.dumps({t: s.as_dict() for t, s in rows}).decode())
        return
    table = _tenant_table("memory status", ("cases", "behind", "to embed"), ("embedder", "rerender"))
    for t, s in rows:
        table.add_row(escape(t), str(s.cases), str(s.behind), str(s.to_embed), escape(s.embedder or "none"),
                      f"{s.to_rerender} to check" if s.rerender_pending else "done")
    console.print(table)
