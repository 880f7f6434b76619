"""The HTTP tool executor: one tool call of one tenant, safely.

Before anything is sent: the tool must be defined by the tenant's domain pack, allow-listed and not blocked
(checked here, at call time, whatever the plan said), its arguments must validate against the tool's JSON
Schema, its URL must pass the tenant's network policy (SSRF guard), and its secret must resolve.

Then each attempt goes through the tenant's circuit breaker for the tool, with the tool's timeout (tenant
overrides win) as a wall-clock limit on the whole exchange, redirects not followed and the response body
capped while streaming. A 2xx body is validated against the tool's output schema when one is declared.

Retries (tenacity: exponential backoff with jitter) only when repeating is safe:
- a failure before the request was sent (connection refused, connect timeout) is always retried;
- an HTTP 5xx / 408 / 429 is retried when the tool is idempotent, or when the playbook step asked for retries
  (`onFailure: retry`): every attempt carries the same `Idempotency-Key`, so the server can drop repeats;
- a failure after sending with no answer (timeout, dropped connection) has an unknown outcome and is retried
  only for idempotent tools;
- 4xx, invalid responses, refusals and an open circuit are never retried.
The number of retries is the tool's `retries` capped by the tenant's `maxAutoRetries` (for `onFailure: retry`
it is `maxAutoRetries`).

Hooks let the caller persist an intent before each send and each attempt's outcome after it; every recorded
value (arguments, outputs, errors) is passed through the secret redactor first.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import orjson
import structlog
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential_jitter

from breakdesk.packs.compiler import CompiledTenantPolicy, CompiledTool
from breakdesk.packs.schema import SecretRef
from breakdesk.tools.breaker import Breakers, BreakerState, OpenedState
from breakdesk.tools.metrics import TOOL_ATTEMPTS, TOOL_LATENCY
from breakdesk.tools.secrets import Redactor, SecretError, SecretResolver
from breakdesk.tools.ssrf import HostGuard, UnsafeTarget

log = structlog.get_logger("breakdesk.tools")

DEFAULT_MAX_RESPONSE_BYTES = 1 << 20
USER_AGENT = "breakdesk-tools/0.1"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RETRYABLE_STATUS = frozenset({408, 429})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_ERROR_SNIPPET = 300


# ------------------------------------------------------------------------------------------------ policy


@dataclass(frozen=True, slots=True)
class EffectiveTool:
    """A tool as one tenant runs it: the domain pack's definition with the tenant's overrides applied."""

    name: str
    compiled: CompiledTool
    method: str
    url: str | None
    timeout: float
    retries: int
    secret: SecretRef | None
    idempotent: bool
    effect: str


def policy_refusal(tenant: CompiledTenantPolicy, tool: str) -> str | None:
    """Why the tenant may not run `tool` right now (None when it may). Checked at every call."""
    domain = tenant.domain
    if tool not in domain.tools:
        return f"tool {tool} is not defined by {domain.ref}"
    if tool in tenant.blocked_tools:
        return f"tool {tool} is blocked by {tenant.blocked_tools[tool]}"
    if tool not in tenant.allowed_tools:
        return f"tool {tool} is not in tools.allow of {tenant.ref}"
    return None


def effective_tool(tenant: CompiledTenantPolicy, tool: str) -> EffectiveTool:
    compiled = tenant.domain.tools[tool]
    spec = compiled.spec
    ov = tenant.spec.tools.overrides.get(tool)
    return EffectiveTool(
        name=tool,
        compiled=compiled,
        method=spec.method.value,
        url=(ov.url if ov and ov.url else spec.url),
        timeout=(ov.timeoutSeconds if ov and ov.timeoutSeconds else spec.timeoutSeconds),
        retries=(ov.retries if ov and ov.retries is not None else spec.retries),
        secret=(ov.secret if ov and ov.secret else spec.secret),
        idempotent=spec.idempotent,
        effect=spec.effect.value,
    )


def attempt_budget(tool: EffectiveTool, tenant: CompiledTenantPolicy, retry_requested: bool) -> int:
    """Total attempts allowed: 1 + retries (tool retries capped by maxAutoRetries; onFailure: retry uses the cap)."""
    cap = tenant.max_auto_retries
    retries = cap if retry_requested else min(tool.retries, cap)
    return 1 + max(0, retries)


def render_url(template: str, args: Mapping[str, Any]) -> str:
    """Fill `{name}` placeholders from arguments, each URL-encoded as one path segment."""

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        value = args.get(name)
        if value is None:
            raise ValueError(f"url placeholder {{{name}}} has no argument value")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            raise ValueError(f"url placeholder {{{name}}} needs a scalar, got {type(value).__name__}")
        return quote(text, safe="")

    return _PLACEHOLDER.sub(fill, template)


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class ToolCall:
    tenant: CompiledTenantPolicy
    tool: str
    args: dict[str, Any]
    idempotency_key: str
    subject: str = ""  # what the call is about (exception id), for logs
    retry_requested: bool = False  # the step's onFailure is "retry"
    first_attempt: int = 1  # a resumed step continues its attempt numbering
    attempts_left: int | None = None  # a resumed step has used part of its budget


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    status: str  # SUCCEEDED | FAILED
    outcome: str  # success | http_error | timeout | connect_error | invalid_response | circuit_open
    started_at: datetime
    finished_at: datetime
    latency_ms: float
    status_code: int | None = None
    output: Any = None
    error: str | None = None
    retryable: bool = False
    sent: bool = True  # False when nothing reached the tool (connect failure, open circuit)
    outcome_unknown: bool = False  # sent, but no answer: the tool may or may not have acted

    @property
    def breaker_failure(self) -> bool:
        if self.outcome in ("timeout", "connect_error", "invalid_response"):
            return True
        return self.outcome == "http_error" and self.status_code is not None and (
            self.status_code >= 500 or self.status_code in _RETRYABLE_STATUS
        )


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool: str
    status: str  # SUCCEEDED | FAILED
    args: Any  # as sent, redacted
    attempts: tuple[Attempt, ...] = ()
    output: Any = None
    error: str | None = None
    refused: bool = False  # refused before any attempt (policy, schema, network policy, secret)
    method: str | None = None
    url: str | None = None  # redacted

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def outcome_unknown(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].outcome_unknown


class AttemptHooks(Protocol):
    """Persistence around attempts. `before_send` may raise to stop the call before anything is sent."""

    async def before_send(self, number: int, deadline: datetime) -> None: ...

    async def after_attempt(self, attempt: Attempt) -> None: ...


class _NoHooks:
    async def before_send(self, number: int, deadline: datetime) -> None:
        return None

    async def after_attempt(self, attempt: Attempt) -> None:
        return None


class _Tripped(Exception):
    """Carries a failed attempt out of the breaker's context so it counts as a failure."""

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt


class _TooLarge(Exception):
    pass


# ----------------------------------------------------------------------------------------------- executor


@dataclass
class ExecutorSettings:
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    backoff_initial: float = 0.2
    backoff_max: float = 5.0
    backoff_jitter: float = 0.2
    breaker_threshold: int = 5
    breaker_ttl: float = 30.0
    max_connections: int = 200
    #: Prefix rewrites applied to tool URLs before the network check (e.g. the demo's local tool server).
    url_rewrites: dict[str, str] = field(default_factory=dict)


class ToolExecutor:
    """Shared by every tenant of a process: one connection pool, one set of breakers, one redactor."""

    def __init__(
        self,
        settings: ExecutorSettings | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        guard: HostGuard | None = None,
        secrets: SecretResolver | None = None,
        redactor: Redactor | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings or ExecutorSettings()
        s = self.settings
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would bypass the address pinning
            limits=httpx.Limits(max_connections=s.max_connections, max_keepalive_connections=s.max_connections),
        )
        self.redactor = redactor or (secrets.redactor if secrets is not None else Redactor())
        self.secrets = secrets or SecretResolver(self.redactor)
        self.guard = guard or HostGuard()
        self.breakers = Breakers(s.breaker_threshold, s.breaker_ttl)
        self._sleep = sleep

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()

    async def __aenter__(self) -> ToolExecutor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def breaker_states(self, tenant_id: str) -> dict[str, BreakerState]:
        """Circuit state of every tool this tenant has called (for the API and `breakdesk tools breakers`)."""
        return self.breakers.states(tenant_id)

    def _rewrite(self, url: str) -> str:
        for prefix, target in self.settings.url_rewrites.items():
            if url.startswith(prefix):
                return target + url[len(prefix) :]
        return url

    async def call(self, call: ToolCall, hooks: AttemptHooks | None = None) -> ToolResult:
        """Run one tool call (with its safe retries). Never raises for tool or network problems; a hook's
        exception propagates (the caller decided to stop)."""
        hooks = hooks or _NoHooks()
        tenant = call.tenant
        redacted_args = self.redactor.redact(call.args)

        def refuse(reason: str, method: str | None = None, url: str | None = None) -> ToolResult:
            log.info("tool.refused", tenant=tenant.tenant_id, tool=call.tool, subject=call.subject, reason=reason)
            return ToolResult(call.tool, "FAILED", redacted_args, error=reason, refused=True, method=method, url=url)

        refusal = policy_refusal(tenant, call.tool)
        if refusal is not None:
            return refuse(refusal)
        tool = effective_tool(tenant, call.tool)
        if tool.url is None:
            return refuse(f"tool {call.tool} has no url: it cannot be called over HTTP")
        errors = tool.compiled.arg_errors(call.args)
        if errors:
            return refuse("invalid arguments: " + "; ".join(errors[:5]))
        try:
            url = self._rewrite(render_url(tool.url, call.args))
        except ValueError as exc:
            return refuse(f"invalid arguments: {exc}")
        shown_url = self.redactor.text(url)
        net = tenant.spec.tools
        try:
            target = await self.guard.check(url, net.allowedHosts, net.allowPrivateNetworks)
        except UnsafeTarget as exc:
            return refuse(f"refused by network policy: {exc}", tool.method, shown_url)
        headers = {
            "Idempotency-Key": call.idempotency_key,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Host": target.host_header,
        }
        if tool.secret is not None:
            try:
                value = self.secrets.resolve(tool.secret.ref)
            except SecretError as exc:
                return refuse(str(exc), tool.method, shown_url)
            headers[tool.secret.header] = tool.secret.format.replace("{value}", value)
        request_kw: dict[str, Any] = {"headers": headers}
        if tool.method in _BODY_METHODS:
            request_kw["content"] = orjson.dumps(call.args)
            headers["Content-Type"] = "application/json"
        else:
            used = set(_PLACEHOLDER.findall(tool.url))
            params = {
                k: (v if isinstance(v, str) else orjson.dumps(v).decode())
                for k, v in call.args.items()
                if k not in used and v is not None
            }
            if params:
                request_kw["params"] = params
        if target.sni_hostname:
            request_kw["extensions"] = {"sni_hostname": target.sni_hostname}

        budget = attempt_budget(tool, tenant, call.retry_requested)
        if call.attempts_left is not None:  # a resumed step has spent part of its budget
            budget = call.attempts_left
        may_repeat = tool.idempotent or call.retry_requested
        attempts: list[Attempt] = []
        counter = [call.first_attempt - 1]

        async def one() -> Attempt:
            counter[0] += 1
            number = counter[0]
            deadline = datetime.now(UTC) + timedelta(seconds=tool.timeout)
            await hooks.before_send(number, deadline)
            attempt = await self._attempt(tenant.tenant_id, tool, target.url, request_kw, number, may_repeat)
            attempts.append(attempt)
            await hooks.after_attempt(attempt)
            log.info(
                "tool.attempt",
                tenant=tenant.tenant_id,
                tool=tool.name,
                subject=call.subject,
                attempt=number,
                status=attempt.status,
                status_code=attempt.status_code,
                latency_ms=round(attempt.latency_ms, 2),
                error=attempt.error,
            )
            return attempt

        s = self.settings
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, budget)),
            wait=wait_exponential_jitter(multiplier=s.backoff_initial, max=s.backoff_max, jitter=s.backoff_jitter),
            retry=retry_if_result(lambda a: a.retryable),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            sleep=self._sleep,
            reraise=True,
        )
        last: Attempt = await retrying(one)
        return ToolResult(
            call.tool,
            last.status,
            redacted_args,
            attempts=tuple(attempts),
            output=last.output,
            error=last.error,
            method=tool.method,
            url=shown_url,
        )

    async def _attempt(
        self,
        tenant_id: str,
        tool: EffectiveTool,
        url: str,
        request_kw: dict[str, Any],
        number: int,
        may_repeat: bool,
    ) -> Attempt:
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        breaker = await self.breakers.get(tenant_id, tool.name)
        try:
            async with breaker:
                attempt = await self._send(tool, url, request_kw, number, may_repeat, started, t0)
                if attempt.breaker_failure:
                    raise _Tripped(attempt)
        except OpenedState:
            attempt = Attempt(
                number, "FAILED", "circuit_open", started, datetime.now(UTC), (time.perf_counter() - t0) * 1000,
                error=f"circuit breaker open for {tool.name} (tenant {tenant_id}): not sent",
                sent=False,
            )
        except _Tripped as tripped:
            attempt = tripped.attempt
        TOOL_ATTEMPTS.labels(tenant_id, tool.name, attempt.outcome).inc()
        if attempt.sent:
            TOOL_LATENCY.labels(tenant_id, tool.name).observe(attempt.latency_ms / 1000)
        return attempt

    async def _send(
        self,
        tool: EffectiveTool,
        url: str,
        request_kw: dict[str, Any],
        number: int,
        may_repeat: bool,
        started: datetime,
        t0: float,
    ) -> Attempt:
        red = self.redactor

        def done(outcome: str, **kw: Any) -> Attempt:
            if kw.get("error"):
                kw["error"] = red.text(str(kw["error"]))[:1000]
            status = "SUCCEEDED" if outcome == "success" else "FAILED"
            return Attempt(number, status, outcome, started, datetime.now(UTC), (time.perf_counter() - t0) * 1000, **kw)

        timeout = tool.timeout
        request = self.client.build_request(tool.method, url, timeout=httpx.Timeout(timeout), **request_kw)
        try:
            # httpx timeouts are per phase; this bounds the whole exchange, a slow-drip body included.
            async with asyncio.timeout(timeout + 0.05):
                response = await self.client.send(request, stream=True)
                try:
                    code = response.status_code
                    body = await self._read_capped(response)
                finally:
                    await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return done("connect_error", error=f"cannot connect: {type(exc).__name__}", retryable=True, sent=False)
        except (TimeoutError, httpx.TimeoutException):
            return done("timeout", error=f"no complete response within {timeout:g}s", retryable=tool.idempotent,
                        outcome_unknown=True)
        except _TooLarge:
            limit = self.settings.max_response_bytes
            return done("invalid_response", status_code=code, error=f"response body larger than {limit} bytes")
        except httpx.TransportError as exc:
            return done("timeout", error=f"connection failed after sending: {type(exc).__name__}",
                        retryable=tool.idempotent, outcome_unknown=True)
        if 300 <= code < 400:
            where = response.headers.get("location", "?")
            return done("http_error", status_code=code, error=f"HTTP {code} redirect to {where} (not followed)")
        if code >= 400:
            snippet = body[:_ERROR_SNIPPET].decode("utf-8", "replace").strip()
            retryable = (code >= 500 or code in _RETRYABLE_STATUS) and may_repeat
            return done("http_error", status_code=code, error=f"HTTP {code}" + (f": {snippet}" if snippet else ""),
                        retryable=retryable, output=None)
        output, problem = self._parse(tool, body, response.headers.get("content-type", ""))
        if problem is not None:
            return done("invalid_response", status_code=code, error=problem)
        return done("success", status_code=code, output=red.redact(output))

    async def _read_capped(self, response: httpx.Response) -> bytes:
        limit = self.settings.max_response_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse(tool: EffectiveTool, body: bytes, content_type: str) -> tuple[Any, str | None]:
        validator = tool.compiled.output_validator
        if not body.strip():
            if validator is not None:
                return None, "empty response body, but the tool declares an output schema"
            return None, None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            if validator is not None or "json" in content_type:
                return None, f"response is not valid JSON ({len(body)} bytes, content-type {content_type or 'none'})"
            return {"text": body[:2000].decode("utf-8", "replace")}, None
        if validator is not None:
            errors = [
                f"{'/'.join(str(p) for p in e.absolute_path) or '$'}: {e.message}"
                for e in validator.iter_errors(data)
            ]
            if errors:
                return None, "response does not match the output schema: " + "; ".join(errors[:3])[:500]
        return data, None
