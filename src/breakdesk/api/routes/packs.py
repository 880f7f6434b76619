"""Domain packs and tenant policies: publish (JSON or YAML body), validate only, list, read, activate, roll back,
diff and test — all through `Catalog`, so the API and the CLI refuse exactly the same things."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from breakdesk.api import convert
from breakdesk.api.auth import Principal
from breakdesk.api.body import YAML_TYPES, is_json_type, media_type, read_body
from breakdesk.api.deps import context, not_found, require
from breakdesk.api.problems import COMMON_PROBLEM_RESPONSES, ApiProblem, problem_openapi
from breakdesk.api.schemas import (
    ActivationList,
    ActivationOut,
    ActivePacks,
    PackCaseOut,
    PackContent,
    PackDiff,
    PackList,
    PackTestReport,
    PackValidation,
    PublishResult,
)
from breakdesk.api.whatif import pack_tests
from breakdesk.catalog import pack_identity
from breakdesk.packs.loader import MAX_PACK_BYTES, model_from_data, parse_text
from breakdesk.packs.problems import PackError, PackProblem

router = APIRouter(
    prefix="/v1/tenants/{tenantId}/packs",
    tags=["packs"],
    responses=COMMON_PROBLEM_RESPONSES,
)

TenantPath = Annotated[str, Path(alias="tenantId", min_length=1, max_length=100)]
Kind = Annotated[Literal["domain", "tenant"], Path(description="domain pack or tenant policy")]
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
VersionPath = Annotated[str, Path(min_length=1, max_length=100)]
SOURCE = "body"

PACK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A domain pack or tenant policy as JSON or YAML (see `breakdesk pack schema`).",
        "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": True}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


async def _pack_body(request: Request) -> Any:
    """Parse a JSON or YAML pack body (by Content-Type, sniffed when absent); PackError on bad input."""
    mt = media_type(request)
    fmt: str | None
    if mt is None:
        fmt = None
    elif is_json_type(mt):
        fmt = "json"
    elif mt in YAML_TYPES:
        fmt = "yaml"
    else:
        raise ApiProblem("unsupported-media-type", f"send application/json or application/yaml, not {mt}")
    raw = await read_body(request, MAX_PACK_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackError([PackProblem(SOURCE, "$", f"the body is not UTF-8 text (byte {exc.start})")]) from None
    return parse_text(text, SOURCE, fmt)


async def _active_refs(request: Request, tenant_id: str) -> dict[str, tuple[str, str] | None]:
    ctx = context(request)
    out: dict[str, tuple[str, str] | None] = {}
    for kind in ("domain", "tenant"):
        pv = await ctx.store.active_pack(tenant_id, kind)
        out[kind] = (pv.name, pv.version) if pv is not None else None
    return out


@router.post(
    "",
    response_model=PublishResult,
    status_code=201,
    summary="Validate and publish a pack version (201 new, 200 identical content already published)",
    responses={200: {"model": PublishResult, "description": "This exact content was already published."},
               409: problem_openapi("This version is published with other content (versions are immutable)."),
               422: problem_openapi("`pack-invalid`: the pack does not validate, or with `activate` the tenant's packs "
                                    "would not compile together; nothing is published.")},
    openapi_extra=PACK_BODY,
)
async def publish(
    request: Request,
    response: Response,
    tenant_id: TenantPath,
    principal: Annotated[Principal, Depends(require("packs.manage"))],
    activate: Annotated[bool, Query(description="Activate right after publishing (refused before publishing).")] = False,
) -> PublishResult:
    ctx = context(request)
    data = await _pack_body(request)
    kind, name, version = pack_identity(model_from_data(data, SOURCE))
    existing = await ctx.store.get_pack(tenant_id, kind, name, version)
    pub = await ctx.catalog.publish(tenant_id, data, SOURCE, principal.actor, activate=activate)
    created = existing is None
    if not created:
        response.status_code = 200
    active = await _active_refs(request, tenant_id)
    pv = pub.version
    return PublishResult(
        pack=convert.pack_version(pv, active.get(pv.kind) == (pv.name, pv.version)),
        created=created,
        activated=convert.activation(pub.activated) if pub.activated is not None else None,
    )


@router.post(
    "/validate",
    response_model=PackValidation,
    summary="Validate a pack without publishing",
    description=(
        "200 when the pack is valid for this tenant (tenant policies are compiled against their domain pack); "
        "otherwise the same 422 `pack-invalid` problem as publishing, listing every problem with its JSON path."
    ),
    openapi_extra=PACK_BODY,
)
async def validate_pack(
    request: Request, tenant_id: TenantPath, principal: Annotated[Principal, Depends(require("packs.manage"))]
) -> PackValidation:
    ctx = context(request)
    pack = await ctx.catalog.validate(tenant_id, await _pack_body(request), SOURCE)
    kind, name, version = pack_identity(pack)
    return PackValidation(kind=kind, name=name, version=version)


@router.get("", response_model=PackList, summary="Published versions (with the active ones marked)")
async def list_packs(
    request: Request,
    tenant_id: TenantPath,
    principal: Annotated[Principal, Depends(require("packs.manage"))],
    kind: Annotated[Literal["domain", "tenant"] | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
) -> PackList:
    ctx = context(request)
    versions = await ctx.store.list_pack_versions(tenant_id, kind, name)
    active = await _active_refs(request, tenant_id)
    return PackList(
        items=[convert.pack_version(v, active.get(v.kind) == (v.name, v.version)) for v in versions],
        active=ActivePacks(
            domain="@".join(active["domain"]) if active["domain"] else None,
            tenant="@".join(active["tenant"]) if active["tenant"] else None,
        ),
    )


@router.get("/activations", response_model=ActivationList, summary="Activation and rollback history, oldest first")
async def activations(
    request: Request,
    tenant_id: TenantPath,
    principal: Annotated[Principal, Depends(require("packs.manage"))],
    kind: Annotated[Literal["domain", "tenant"] | None, Query()] = None,
) -> ActivationList:
    ctx = context(request)
    return ActivationList(items=[convert.activation(a) for a in await ctx.store.activation_history(tenant_id, kind)])


@router.get("/{kind}/{name}/versions/{version}", response_model=PackContent, summary="One published version")
async def get_version(
    request: Request,
    tenant_id: TenantPath,
    kind: Kind,
    name: NamePath,
    version: VersionPath,
    principal: Annotated[Principal, Depends(require("packs.manage"))],
) -> PackContent:
    ctx = context(request)
    pv = await ctx.store.get_pack(tenant_id, kind, name, version)
    if pv is None:
        raise not_found("pack version")
    active = await _active_refs(request, tenant_id)
    return PackContent(pack=convert.pack_version(pv, active.get(kind) == (name, version)), content=pv.content)


@router.post(
    "/{kind}/{name}/versions/{version}/activate",
    response_model=ActivationOut,
    summary="Activate a published version (refused if the tenant's packs would not compile together)",
    responses={422: problem_openapi("`pack-invalid`: the tenant's packs would not compile together, or a tenant "
                                    "policy is activated before any domain pack.")},
)
async def activate(
    request: Request,
    tenant_id: TenantPath,
    kind: Kind,
    name: NamePath,
    version: VersionPath,
    principal: Annotated[Principal, Depends(require("packs.manage"))],
) -> ActivationOut:
    ctx = context(request)
    return convert.activation(await ctx.catalog.activate(tenant_id, kind, name, version, principal.actor))


@router.post(
    "/{kind}/rollback",
    response_model=ActivationOut,
    summary="Re-activate the previously active version",
    responses={404: problem_openapi("No earlier activation to go back to."),
               422: problem_openapi("`pack-invalid`: the tenant's packs would not compile together.")},
)
async def rollback(
    request: Request, tenant_id: TenantPath, kind: Kind, principal: Annotated[Principal, Depends(require("packs.manage"))]
) -> ActivationOut:
    ctx = context(request)
    return convert.activation(await ctx.catalog.rollback(tenant_id, kind, principal.actor))


@router.get("/{kind}/{name}/diff", response_model=PackDiff, summary="Structured diff of two published versions")
async def diff(
    request: Request,
    tenant_id: TenantPath,
    kind: Kind,
    name: NamePath,
    principal: Annotated[Principal, Depends(require("packs.manage"))],
    from_version: Annotated[str, Query(alias="from", min_length=1, max_length=100)],
    to_version: Annotated[str, Query(alias="to", min_length=1, max_length=100)],
) -> PackDiff:
    ctx = context(request)
    changes = await ctx.catalog.diff(tenant_id, kind, name, from_version, to_version)
    return PackDiff(kind=kind, name=name, from_version=from_version, to_version=to_version, changes=changes)


@router.post(
    "/{kind}/{name}/versions/{version}/test",
    response_model=PackTestReport,
    summary="Run a published version's test suites through the real pipeline stages",
)
async def test_pack(
    request: Request,
    tenant_id: TenantPath,
    kind: Kind,
    name: NamePath,
    version: VersionPath,
    principal: Annotated[Principal, Depends(require("packs.manage"))],
) -> PackTestReport:
    ctx = context(request)
    results = await pack_tests(ctx.store, ctx.catalog, tenant_id, kind, name, version)
    failed = sum(1 for r in results if not r.passed)
    return PackTestReport(
        passed=len(results) - failed,
        failed=failed,
        results=[
            PackCaseOut(suite=r.suite, name=r.name, passed=r.passed, failures=list(r.failures), actual=dict(r.actual))
            for r in results
        ],
    )
