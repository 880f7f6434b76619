"""Observability and the outermost request guard: JSON logs (structlog), Prometheus metrics, request ids,
the hard body-size cap, and the last line of defence that turns an unexpected error into a 500 problem.

One pure ASGI middleware does all of it: per-request work here runs at every request, so it avoids
Starlette's BaseHTTPMiddleware and keeps label cardinality bounded (route templates, never raw paths).
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
import time
import uuid
from typing import Any

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from breakdesk.api.problems import KINDS, MEDIA_TYPE, problem_body

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Request ids need to be unique, not secret: a random per-process prefix and a counter cost nothing per
#: request (a uuid4 is a getrandom system call each).
_ID_PREFIX = uuid.uuid4().hex[:22]
_ID_COUNTER = itertools.count(1)
_configured = False


def configure_logging(level: str = "info") -> None:
    """JSON lines on stdout, for the whole process: called once by `breakdesk serve`."""
    global _configured
    numeric = getattr(logging, level.upper(), logging.INFO)
    if not _configured:
        logging.basicConfig(format="%(message)s", stream=sys.stdout, level=numeric)
        _configured = True
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=lambda obj, **_: orjson.dumps(obj, default=str).decode()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "breakdesk.api") -> Any:
    return structlog.get_logger(name)


class ApiMetrics:
    """Process-level Prometheus metrics in a registry of their own (one per app: tests build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "breakdesk_http_requests", "HTTP requests by route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "breakdesk_http_request_duration_seconds", "HTTP request latency by route template.",
            ["method", "route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.accepted = Counter(
            "breakdesk_intake_accepted", "Exceptions accepted into the intake queue (duplicates excluded).",
            registry=self.registry,
        )
        self.processed = Counter(
            "breakdesk_worker_items", "Intake items handled by the worker, by outcome.",
            ["outcome"], registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "breakdesk_worker_batch_duration_seconds", "Time to process one claimed batch.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "breakdesk_intake_queue_depth", "Pending intake items across tenants (sampled by the worker).",
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "breakdesk_auth_failures", "Rejected credentials by reason.", ["reason"], registry=self.registry,
        )
        self.rate_limited = Counter(
            "breakdesk_rate_limited", "Requests refused with 429, by kind.", ["kind"], registry=self.registry,
        )


class BodyTooLarge(Exception):
    """Raised from `receive` when a body grows past the hard cap while being read."""


def _problem_message(slug: str, detail: str, path: str, request_id: str, extra_headers: list[tuple[bytes, bytes]] | None = None) -> tuple[Message, Message]:
    kind = KINDS[slug]
    body = orjson.dumps(problem_body(kind, detail, path))
    headers = [
        (b"content-type", MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        *(extra_headers or []),
    ]
    return (
        {"type": "http.response.start", "status": kind.status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics, max_request_bytes: int, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.max_bytes = max_request_bytes
        self.access_log = access_log
        self.log = get_logger("breakdesk.api.access")
        self.errors = get_logger("breakdesk.api.error")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope.get("path", "")
        request_id = ""
        length: int | None = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
            elif name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
        if not request_id:
            request_id = f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started_response = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started_response = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        try:
            if length is not None and (length < 0 or length > self.max_bytes):
                slug, detail = (
                    ("malformed-request", "Content-Length is not a number")
                    if length < 0
                    else ("payload-too-large", f"the body is larger than {self.max_bytes} bytes")
                )
                for message in _problem_message(slug, detail, path, request_id):
                    await send_wrapper(message)
            else:
                await self.app(scope, counting_receive, send_wrapper)
        except BodyTooLarge:
            if not started_response:
                for message in _problem_message(
                    "payload-too-large", f"the body is larger than {self.max_bytes} bytes", path, request_id
                ):
                    await send_wrapper(message)
        except Exception:
            self.errors.exception("unhandled error", path=path, method=scope.get("method"), request_id=request_id)
            if not started_response:
                for message in _problem_message(
                    "internal-error", "an internal error occurred; it has been logged", path, request_id
                ):
                    await send_wrapper(message)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            if self.access_log:
                state = scope.get("state", {})
                self.log.info(
                    "request",
                    method=method,
                    route=template,
                    path=path,
                    status=status,
                    ms=round(elapsed * 1000, 2),
                    request_id=request_id,
                    tenant=state.get("tenant"),
                    principal=state.get("actor"),
                )
