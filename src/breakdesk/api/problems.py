"""RFC 9457 problem details: every error the API returns, with a stable `type` URI per kind of problem.

Clients branch on `type` (never on `detail`, which is for people). Validation problems list each error
with where it was found (`in`: body, query, path, header) and its JSON path. Nothing here ever puts SQL,
stack traces or secrets into a response.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from breakdesk.packs.problems import PackError, json_path
from breakdesk.pipeline.orchestrator import NoActivePacks
from breakdesk.store.errors import Conflict, InvalidCursor, NotFound, StoreError

TYPE_BASE = "https://breakdesk.dev/problems/"
MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ProblemKind:
    slug: str
    status: int
    title: str

    @property
    def type(self) -> str:
        return TYPE_BASE + self.slug


KINDS: dict[str, ProblemKind] = {
    k.slug: k
    for k in (
        ProblemKind("malformed-request", 400, "The request cannot be read"),
        ProblemKind("unauthorized", 401, "Authentication required"),
        ProblemKind("forbidden", 403, "Not allowed"),
        ProblemKind("not-found", 404, "Not found"),
        ProblemKind("method-not-allowed", 405, "Method not allowed"),
        ProblemKind("not-acceptable", 406, "Not acceptable"),
        ProblemKind("conflict", 409, "Conflict"),
        ProblemKind("invalid-state", 409, "Not possible in the current state"),
        ProblemKind("no-active-packs", 409, "The tenant has no active packs"),
        ProblemKind("payload-too-large", 413, "Request body too large"),
        ProblemKind("batch-too-large", 413, "Too many items in one request"),
        ProblemKind("unsupported-media-type", 415, "Unsupported media type"),
        ProblemKind("validation-error", 422, "The request is not valid"),
        ProblemKind("pack-invalid", 422, "The pack is not valid"),
        ProblemKind("idempotency-key-reused", 422, "Idempotency key reused with a different request"),
        ProblemKind("rate-limited", 429, "Too many requests"),
        ProblemKind("too-many-auth-failures", 429, "Too many failed authentications"),
        ProblemKind("internal-error", 500, "Internal error"),
        ProblemKind("service-unavailable", 503, "Service unavailable"),
    )
}

_BY_STATUS = {400: "malformed-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
              405: "method-not-allowed", 406: "not-acceptable", 409: "conflict", 413: "payload-too-large",
              415: "unsupported-media-type", 422: "validation-error", 429: "rate-limited",
              503: "service-unavailable"}


def kind_for_status(status: int) -> str:
    """The problem kind (slug) that answers with `status`: errors raised with a bare HTTP status map here."""
    return _BY_STATUS.get(status, "malformed-request" if status < 500 else "internal-error")


class ProblemError(BaseModel):
    """One located error inside a problem (validation and pack problems)."""

    model_config = ConfigDict(extra="allow")

    in_: str = Field(alias="in", description="body, query, path or header")
    path: str = Field(description="JSON path inside that part, e.g. $.items[3].rawPayload")
    message: str
    code: str | None = None
    file: str | None = Field(None, description="For pack problems: the pack source the path is in.")


class Problem(BaseModel):
    """application/problem+json (RFC 9457)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemError] | None = None


class ApiProblem(Exception):
    """Raised anywhere in request handling to answer with a problem of kind `slug`."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if slug not in KINDS:
            raise KeyError(f"unknown problem kind {slug!r}")
        super().__init__(detail)
        self.kind = KINDS[slug]
        self.detail = detail
        self.errors = [dict(e) for e in errors] if errors is not None else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def problem_body(
    kind: ProblemKind,
    detail: str,
    instance: str | None,
    errors: list[dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": kind.type, "title": kind.title, "status": kind.status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return body


def problem_response(
    slug: str,
    detail: str,
    instance: str | None = None,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    kind = KINDS[slug]
    return Response(
        orjson.dumps(problem_body(kind, detail, instance, errors, extra)),
        status_code=kind.status,
        media_type=MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def error_entry(where: str, loc: Iterable[Any], message: str, code: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"in": where, "path": json_path(loc), "message": message}
    if code:
        entry["code"] = code
    return entry


def validation_errors(exc: ValidationError, where: str = "body", prefix: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """pydantic errors as located problem entries (the input value is never echoed back)."""
    return [
        error_entry(where, [*prefix, *e.get("loc", ())], str(e.get("msg", "invalid value")), e.get("type"))
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _request_validation(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    slug = "validation-error"
    for e in exc.errors():
        loc = list(e.get("loc", ()))
        where = str(loc[0]) if loc and loc[0] in ("body", "query", "path", "header", "cookie") else "body"
        rest = loc[1:] if loc and loc[0] == where else loc
        if e.get("type") == "json_invalid":
            slug = "malformed-request"
        errors.append(error_entry(where, rest, str(e.get("msg", "invalid value")), e.get("type")))
    return slug, errors


def _store_error_response(exc: StoreError, instance: str) -> Response:
    text = str(exc)
    if isinstance(exc, NotFound):
        return problem_response("not-found", text, instance)
    if isinstance(exc, Conflict):
        return problem_response("conflict", text, instance)
    if isinstance(exc, InvalidCursor):
        return problem_response(
            "validation-error", text, instance, errors=[error_entry("query", ["cursor"], text, "invalid_cursor")]
        )
    if "retry" in text or text.startswith(("database error", "cannot connect")):
        return problem_response("service-unavailable", text, instance, headers={"Retry-After": "1"})
    return problem_response("malformed-request", text, instance)


async def handle_api_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    return problem_response(
        exc.kind.slug, exc.detail, request.url.path, errors=exc.errors, headers=exc.headers, extra=exc.extra
    )


async def handle_request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    slug, errors = _request_validation(exc)
    n = len(errors)
    return problem_response(slug, f"{n} problem{'s' if n != 1 else ''} in the request", request.url.path, errors=errors)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (routes are per method, so Starlette's 405 names only one)."""
    from fastapi.routing import APIRoute, iter_route_contexts

    methods: set[str] = set()
    for ctx in iter_route_contexts(request.app.routes):
        route = ctx.original_route
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods.update(route.methods or ())
    return sorted(methods)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    slug = kind_for_status(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else KINDS[slug].title
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no resource at {request.url.path}"
    if exc.status_code == 405:
        methods = allowed_methods(request)
        if methods:
            headers["Allow"] = ", ".join(methods)
        detail = f"{request.method} is not supported here; use {', '.join(methods) or 'another path'}"
    return problem_response(slug, detail, request.url.path, headers=headers)


async def handle_pack_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PackError)
    errors = [{"in": "body", "path": p.path, "message": p.reason, "file": p.file} for p in exc.problems]
    n = len(errors)
    detail = f"{n} problem{'s' if n != 1 else ''} in the pack" if n else "the pack is not valid"
    return problem_response("pack-invalid", detail, request.url.path, errors=errors)


async def handle_store_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StoreError)
    return _store_error_response(exc, request.url.path)


async def handle_no_active_packs(request: Request, exc: Exception) -> Response:
    return problem_response("no-active-packs", str(exc), request.url.path)


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    ApiProblem: handle_api_problem,
    RequestValidationError: handle_request_validation,
    StarletteHTTPException: handle_http_exception,
    PackError: handle_pack_error,
    StoreError: handle_store_error,
    NoActivePacks: handle_no_active_packs,
}


def problem_openapi(description: str) -> dict[str, Any]:
    """An OpenAPI response entry whose body is a problem document."""
    return {
        "description": description,
        "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


#: Problems any authenticated route can answer with, documented on every operation.
COMMON_PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: problem_openapi("The body is not valid JSON."),
    401: problem_openapi("No credential, or it is not valid."),
    403: problem_openapi("The credential's role does not allow this."),
    404: problem_openapi("No such resource for this credential (other tenants' resources included)."),
    413: problem_openapi("The body is too large."),
    415: problem_openapi("The body's media type is not accepted."),
    422: problem_openapi("Validation failed (a bad `cursor` included); `errors` lists each problem with its JSON path."),
    429: problem_openapi("Rate limit exceeded; retry after `Retry-After` seconds."),
    503: problem_openapi("The database is unavailable or busy; retry."),
}
