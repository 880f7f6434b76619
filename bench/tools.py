"""Tool-execution benchmarks (issue: tool execution engine and human approval).

- executor overhead per tool call over a raw httpx call to the same local endpoint (target: median ≤ 1 ms):
  (a) the executor alone: policy check, JSON Schema of arguments and output, SSRF check, breaker, metrics,
      redaction; (b) a step inside a durable playbook run, which adds the journal row, the event and the
      audit entry written before the run moves on (measured as the cost of each extra step of a playbook,
      against raw calls of the same endpoint, method, body and Idempotency-Key header);
- 1,000 playbook executions submitted at once against the local tool server (target: no errors, bounded
  memory): wall time, outcomes, peak RSS.

The tool server runs in its own process (uvicorn), so its CPU does not count against the executor.
Run: `.venv/bin/python -m bench.tools [--calls N] [--executions N] [--concurrency N] [--postgres URL]`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

from breakdesk.catalog import Catalog
from breakdesk.packs.compiler import compile_domain, compile_tenant
from breakdesk.packs.loader import model_from_data
from breakdesk.pipeline.execution import ExecutionService
from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.pipeline.types import Submission
from breakdesk.store import Store
from breakdesk.tools.executor import ToolCall, ToolExecutor

TENANT = f"bench-tools-{secrets.token_hex(3)}"  # unique: a PostgreSQL database outlives the run
OUT = {"type": "object", "properties": {"ok": {"type": "boolean"}, "ref": {"type": "string"}}, "required": ["ok"]}
PARAMS = {"type": "object", "properties": {"ref": {"type": "string", "minLength": 1}}, "required": ["ref"],
          "additionalProperties": False}


# ------------------------------------------------------------------------------------------ tool server


def serve(port: int) -> None:
    """The benchmark's tool server: two tiny JSON endpoints."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "ref": request.path_params["ref"]})

    async def act(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"ok": True, "ref": request.path_params["ref"]})

    app = Starlette(routes=[Route("/item/{ref}", item, methods=["GET"]), Route("/act/{ref}", act, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False, lifespan="off",
                backlog=4096, limit_concurrency=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.tools", "--serve", str(port)],
                            cwd=Path(__file__).resolve().parent.parent)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{base}/item/ping", timeout=1)
            return proc, base
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("benchmark tool server did not start") from None
            time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ packs


def packs(base: str, steps: int) -> tuple[dict[str, Any], dict[str, Any]]:
    tools = {
        "getItem": {"effect": "read", "method": "GET", "url": f"{base}/item/{{ref}}", "parameters": PARAMS,
                    "output": OUT, "idempotent": True, "retries": 2, "timeoutSeconds": 10},
        "act": {"effect": "write", "method": "POST", "url": f"{base}/act/{{ref}}", "parameters": PARAMS,
                "output": OUT, "idempotent": False, "timeoutSeconds": 10},
    }
    playbooks = [
        {"id": "one", "match": {"types": ["ONE"]}, "steps": [{"id": "s0", "tool": "getItem",
                                                             "args": {"ref": "${normalizedContext.ref}"}}]},
        {"id": "many", "match": {"types": ["MANY"]}, "steps": [
            {"id": f"s{i}", "tool": "getItem", "args": {"ref": "${normalizedContext.ref}"}} for i in range(steps)]},
        {"id": "manyw", "match": {"types": ["MANYW"]}, "steps": [
            {"id": f"w{i}", "tool": "act", "args": {"ref": "${normalizedContext.ref}"}} for i in range(steps)]},
        {"id": "onew", "match": {"types": ["ONEW"]}, "steps": [
            {"id": "w0", "tool": "act", "args": {"ref": "${normalizedContext.ref}"}}]},
        {"id": "mixed", "match": {"types": ["MIXED"]}, "steps": [
            {"id": "look", "tool": "getItem", "args": {"ref": "${normalizedContext.ref}"}},
            {"id": "act", "tool": "act", "when": "steps.look.output.ok == true",
             "args": {"ref": "${steps.look.output.ref}"}},
            {"id": "confirm", "tool": "getItem", "args": {"ref": "${normalizedContext.ref}"}},
        ]},
    ]
    domain = {"kind": "DomainPack", "name": "benchtools", "version": "1.0.0",
              "intake": {"fields": {"ref": "${rawPayload.ref}"}},
              "exceptionTypes": {t: {"defaultSeverity": "LOW", "fingerprintFields": ["ref"]}
                                 for t in ("ONE", "MANY", "ONEW", "MANYW", "MIXED")},
              "tools": tools, "playbooks": playbooks}
    policy = {"kind": "TenantPolicy", "tenantId": TENANT, "version": "1.0.0",
              "domain": {"name": "benchtools", "versionRange": "*"},
              "approvedPlaybooks": ["one", "many", "onew", "manyw", "mixed"],
              "tools": {"allow": ["getItem", "act"], "allowedHosts": ["127.0.0.1"], "allowPrivateNetworks": True}}
    return domain, policy


async def plan(store: Store, etype: str, n: int, prefix: str) -> list[str]:
    """Plans only (no executor): the exceptions wait IN_PROGRESS, like after a batch write."""
    orch = Orchestrator(store)
    ids: list[str] = []
    for start in range(0, n, 500):
        subs = [Submission({"exceptionId": f"{prefix}-{i:06d}", "exceptionType": etype, "sourceSystem": "bench",
                            "rawPayload": {"ref": f"{prefix}{i}"}}, datetime.now(UTC), i)
                for i in range(start, min(n, start + 500))]
        report = await orch.process(TENANT, subs, dry_run=False)
        ids.extend(report.exception_ids)
    return ids


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ms(values: list[float], q: float = 0.5) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


# ----------------------------------------------------------------------------------------------- benches


async def bench_overhead(base: str, calls: int) -> dict[str, float]:
    """Interleaved: raw httpx call, executor call, same endpoint, same client pool settings."""
    domain, policy = packs(base, 2)
    tenant = compile_tenant(model_from_data(policy, "p"), compile_domain(model_from_data(domain, "d"), "d"), "p")  # type: ignore[arg-type]
    raw_t: list[float] = []
    ex_t: list[float] = []
    raw_c: list[float] = []
    ex_c: list[float] = []
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as raw, ToolExecutor() as ex:
        for i in range(calls + 200):
            url = f"{base}/item/R{i}"
            t0, c0 = time.perf_counter(), time.process_time()
            r = await raw.get(url, headers={"Idempotency-Key": f"EX:{i}"})
            r.json()
            t1, c1 = time.perf_counter(), time.process_time()
            result = await ex.call(ToolCall(tenant, "getItem", {"ref": f"R{i}"}, f"EX:{i}", "EX"))
            t2, c2 = time.perf_counter(), time.process_time()
            assert result.succeeded, result.error
            if i >= 200:  # warm-up excluded
                raw_t.append(t1 - t0)
                ex_t.append(t2 - t1)
                raw_c.append(c1 - c0)
                ex_c.append(c2 - c1)
    diffs = [e - r for e, r in zip(ex_t, raw_t, strict=True)]
    return {"raw_p50": ms(raw_t), "exec_p50": ms(ex_t), "overhead_p50": ms(diffs), "raw_p90": ms(raw_t, 0.9),
            "exec_p90": ms(ex_t, 0.9), "cpu_overhead": (statistics.mean(ex_c) - statistics.mean(raw_c)) * 1000}


async def bench_durable_step(store: Store, base: str, runs: int, steps: int, write: bool) -> dict[str, float]:
    """Cost of one more step in a durable run: (run of `steps` steps - run of 1 step) / (steps - 1).
    Idempotent reads (`write=False`) journal with the next write; non-idempotent writes claim before sending
    and settle before the next call, so each of their steps includes one database transaction."""
    one = await plan(store, "ONEW" if write else "ONE", runs, "OW" if write else "O")
    many = await plan(store, "MANYW" if write else "MANY", runs, "MW" if write else "M")
    raw_t: list[float] = []
    t_one: list[float] = []
    t_many: list[float] = []
    cpu_one: list[float] = []
    cpu_many: list[float] = []
    cpu_raw: list[float] = []
    writes: list[tuple[float, float]] = []  # (wall, CPU) of each journal transaction during the `many` runs
    record = store.record_executions
    timing = False

    async def timed_record(tenant_id: str, entries: Any) -> Any:
        t, c = time.perf_counter(), time.process_time()
        try:
            return await record(tenant_id, entries)
        finally:
            if timing:
                writes.append((time.perf_counter() - t, time.process_time() - c))

    store.record_executions = timed_record  # type: ignore[method-assign]  # measure what each step commits
    async with ToolExecutor() as ex, httpx.AsyncClient(trust_env=False) as raw:
        svc = ExecutionService(store, ex)
        for a, b in zip(one, many, strict=True):
            t0, c0 = time.perf_counter(), time.process_time()
            o1 = await svc.run(TENANT, a)
            t1, c1 = time.perf_counter(), time.process_time()
            timing = True
            o2 = await svc.run(TENANT, b)
            timing = False
            t2, c2 = time.perf_counter(), time.process_time()
            for j in range(steps - 1):  # raw calls in the same interval, for a like-for-like baseline:
                r0, rc = time.perf_counter(), time.process_time()  # same endpoint, method, body and key header
                if write:
                    (await raw.post(f"{base}/act/{b}{j}", json={"ref": f"{b}{j}"},
                                    headers={"Idempotency-Key": f"{TENANT}:{b}:w{j}"})).json()
                else:
                    (await raw.get(f"{base}/item/{b}{j}", headers={"Idempotency-Key": f"{TENANT}:{b}:s{j}"})).json()
                raw_t.append(time.perf_counter() - r0)
                cpu_raw.append(time.process_time() - rc)
            assert o1.status == o2.status == "RESOLVED", (o1, o2)
            t_one.append(t1 - t0)
            t_many.append(t2 - t1)
            cpu_one.append(c1 - c0)
            cpu_many.append(c2 - c1)
    del store.record_executions  # back to the class's method
    per_step = (statistics.median(t_many) - statistics.median(t_one)) / (steps - 1)
    raw_p50 = statistics.median(raw_t)
    cpu_step = (statistics.mean(cpu_many) - statistics.mean(cpu_one)) / (steps - 1)  # CPU clock is coarse: mean
    return {"run_1_step_p50": statistics.median(t_one) * 1000, f"run_{steps}_steps_p50": statistics.median(t_many) * 1000,
            "per_step_p50": per_step * 1000, "raw_p50": raw_p50 * 1000, "overhead_p50": (per_step - raw_p50) * 1000,
            "cpu_step": cpu_step * 1000, "cpu_raw": statistics.mean(cpu_raw) * 1000,
            "cpu_overhead": (cpu_step - statistics.mean(cpu_raw)) * 1000,
            "writes_per_run": len(writes) / len(many), "write_p50": statistics.median(w for w, _ in writes) * 1000,
            "write_cpu": statistics.mean(c for _, c in writes) * 1000}


async def bench_concurrent(store: Store, n: int, concurrency: int) -> dict[str, Any]:
    ids = await plan(store, "MIXED", n, "C")
    before = rss_mb()
    async with ToolExecutor() as ex:
        svc = ExecutionService(store, ex, concurrency=concurrency)
        t0 = time.perf_counter()
        outcomes = await svc.run_many(TENANT, ids)
        elapsed = time.perf_counter() - t0
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[o.status] = statuses.get(o.status, 0) + 1
    calls = 0
    for eid in ids[:50]:
        calls += len([r for r in await store.execution_records(TENANT, eid) if r.attempt >= 1])
    return {"executions": n, "concurrency": concurrency, "seconds": elapsed, "per_s": n / elapsed,
            "statuses": statuses, "errors": n - statuses.get("RESOLVED", 0), "rss_before_mb": before,
            "rss_after_mb": rss_mb(), "peak_rss_mb": peak_mb(), "calls_per_execution": calls / min(50, n)}


async def run(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # no per-call logs
    proc, base = start_server()
    try:
        print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPU(s); "
              f"load average {os.getloadavg()[0]:.2f}")
        o = await bench_overhead(base, args.calls)
        print(f"\nexecutor vs raw httpx, {args.calls} interleaved GETs (validated JSON output):")
        print(f"  raw httpx p50 {o['raw_p50']:.3f} ms (p90 {o['raw_p90']:.3f}); executor p50 {o['exec_p50']:.3f} ms "
              f"(p90 {o['exec_p90']:.3f})")
        print(f"  overhead per call, median of paired differences: {o['overhead_p50']:.3f} ms (target ≤ 1 ms); "
              f"CPU {o['cpu_overhead']:.3f} ms")
        urls = [("sqlite", None)] + ([("postgres", args.postgres)] if args.postgres else [])
        for label, url in urls:
            with tempfile.TemporaryDirectory() as tmp:
                db = url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
                async with await Store.open(db) as store:
                    if await store.get_tenant(TENANT) is None:
                        await store.create_tenant(TENANT)
                    domain, policy = packs(base, args.steps)
                    await Catalog(store).publish(TENANT, domain, "d", "bench", activate=True)
                    await Catalog(store).publish(TENANT, policy, "p", "bench", activate=True)
                    for write in (False, True):
                        d = await bench_durable_step(store, base, args.runs, args.steps, write)
                        kind = "non-idempotent POST (claim + settle)" if write else "idempotent GET"
                        print(f"\n[{label}] durable playbook step, {kind}; journal + event + audit per call, "
                              f"{args.runs} runs:")
                        print(f"  1-step run p50 {d['run_1_step_p50']:.2f} ms; {args.steps}-step run p50 "
                              f"{d[f'run_{args.steps}_steps_p50']:.2f} ms")
                        print(f"  per extra step {d['per_step_p50']:.3f} ms = raw call {d['raw_p50']:.3f} ms + "
                              f"overhead {d['overhead_p50']:.3f} ms")
                        print(f"  CPU of this process per extra step {d['cpu_step']:.3f} ms = raw call "
                              f"{d['cpu_raw']:.3f} ms + overhead {d['cpu_overhead']:.3f} ms")
                        print(f"  journal transactions per {args.steps}-step run {d['writes_per_run']:.1f}, "
                              f"each p50 {d['write_p50']:.3f} ms (CPU {d['write_cpu']:.3f} ms)")
                    c = await bench_concurrent(store, args.executions, args.concurrency)
                    print(f"\n[{label}] {c['executions']} playbook executions submitted at once "
                          f"(3 steps: read, non-idempotent write, read; service concurrency {c['concurrency']}):")
                    print(f"  {c['seconds']:.1f} s ({c['per_s']:.0f} executions/s, "
                          f"{c['calls_per_execution']:.1f} calls each); outcomes {c['statuses']}; errors {c['errors']}")
                    print(f"  RSS {c['rss_before_mb']:.0f} MB → {c['rss_after_mb']:.0f} MB, peak {c['peak_rss_mb']:.0f} MB")
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=11)
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--postgres", help="Also run the durable parts on this PostgreSQL URL.")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
