"""Request bodies are read by the handlers, after `require()` has authorized the caller.

FastAPI would parse a declared body before any dependency runs, so an unauthenticated caller would learn
how its JSON was wrong before learning it may not call the route at all. Handlers therefore read bodies
here (with a size limit enforced while reading), and the OpenAPI document still describes them through
`json_body()`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, TypeAdapter, ValidationError

from breakdesk.api.problems import ApiProblem, validation_errors

M = TypeVar("M", bound=BaseModel)

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def media_type(request: Request) -> str | None:
    raw = request.headers.get("content-type")
    if raw is None:
        return None
    return raw.split(";", 1)[0].strip().lower() or None


def is_json_type(mt: str) -> bool:
    return mt in JSON_TYPES or (mt.startswith("application/") and mt.endswith("+json"))


def require_json(request: Request) -> None:
    mt = media_type(request)
    if mt is not None and not is_json_type(mt):
        raise ApiProblem("unsupported-media-type", f"send application/json, not {mt}")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiProblem("payload-too-large", f"the body is larger than this tenant's limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiProblem("payload-too-large", f"the body is larger than this tenant's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise ApiProblem(
            "validation-error", "the body is empty", errors=[{"in": "body", "path": "$", "message": "a JSON body is required"}]
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiProblem("malformed-request", f"the body is not valid JSON: {exc}") from None


@lru_cache(maxsize=64)
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def validate(model: Any, raw: bytes) -> Any:
    """Validate JSON bytes against `model` (a model class or a TypeAdapter) in strict mode: `true` is not
    the number 1 and `"5"` is not 5, while ISO timestamps and enum names are read as JSON allows."""
    parse_json(raw)  # a readable message for broken JSON first
    adapter = model if isinstance(model, TypeAdapter) else _adapter(model)
    try:
        return adapter.validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = validation_errors(exc)
        raise ApiProblem("validation-error", f"{len(errors)} problem(s) in the body", errors=errors) from None


async def json_model(request: Request, model: type[M], limit: int) -> M:
    """Read and validate a JSON body into `model`."""
    require_json(request)
    result: M = validate(model, await read_body(request, limit))
    return result


def json_body(model: type[BaseModel] | Any, *, required: bool = True, description: str = "") -> dict[str, Any]:
    """`openapi_extra` describing a JSON request body of `model` (its schema lands in components)."""
    name = model.__name__ if isinstance(model, type) else str(model)
    return {
        "requestBody": {
            "required": required,
            "description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }


def schema_of(model: Any) -> dict[str, Any]:
    """JSON Schema of a model or type for OpenAPI components (refs point at components)."""
    return TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}", mode="validation")
