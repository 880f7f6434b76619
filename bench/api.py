"""HTTP API benchmarks (issue: REST API): `breakdesk serve` (uvicorn, one process, in-process worker on) and
a load driver in a second process on loopback.

- single-exception POST (202): target ≥ 800 requests/s, p99 ≤ 30 ms;
- batch POST of 500: target ≥ 10,000 exceptions/s accepted;
- GET list with filters over 100,000 stored exceptions: target p99 ≤ 50 ms.

The single POST runs twice: closed loop (C connections as fast as answers come: the maximum rate) and open
loop at `--rate` requests/s offered (the latency target is about a given load, not about saturation).
`--no-worker` measures the API alone; with the worker on (in-process by default, or a separate `breakdesk
worker` process with `--worker-process`), the GET list also runs while the worker processes what the POST runs
accepted.

Run: `.venv/bin/python -m bench.api [--db sqlite|postgres] [--requests N] [--concurrency C] [--rate R] [--no-worker | --worker-process]`.
Only 127.0.0.1 is used; every loop is bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TENANT = "bench"
LIST_ROWS = 100_000


def mini_packs() -> tuple[dict[str, Any], dict[str, Any]]:
    import yaml

    domain = yaml.safe_load((ROOT / "tests/data/packs/mini-domain.yaml").read_text())
    policy = yaml.safe_load((ROOT / "tests/data/packs/mini-tenant.yaml").read_text())
    policy["tenantId"] = TENANT
    return domain, policy


async def seed(url: str, list_rows: int) -> str:
    """Tenant, packs, an operator key, and `list_rows` stored exceptions for the list scenario."""
    from breakdesk.api.auth import create_api_key
    from breakdesk.api.rbac import Role
    from breakdesk.catalog import Catalog
    from breakdesk.store import EventRow, ExceptionRow, ExceptionWrite, Store

    store = await Store.open(url)
    try:
        await store.create_tenant(TENANT)
        domain, policy = mini_packs()
        cat = Catalog(store)
        await cat.publish(TENANT, domain, "mini-domain.yaml", "bench", activate=True)
        await cat.publish(TENANT, policy, "mini-tenant.yaml", "bench", activate=True)
        _, key = await create_api_key(store, TENANT, Role.ADMIN, "bench", "bench")
        rng = random.Random(7)
        t0 = datetime(2025, 1, 1, tzinfo=UTC)
        types = [f"TYPE_{n}" for n in range(20)]
        sources = [f"src-{n}" for n in range(10)]
        for start in range(0, list_rows, 2000):
            writes = []
            for n in range(start, min(start + 2000, list_rows)):
                at = t0 + timedelta(seconds=n * 30)
                eid = f"EX-{n:08d}"
                row = ExceptionRow(
                    tenant_id=TENANT, exception_id=eid, source_system=rng.choice(sources),
                    exception_type=rng.choice(types), status=rng.choice(["TRIAGED", "IN_PROGRESS", "PENDING_APPROVAL", "ESCALATED", "CLOSED"]),
                    severity=rng.choice(["LOW", "MEDIUM", "HIGH", "CRITICAL"]), received_at=at, updated_at=at,
                    record={"exceptionId": eid}, priority=float(rng.randint(0, 100)), summary=f"exception {n}",
                    triaged_at=at,
                )
                writes.append(ExceptionWrite(row, [EventRow(eid, "intake", at, None, {})]))
            await store.write_batch(TENANT, writes)
        return key
    finally:
        await store.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


class RawClient:
    """A minimal keep-alive HTTP/1.1 client: httpx costs ~1 ms of client CPU per request, more than the server
    spends, so with it the benchmark would measure the driver. Content-Length bodies only (what we serve)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, key: str) -> None:
        self.reader, self.writer = reader, writer
        self.prefix = f"Host: {host}\r\nX-API-Key: {key}\r\n"

    async def request(self, method: str, target: str, body: bytes | None) -> int:
        head = f"{method} {target} HTTP/1.1\r\n{self.prefix}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = 0
        for line in raw.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status


async def drive(base: str, key: str, scenario: str, requests: int, concurrency: int, rate: float = 0.0) -> dict[str, Any]:
    """The load driver (runs in its own process): `requests` calls over `concurrency` keep-alive connections.

    Closed loop (`rate` 0): each connection sends its next request when the previous one is answered, so the
    server runs saturated and latency is mostly queueing (Little's law: 32 connections at 800 req/s means a
    40 ms mean). Open loop (`rate` > 0): request n is due at start + n / rate whatever the server does, and its
    latency counts from that moment (a request waiting for a free connection is late, not absent: no
    coordinated omission); this is how "≥ R req/s with p99 ≤ X" is checked."""
    from urllib.parse import urlencode, urlsplit

    import orjson

    host, port = urlsplit(base).hostname or "127.0.0.1", urlsplit(base).port or 80
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(requests))
    path = f"/v1/tenants/{TENANT}/exceptions"

    def request(n: int) -> tuple[str, str, bytes | None]:
        if scenario == "single":
            return "POST", path, orjson.dumps({"exceptionType": "BREAK", "rawPayload": {"orderId": f"S-{n}", "amount": n % 9000}})
        if scenario == "batch":
            body = [{"exceptionType": "BREAK", "rawPayload": {"orderId": f"B-{n}-{i}", "amount": i}} for i in range(500)]
            return "POST", path, orjson.dumps(body)
        params: list[tuple[str, Any]] = [
            [("severity", "HIGH"), ("limit", 50)],
            [("type", f"TYPE_{n % 20}"), ("limit", 50)],
            [("status", "ESCALATED"), ("severity", "CRITICAL"), ("limit", 50)],
            [("source", f"src-{n % 10}"), ("sort", "-updated_at"), ("limit", 50)],
            [("since", "2025-01-10T00:00:00Z"), ("until", "2025-01-20T00:00:00Z"), ("limit", 50)],
        ][n % 5]
        return "GET", f"{path}?{urlencode(params)}", None

    prepared = {n: request(n) for n in range(requests)}  # built before the clock starts

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        client = RawClient(reader, writer, host, key)
        try:
            for n in counter:
                method, target, body = prepared[n]
                t = time.perf_counter()
                status = await client.request(method, target, body)
                latencies.append(time.perf_counter() - t)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    async def open_loop() -> None:
        idle: asyncio.Queue[RawClient] = asyncio.Queue()
        writers = []
        for _ in range(concurrency):
            reader, writer = await asyncio.open_connection(host, port)
            writers.append(writer)
            idle.put_nowait(RawClient(reader, writer, host, key))
        start = time.perf_counter()

        async def one(n: int) -> None:
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            client = await idle.get()
            try:
                method, target, body = prepared[n]
                status = await client.request(method, target, body)
            finally:
                idle.put_nowait(client)
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1

        try:
            await asyncio.gather(*(one(n) for n in range(requests)))
        finally:
            for w in writers:
                w.close()

    started = time.perf_counter()
    if rate > 0:
        await open_loop()
    else:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "scenario": scenario,
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "statuses": statuses,
    }


def run_driver(base: str, key: str, scenario: str, requests: int, concurrency: int, rate: float = 0.0) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.api", "--driver", scenario, "--base", base, "--key", key,
         "--requests", str(requests), "--concurrency", str(concurrency), "--rate", str(rate)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become ready")


def pg_url() -> str | None:
    url = os.environ.get("BREAKDESK_BENCH_PG_URL")
    return url


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--driver", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rate", type=float, default=800.0,
                    help="offered load of the open-loop single-POST run (requests/s; 0 skips it)")
    ap.add_argument("--list-rows", type=int, default=LIST_ROWS)
    ap.add_argument("--list-concurrency", type=int, default=4)
    ap.add_argument("--no-worker", action="store_true", help="measure the API alone (no in-process worker)")
    ap.add_argument("--worker-process", action="store_true",
                    help="serve --no-worker plus a `breakdesk worker` process draining the queue meanwhile")
    ap.add_argument("--access-log", action="store_true", help="keep the per-request JSON access log on")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite",
                    help="postgres needs BREAKDESK_BENCH_PG_URL (an empty database)")
    args = ap.parse_args(argv)
    in_process = not (args.no_worker or args.worker_process)
    if args.driver:
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        print(json.dumps(asyncio.run(drive(args.base, args.key, args.driver, args.requests, args.concurrency,
                                           args.rate))))
        return

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}" if args.db == "sqlite" else pg_url()
        if url is None:
            raise SystemExit("set BREAKDESK_BENCH_PG_URL for --db postgres")
        t = time.perf_counter()
        key = asyncio.run(seed(url, args.list_rows))
        print(f"seeded {args.list_rows:,} exceptions in {time.perf_counter() - t:.1f} s ({args.db})")
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BREAKDESK_")}
        env.update({
            "BREAKDESK_DATABASE_URL": url,
            "BREAKDESK_RATE_LIMIT_RPS": "1000000",
            "BREAKDESK_RATE_LIMIT_BURST": "1000000",
            "BREAKDESK_LOG_LEVEL": "warning",
            "BREAKDESK_WORKER_ENABLED": "true" if in_process else "false",
            "BREAKDESK_ACCESS_LOG": "true" if args.access_log else "false",
        })
        base = f"http://127.0.0.1:{port}"
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115
        server = subprocess.Popen(
            # `serve` decides the worker by its flag (which overrides BREAKDESK_WORKER_ENABLED)
            [sys.executable, "-m", "breakdesk", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--worker" if in_process else "--no-worker"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        worker = None
        try:
            wait_ready(base, server)
            if args.worker_process:
                worker = subprocess.Popen([sys.executable, "-m", "breakdesk", "worker"],
                                          env={**env, "BREAKDESK_WORKER_ENABLED": "true"}, stdout=log,
                                          stderr=subprocess.STDOUT)
            run_driver(base, key, "list", 200, 4)  # warm-up: key cache, prepared plans
            idle = run_driver(base, key, "list", 2000, args.list_concurrency)
            print(f"GET list with filters over {args.list_rows:,} ({args.list_concurrency} concurrent), nothing else "
                  f"running: {idle['rps']:,.0f} requests/s, p50 {idle['p50_ms']:.1f} ms, p99 {idle['p99_ms']:.1f} ms "
                  f"(target p99 ≤ 50 ms) {idle['statuses']}")
            single = run_driver(base, key, "single", args.requests, args.concurrency)
            print(f"single POST, closed loop ({args.concurrency} connections, saturated): {single['rps']:,.0f} "
                  f"requests/s, p50 {single['p50_ms']:.1f} ms, p99 {single['p99_ms']:.1f} ms {single['statuses']}")
            if args.rate > 0:
                paced = run_driver(base, key, "single", args.requests, 64, args.rate)
                print(f"single POST, open loop at {args.rate:,.0f} requests/s offered: {paced['rps']:,.0f} "
                      f"requests/s done, p50 {paced['p50_ms']:.1f} ms, p99 {paced['p99_ms']:.1f} ms "
                      f"(target ≥ 800/s, p99 ≤ 30 ms) {paced['statuses']}")
            batch = run_driver(base, key, "batch", 40, 4)
            print(f"batch POST of 500: {batch['rps'] * 500:,.0f} exceptions/s accepted, p99 {batch['p99_ms']:.0f} ms "
                  f"per request (target ≥ 10,000/s) {batch['statuses']}")
            listing = run_driver(base, key, "list", 2000, args.list_concurrency)
            busy = ("" if args.no_worker else
                    f", while the {'worker process' if args.worker_process else 'in-process worker'} processes "
                    "the exceptions accepted above")
            print(f"GET list with filters over {args.list_rows:,} ({args.list_concurrency} concurrent{busy}): "
                  f"{listing['rps']:,.0f} requests/s, "
                  f"p50 {listing['p50_ms']:.1f} ms, p99 {listing['p99_ms']:.1f} ms (target p99 ≤ 50 ms) "
                  f"{listing['statuses']}")
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=60)
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()


if __name__ == "__main__":
    main()
