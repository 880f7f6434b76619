"""`breakdesk run` (the main job), `breakdesk show` and `breakdesk demo`."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from breakdesk.cli import app
from breakdesk.cli.common import console, fail, unknown_exception
from breakdesk.cli.runtime import known_tenant, opened, run_with_store
from breakdesk.cli.store_cmds import UrlOpt
from breakdesk.heap import tune_for_throughput
from breakdesk.pipeline.orchestrator import BatchReport, NoActivePacks, Orchestrator, Rejected
from breakdesk.pipeline.types import Submission
from breakdesk.store.errors import StoreError

MAX_LINE_BYTES = 1024 * 1024


def read_jsonl(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, int, Any, str | None]]:
    """Yield (line number, bytes read so far, parsed object or None, rejection reason or None); never raises
    for bad content, so no line is lost."""
    done = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            done += len(raw)
            line = raw.strip()
            if not line:
                continue
            if len(line) > max_line_bytes:
                yield lineno, done, None, (
                    f"line is {len(line) / 1048576:.1f} MB; the limit is {max_line_bytes / 1048576:.1f} MB"
                )
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield lineno, done, None, f"not JSON: {exc}"
                continue
            if not isinstance(obj, dict):
                yield lineno, done, None, f"an exception must be a JSON object, got {type(obj).__name__}"
                continue
            yield lineno, done, obj, None


async def run_file(
    store: Any,
    path: Path,
    tenant: str,
    batch_size: int,
    progress: Progress | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    *,
    execution: Any | None = None,
    dry_run: bool = True,
) -> BatchReport:
    """`execution` (an ExecutionService) runs ready plans after each batch unless `dry_run`."""
    orch = Orchestrator(store, execution=execution)
    await orch.active_packs(tenant)
    total = BatchReport()
    size = path.stat().st_size
    task = progress.add_task(f"{path.name} → {tenant}", total=size) if progress else None
    batch: list[Submission] = []

    async def flush() -> None:
        if batch:
            total.merge(await orch.process(tenant, batch, dry_run=dry_run))
            batch.clear()

    last = 0
    for lineno, done, obj, reason in read_jsonl(path, max_line_bytes):
        if reason is not None:
            total.rejected.append(Rejected(lineno, reason))
        else:
            batch.append(Submission(obj, datetime.now(UTC), lineno))
        if len(batch) >= batch_size:
            await flush()
        last = done
        if progress is not None and task is not None:
            progress.update(task, completed=last)
    await flush()
    if progress is not None and task is not None:
        progress.update(task, completed=size)
    return total


def print_summary(report: BatchReport, elapsed: float, title: str) -> None:
    rate = report.processed / elapsed if elapsed > 0 else 0.0
    head = Table(title=title, show_header=False)
    head.add_column(style="bold")
    head.add_column(justify="right")
    for label, value in (
        ("processed", report.processed),
        ("recurrences (merged into open exceptions)", report.recurrences),
        ("duplicates (already received)", report.duplicates),
        ("rejected", len(report.rejected)),
        ("approval required", report.approval_required),
        ("escalated", report.escalated),
        ("throughput", f"{rate:,.0f} exceptions/s"),
    ):
        head.add_row(label, str(value))
    console.print(head)
    for name, counter in (
        ("type", report.by_type),
        ("severity", report.by_severity),
        ("actionability", report.by_actionability),
        ("status", report.by_status),
    ):
        if not counter:
            continue
        t = Table(name, "count", title=f"by {name}")
        for key, n in counter.most_common():
            t.add_row(key, str(n))
        console.print(t)


def check_errors_path(path: Path, source: Path) -> None:
    """Refuse, before anything is processed, an errors file that is the input itself or cannot be written:
    rejected lines found after the run has committed must have somewhere to go."""
    if path.resolve() == source.resolve():
        fail(f"--errors {path} is the input file: rejected lines would overwrite it")
    if path.is_dir():
        fail(f"--errors {path} is a directory")
    if not path.parent.is_dir():
        fail(f"--errors {path}: directory {path.parent} does not exist")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        fail(f"--errors {path} cannot be written")


def write_errors(path: Path, rejected: list[Rejected], source: Path) -> None:
    with path.open("wb") as fh:
        for r in sorted(rejected, key=lambda r: r.line or 0):
            fh.write(orjson.dumps({"file": str(source), "line": r.line, "reason": r.reason}) + b"\n")


@app.command("run")
def run(
    file: Annotated[Path, typer.Argument(help="JSONL file: one exception per line.", exists=True, dir_okay=False)],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant to process for.")],
    errors: Annotated[
        Path | None, typer.Option("--errors", help="Where rejected lines go (default FILE.errors.jsonl).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=10000, help="Exceptions decided and written together.")
    ] = 500,
    max_line_mb: Annotated[float, typer.Option("--max-line-mb", min=0.001, max=64, help="Reject longer lines.")] = 1.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Record plans without calling tools (the tenant's dryRun also does).")
    ] = False,
    db: UrlOpt = None,
) -> None:
    """Process a file of exceptions through the pipeline, run the ready plans' tools, print a summary."""
    from breakdesk.cli.tool_cmds import services

    err_path = errors or file.with_name(file.name + ".errors.jsonl")
    check_errors_path(err_path, file)
    started = time.perf_counter()

    async def go(store: Any) -> BatchReport:
        await known_tenant(store, tenant)
        async with services(store) as svc:
            tune_for_throughput()
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, transient=False,
            ) as progress:
                return await run_file(store, file, tenant, batch_size, progress, int(max_line_mb * 1048576),
                                      execution=svc.execution, dry_run=dry_run)

    try:
        report = run_with_store(go, db)
    except NoActivePacks as exc:
        fail(str(exc))
    elapsed = time.perf_counter() - started
    print_summary(report, elapsed, f"{file.name} for {tenant}")
    if report.rejected:
        try:
            write_errors(err_path, report.rejected, file)
        except OSError as exc:  # (checked before the run: only a change meanwhile gets here)
            fail(f"cannot write rejected lines to {err_path}: {exc.strerror or exc}; they are: "
                 + "; ".join(f"line {r.line}: {r.reason}" for r in report.rejected[:20]))
        console.print(f"[yellow]{len(report.rejected)} rejected line(s) written to {err_path}[/]")


def render_timeline(exc: dict[str, Any], events: list[dict[str, Any]]) -> None:
    rec = exc.get("record") or {}
    head = Table(show_header=False, title=f"Exception {exc['exception_id']}")
    head.add_column(style="bold")
    head.add_column()
    for label, key in (
        ("tenant", "tenant_id"), ("type", "exception_type"), ("severity", "severity"), ("status", "status"),
        ("actionability", "actionability"), ("playbook", "playbook_id"), ("approval required", "approval_required"),
        ("recurrences", "recurrence_count"), ("packs", "domain_pack"), ("policy", "tenant_policy"),
        ("source", "source_system"), ("received", "received_at"),
    ):
        head.add_row(label, str(exc.get(key)))
    if rec.get("normalizedContext"):
        head.add_row("context", orjson.dumps(rec["normalizedContext"]).decode()[:300])
    if exc.get("summary"):
        head.add_row("summary", str(exc["summary"]))
    console.print(head)
    console.print("[bold]Decision timeline[/]")
    # `Text`, not markup: decisions and evidence quote payload values. Evidence wraps under its bullet.
    for e in events:
        d = e.get("decision") or {}
        at = e.get("at")
        when = f"{at:%H:%M:%S.%f}"[:-3] if isinstance(at, datetime) else str(at)
        console.print(Text.assemble(
            (f"{e.get('seq'):>2} {e.get('stage')}", "bold cyan"), " ", (when, "dim"), f"  {d.get('decision', '')}",
            ("  confidence ", "dim"), f"{d.get('confidence', 0):.2f}", ("  → ", "dim"), str(d.get("nextStep", "")),
        ))
        for x in d.get("evidence", []):
            cases = _similar_cases(x)
            if cases is None:
                console.print(Padding(Text(f"• {x.get('message')}"), (0, 0, 0, 5)))
                continue
            console.print(Padding(Text("• similar cases:"), (0, 0, 0, 5)))  # one line each, best first
            for case in cases:
                console.print(Padding(Text(case), (0, 0, 0, 7)))


def _similar_cases(evidence: dict[str, Any]) -> list[str] | None:
    """The lines of a `similar-cases` evidence item (`pipeline.triage.similar_evidence`), one per case, or None
    for any other item (or one whose data is not that shape: its message is shown instead)."""
    data = evidence.get("data")
    cases = data.get("cases") if evidence.get("kind") == "similar-cases" and isinstance(data, dict) else None
    if not isinstance(cases, list) or not all(isinstance(c, dict) and "exceptionId" in c for c in cases):
        return None
    lines = []
    for c in cases:
        score = c.get("score")
        line = f"{c['exceptionId']} ({score:.2f})" if isinstance(score, int | float) else str(c["exceptionId"])
        lines.append(f"{line}: {c['resolution']}" if c.get("resolution") else line)
    return lines


@app.command("show")
def show(
    exception_id: Annotated[str, typer.Argument(metavar="EXCEPTION_ID", help="Exception id.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant the exception belongs to.")],
    db: UrlOpt = None,
) -> None:
    """Print an exception and its decision timeline (stage, time, decision, confidence, evidence, next step)."""

    async def go(store: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        exc = await store.get_exception(tenant, exception_id)
        return exc, (await store.get_events(tenant, exception_id) if exc else [])

    exc, events = run_with_store(go, db, reads=True)
    if exc is None:
        unknown_exception(exception_id, tenant)
    render_timeline(exc, events)


#: The demo feeds each tenant's examples in batches of this many, as a stream would arrive: an exception is
#: triaged with the similar cases of earlier batches (a batch's own cases are decided together and become
#: searchable once it commits), so in one batch of 240 no exception would show any.
DEMO_BATCH = 40


@app.command("demo")
def demo(
    packs_dir: Annotated[Path, typer.Option("--packs", help="Example packs directory.")] = Path("packs"),
    examples_dir: Annotated[Path, typer.Option("--examples", help="Example exceptions directory.")] = Path("examples"),
    db_file: Annotated[Path, typer.Option("--db-file", help="SQLite file for the demo (recreated).")] = Path(
        "demo.db"
    ),
) -> None:
    """Process the example exceptions for the example tenants and run their tools against a bundled server."""
    from breakdesk.catalog import Catalog
    from breakdesk.cli.tool_cmds import demo_tool_environment, services
    from breakdesk.packs.loader import read_file

    domains = sorted(packs_dir.glob("*/domain.yaml"))
    if not domains:
        fail(f"no example packs under {packs_dir}/ (run from the repository root or pass --packs)")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    url = f"sqlite+aiosqlite:///{db_file}"
    started = time.perf_counter()

    async def go() -> list[tuple[str, str, BatchReport, float]]:
        results = []
        # --- tools: the example packs' tools run against the demo tool server, started in-process
        with demo_tool_environment() as (settings, _server):
            async with opened(url) as store, services(store, settings) as svc:
                # --- end tools
                cat = Catalog(store)
                tune_for_throughput()
                with Progress(
                    TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console,
                ) as progress:
                    for dom_file in domains:
                        dom_data, dom_src = read_file(dom_file)
                        examples = examples_dir / f"{dom_file.parent.name}.jsonl"
                        for pol_file in sorted((dom_file.parent / "tenants").glob("*.yaml")):
                            pol_data, pol_src = read_file(pol_file)
                            tid = pol_data["tenantId"]
                            await store.create_tenant(tid, pol_data.get("name") or tid)
                            await cat.publish(tid, dom_data, dom_src, "demo", activate=True)
                            await cat.publish(tid, pol_data, pol_src, "demo", activate=True)
                            if examples.exists():
                                t0 = time.perf_counter()
                                rep = await run_file(store, examples, tid, DEMO_BATCH, progress,
                                                     execution=svc.execution, dry_run=False)
                                results.append((dom_file.parent.name, tid, rep, time.perf_counter() - t0))
                # --- memory: what the server's worker does in the background: how resolved exceptions were
                # resolved reaches the similar-case memory (`breakdesk similar --resolved`)
                from breakdesk.memory.indexer import MemoryIndexer

                indexer = MemoryIndexer(store, packs=svc.orchestrator.active_packs)
                for _, tid, _, _ in results:
                    await indexer.run_once(tid)
                # --- end memory
        return results

    try:
        results = asyncio.run(go())
    except StoreError as err:
        fail(f"store: {err}")
    # Borderless and with short headers: it fits 80 columns, where a boxed table cut tenant names and headers.
    table = Table("tenant", "exc.", "resolved", "approval", "escalated", "failed", "info", "merged\ndup/bad",
                  title="Demo: the same exceptions under different tenant policies", box=None, padding=(0, 0, 0, 2),
                  pad_edge=False, header_style="bold")
    for col in table.columns[1:]:
        col.justify, col.no_wrap = "right", True
    for _, tid, rep, _ in results:
        table.add_row(
            tid, str(rep.processed), str(rep.by_status.get("RESOLVED", 0)),
            str(rep.by_status.get("PENDING_APPROVAL", 0)), str(rep.by_status.get("ESCALATED", 0)),
            str(rep.by_status.get("FAILED", 0)), str(rep.by_status.get("TRIAGED", 0)),
            f"{rep.recurrences}/{rep.duplicates}/{len(rep.rejected)}",
        )
    console.print(table)
    total, secs = sum(r[2].processed for r in results), sum(r[3] for r in results)
    console.print(
        f"exc. = exceptions processed ({', '.join(sorted({d for d, *_ in results}))} packs; {total:,} in {secs:.1f} s, "
        "tool calls included); resolved = playbook tools ran and succeeded (demo tool server); approval = "
        "waiting for a person; escalated = handed to a person; info = nothing to do; merged = recurrences "
        "folded into an open exception; dup = resubmissions; bad = rejected lines\n", style="dim")

    # One exception two tenants decided differently, and its timeline: *why* a decision was made.
    async def contrast() -> tuple[str, str, list[tuple[str, dict[str, Any]]], list[dict[str, Any]]] | None:
        async with opened(url) as store:
            by_domain: dict[str, list[str]] = {}
            for dom, tid, _, _ in results:
                by_domain.setdefault(dom, []).append(tid)
            for tids in by_domain.values():
                first = next(r for r in results if r[1] == tids[0])[2]
                for eid in reversed(first.exception_ids):  # a late one: its triage has similar cases to show
                    rows = [(t, await store.get_exception(t, eid)) for t in tids]
                    found = [(t, r) for t, r in rows if r is not None]
                    if len(found) > 1 and len({r["status"] for _, r in found}) > 1:
                        return tids[0], eid, found, await store.get_events(tids[0], eid)
        return None

    picked = asyncio.run(contrast())
    if picked:
        tid, eid, rows, events = picked
        cmp = Table("tenant", "severity", "playbook", "approval", "status", title=f"{eid}: one exception, two policies",
                    box=None, padding=(0, 0, 0, 1), pad_edge=False, header_style="bold")
        for t, r in rows:
            cmp.add_row(t, str(r["severity"]), str(r["playbook_id"]), str(r["approval_required"]), str(r["status"]))
        console.print(cmp)
        render_timeline(dict(rows[0][1]), events)
    pick = (picked[0], picked[1]) if picked else None
    console.print(f"\nDone in {time.perf_counter() - started:.1f}s. Explore the demo database:")
    console.print(f"  export BREAKDESK_DATABASE_URL=sqlite+aiosqlite:///{db_file}")
    if pick:
        console.print(f"  .venv/bin/breakdesk show {pick[1]} --tenant {pick[0]}")
        console.print(f"  .venv/bin/breakdesk similar {pick[1]} --tenant {pick[0]}")
    console.print("  .venv/bin/breakdesk audit verify")
    # --- tools: approvals resume execution; their tools need the demo tool server running
    console.print("  .venv/bin/breakdesk approvals list --tenant acme-capital")
    console.print("  .venv/bin/breakdesk demo-tools   # in another terminal, before approving: "
                  "approvals resume the playbook's tool calls", highlight=False)
