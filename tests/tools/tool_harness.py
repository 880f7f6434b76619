"""A real tool server for the tests (uvicorn on 127.0.0.1, a free port, in a background thread) and helpers that
set up tenants whose packs call it.

Endpoints (every call is counted under its `name`; GET /counts returns the counters):
- /ok/{name}           200 JSON echo of the arguments
- /fail/{name}         500
- /flaky/{name}?fail=N 500 for the first N calls, then 200
- /slow/{name}?s=X     waits X seconds, then 200
- /garbage/{name}      200 with a body that is not JSON
- /huge/{name}         200 with a ~4 MB JSON body, streamed
- /echo/{name}         JSON of the request headers (a server that leaks what it is sent); ?status=500 fails
- /block/{name}        holds the request until POST /release/{name}
- /redirect/{name}     302 to the cloud metadata address
- /bad-output/{name}   200 JSON that does not match the declared output schema
"""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from breakdesk.catalog import Catalog
from breakdesk.pipeline.orchestrator import BatchReport, Orchestrator
from breakdesk.pipeline.types import Submission


class ToolServer:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.headers: dict[str, dict[str, str]] = {}
        self.bodies: dict[str, list[Any]] = {}
        self._events: dict[str, asyncio.Event] = {}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.app = Starlette(routes=[
            Route("/ok/{name}", self.ok, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/fail/{name}", self.fail, methods=["GET", "POST"]),
            Route("/flaky/{name}", self.flaky, methods=["GET", "POST"]),
            Route("/slow/{name}", self.slow, methods=["GET", "POST"]),
            Route("/garbage/{name}", self.garbage, methods=["GET", "POST"]),
            Route("/huge/{name}", self.huge, methods=["GET", "POST"]),
            Route("/echo/{name}", self.echo, methods=["GET", "POST"]),
            Route("/block/{name}", self.block, methods=["GET", "POST"]),
            Route("/release/{name}", self.release, methods=["POST"]),
            Route("/redirect/{name}", self.redirect, methods=["GET", "POST"]),
            Route("/bad-output/{name}", self.bad_output, methods=["GET", "POST"]),
            Route("/counts", self.get_counts, methods=["GET"]),
        ])
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error",
                                                     lifespan="off", access_log=False))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> ToolServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("tool server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)

    # ------------------------------------------------------------------------------------------ handlers

    async def _count(self, request: Request) -> str:
        name = request.path_params["name"]
        self.counts[name] += 1
        self.headers[name] = dict(request.headers)
        body = await request.body()
        self.bodies.setdefault(name, []).append(body.decode() if body else dict(request.query_params))
        return name

    async def ok(self, request: Request) -> Response:
        name = await self._count(request)
        body = await request.body()
        return JSONResponse({"ok": True, "name": name, "count": self.counts[name],
                             "args": (await request.json()) if body else dict(request.query_params)})

    async def fail(self, request: Request) -> Response:
        await self._count(request)
        return JSONResponse({"error": "internal"}, status_code=500)

    async def flaky(self, request: Request) -> Response:
        name = await self._count(request)
        if self.counts[name] <= int(request.query_params.get("fail", "1")):
            return JSONResponse({"error": "try again"}, status_code=503)
        return JSONResponse({"ok": True, "name": name, "count": self.counts[name]})

    async def slow(self, request: Request) -> Response:
        name = await self._count(request)
        await asyncio.sleep(float(request.query_params.get("s", "2")))
        return JSONResponse({"ok": True, "name": name})

    async def garbage(self, request: Request) -> Response:
        await self._count(request)
        return PlainTextResponse("<html>502 proxy error{{{ not json", media_type="application/json")

    async def huge(self, request: Request) -> Response:
        await self._count(request)

        async def chunks() -> Any:
            yield b'{"data": "'
            for _ in range(64):
                yield b"x" * 65536
            yield b'"}'

        return StreamingResponse(chunks(), media_type="application/json")

    async def echo(self, request: Request) -> Response:
        await self._count(request)
        status = int(request.query_params.get("status", "200"))
        return JSONResponse({"ok": status < 400, "headers": dict(request.headers)}, status_code=status)

    async def block(self, request: Request) -> Response:
        name = await self._count(request)
        await self._events.setdefault(name, asyncio.Event()).wait()
        return JSONResponse({"ok": True, "name": name, "count": self.counts[name]})

    async def release(self, request: Request) -> Response:
        self._events.setdefault(request.path_params["name"], asyncio.Event()).set()
        return JSONResponse({"released": True})

    async def redirect(self, request: Request) -> Response:
        await self._count(request)
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302)

    async def bad_output(self, request: Request) -> Response:
        await self._count(request)
        return JSONResponse({"unexpected": True})

    async def get_counts(self, request: Request) -> Response:
        return JSONResponse(dict(self.counts))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def release(server: ToolServer, name: str) -> None:
    httpx.post(f"{server.base}/release/{name}", timeout=5)


async def arrived(server: ToolServer, name: str, expected: int, within: float = 5.0) -> int:
    """How many calls `name` received, once `expected` have or `within` seconds have passed. A call the client
    gave up on (a timeout) may reach the server's handler after the client returns: the server runs in
    another thread, which a loaded machine can delay past a short timeout."""
    deadline = time.monotonic() + within
    while server.counts[name] < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return server.counts[name]


# ------------------------------------------------------------------------------------------------- packs


def uid(prefix: str = "n") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def tool(url: str, *, method: str = "POST", idempotent: bool = True, retries: int = 0, timeout: float = 5,
         output: dict[str, Any] | None = None, secret: dict[str, str] | None = None, effect: str = "write",
         compensation: str | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "effect": effect,
        "method": method,
        "url": url,
        "parameters": params or {"type": "object", "properties": {"ref": {"type": "string", "minLength": 1},
                                                                 "note": {"type": "string"}},
                                 "required": ["ref"], "additionalProperties": False},
        "idempotent": idempotent,
        "retries": retries,
        "timeoutSeconds": timeout,
    }
    if output is not None:
        spec["output"] = output
    if secret is not None:
        spec["secret"] = secret
    if compensation is not None:
        spec["compensation"] = compensation
    return spec


def domain_pack(tools: dict[str, dict[str, Any]], playbooks: list[dict[str, Any]], *,
                version: str = "1.0.0", types: tuple[str, ...] = ("BROKEN",)) -> dict[str, Any]:
    return {
        "kind": "DomainPack",
        "name": "toolsdomain",
        "version": version,
        "intake": {"fields": {"ref": "${rawPayload.ref}", "amount": "${rawPayload.amount}"}},
        "exceptionTypes": {t: {"defaultSeverity": "LOW", "fingerprintFields": ["ref"]} for t in types},
        "tools": tools,
        "playbooks": playbooks,
    }


def playbook(pid: str, steps: list[dict[str, Any]], etype: str = "BROKEN") -> dict[str, Any]:
    return {"id": pid, "match": {"types": [etype]}, "steps": steps}


def step(sid: str, tool_name: str | None, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": sid, **kw}
    if tool_name is not None:
        out["tool"] = tool_name
        out.setdefault("args", {"ref": "${normalizedContext.ref}"})
    return out


def tenant_policy(tenant_id: str, domain: dict[str, Any], **kw: Any) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "kind": "TenantPolicy",
        "tenantId": tenant_id,
        "version": kw.pop("version", "1.0.0"),
        "domain": {"name": domain["name"], "versionRange": "*"},
        "approvedPlaybooks": [p["id"] for p in domain["playbooks"]],
        "tools": {"allow": sorted(domain["tools"]), "allowedHosts": ["127.0.0.1"], "allowPrivateNetworks": True},
        "guardrails": {"maxAutoRetries": 3},
    }
    for key, value in kw.items():
        if isinstance(value, dict) and isinstance(policy.get(key), dict):
            policy[key] = {**policy[key], **value}
        else:
            policy[key] = value
    return policy


async def setup_tenant(store: Any, tenant_id: str, domain: dict[str, Any], policy: dict[str, Any]) -> None:
    if await store.get_tenant(tenant_id) is None:
        await store.create_tenant(tenant_id, tenant_id)
    cat = Catalog(store)
    await cat.publish(tenant_id, copy.deepcopy(domain), "domain.yaml", "tests", activate=True)
    await cat.publish(tenant_id, copy.deepcopy(policy), "tenant.yaml", "tests", activate=True)


async def submit(orch: Orchestrator, tenant_id: str, ref: str, *, etype: str = "BROKEN", dry_run: bool = False,
                 **payload: Any) -> tuple[str, BatchReport]:
    sub = Submission({"exceptionType": etype, "sourceSystem": "tests", "rawPayload": {"ref": ref, **payload}},
                     datetime.now(UTC), 1)
    report = await orch.process(tenant_id, [sub], dry_run=dry_run)
    assert report.processed == 1, report
    return report.exception_ids[0], report


def stages(events: list[dict[str, Any]]) -> list[str]:
    return [e["stage"] for e in events]


def compiled(domain: dict[str, Any], policy: dict[str, Any]) -> Any:
    """The real compiled tenant policy (through the loader and compiler) of two pack dicts."""
    from breakdesk.packs.compiler import compile_domain, compile_tenant
    from breakdesk.packs.loader import model_from_data

    dom = model_from_data(copy.deepcopy(domain), "domain.yaml")
    ten = model_from_data(copy.deepcopy(policy), "tenant.yaml")
    return compile_tenant(ten, compile_domain(dom, "domain.yaml"), "tenant.yaml")  # type: ignore[arg-type]


def single_tool_tenant(tenant_id: str, spec: dict[str, Any], name: str = "t1", **policy: Any) -> Any:
    dom = domain_pack({name: spec}, [playbook("pb", [step("s1", name)])])
    return compiled(dom, tenant_policy(tenant_id, dom, **policy))
