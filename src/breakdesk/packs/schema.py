"""Native pack formats: the domain pack (what a domain *is*) and the tenant policy pack (what a tenant *allows*).

These pydantic models are the single source of truth: `breakdesk pack schema` publishes their JSON Schema, the
loader validates against them, and the compiler turns them into immutable compiled packs. Unknown keys are
rejected by name; keys starting with `x-` are extension points and are ignored.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema

from breakdesk.domain.models import Actionability, ResolutionStatus, Severity
from breakdesk.rules.cel import CelSyntaxError, compile_condition
from breakdesk.rules.templates import TemplateError, compile_template

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
NAME = r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$"
TYPE_NAME = r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$"


def _check_cel(v: str) -> str:
    try:
        compile_condition(v)
    except CelSyntaxError as exc:
        raise ValueError(str(exc)) from None
    return v


def _check_template(v: Any) -> Any:
    try:
        compile_template(v)
    except TemplateError as exc:
        raise ValueError(f"template error: {exc}") from None
    return v


def _check_semver(v: str) -> str:
    if not SEMVER.match(v):
        raise ValueError(f"{v!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    return v


def _check_range(v: str) -> str:
    from breakdesk.packs.versions import parse_range

    parse_range(v)  # raises ValueError with a precise reason
    return v


CelExpr = Annotated[
    str,
    Field(description="A CEL expression (https://cel.dev), compiled at load.", min_length=1, max_length=4096),
    AfterValidator(_check_cel),
]
TemplateValue = Annotated[Any, AfterValidator(_check_template)]
SemVer = Annotated[str, Field(description="Semantic version MAJOR.MINOR.PATCH"), AfterValidator(_check_semver)]
VersionRange = Annotated[
    str,
    Field(description="Version range: PEP 440 specifiers ('>=1.0.0,<2'), '^1.2.0', '~1.2.0', '1.x' or '*'."),
    AfterValidator(_check_range),
]
Name = Annotated[str, Field(pattern=NAME)]
TypeName = Annotated[str, Field(pattern=TYPE_NAME)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


class PackModel(BaseModel):
    """Strict base: unknown fields are errors, `x-*` keys are allowed extensions and dropped."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=False,
        frozen=True,
        json_schema_extra={"patternProperties": {"^x-": {}}},
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_extensions(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(isinstance(k, str) and (k.startswith("x-") or k == "$schema") for k in data):
            return {k: v for k, v in data.items() if not (isinstance(k, str) and (k.startswith("x-") or k == "$schema"))}
        return data


# ----------------------------------------------------------------------------------------------- domain pack


class AttributeType(StrEnum):
    string = "string"
    number = "number"
    integer = "integer"
    boolean = "boolean"
    array = "array"
    object = "object"
    date = "date"
    datetime = "datetime"


class Attribute(PackModel):
    type: AttributeType = AttributeType.string
    required: bool = False
    description: str = ""


class Entity(PackModel):
    description: str = ""
    keys: list[str] = Field(default_factory=list, description="Attributes that identify one instance.")
    attributes: dict[str, Attribute] = Field(default_factory=dict)
    relations: list[str] = Field(default_factory=list, description="Names of related entities.")


class DetectionRule(PackModel):
    """Classifies a payload that carries no (known) exception type."""

    id: Name | None = None
    condition: CelExpr
    confidence: Ratio = Field(0.8, description="Confidence of a classification made by this rule.")


class SimilaritySpec(PackModel):
    """What makes two exceptions of a type "the same problem" for the similar-case memory. Lexical search
    cannot know it: two settlement fails with the same message but another counterparty or depository are
    different problems, while the same reason, counterparty and depository are the same one whatever the
    wording. Only the domain knows which attributes those are, so the pack says it."""

    keyFields: list[str] = Field(
        min_length=1,
        max_length=16,
        description="normalizedContext fields whose values define the problem (a reason, a counterparty, a "
        "payer...). Cases matching all of them rank far above cases sharing incidental attributes. Name "
        "categories, not per-exception ids (those are fingerprintFields).",
    )


class ExceptionType(PackModel):
    description: str = ""
    parent: TypeName | None = Field(None, description="Parent type in the taxonomy.")
    defaultSeverity: Severity | None = None
    detection: list[DetectionRule] = Field(default_factory=list)
    fingerprintFields: list[str] = Field(
        default_factory=list,
        description="normalizedContext fields that identify 'the same problem' (default: key entity ids).",
    )
    rootCauseHint: str = Field("", description="Shown in triage: the usual cause of this type.")
    similarity: SimilaritySpec | None = Field(
        None,
        description="Which fields define 'the same problem' for similar past cases (default: the nearest "
        "ancestor's; none: every short field counts alike).",
    )
    entities: list[str] = Field(default_factory=list, description="Entities this exception type concerns.")
    tags: list[str] = Field(default_factory=list)


class SeverityRule(PackModel):
    id: Name | None = Field(None, description="Stable id used in evidence; defaults to the rule's position.")
    condition: CelExpr
    severity: Severity
    description: str = ""


class HttpMethod(StrEnum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"


class Effect(StrEnum):
    read = "read"
    write = "write"


class SecretRef(PackModel):
    """A secret injected into a request header. Only the *reference* is stored in packs, never the value."""

    header: str = Field("Authorization", pattern=r"^[A-Za-z0-9\-]+$")
    ref: str = Field(
        description="'env:NAME' or 'file:NAME' (a key of the secrets file).",
        pattern=r"^(env|file):[A-Za-z_][A-Za-z0-9_.\-]*$",
    )
    format: str = Field("{value}", description="Header value format; '{value}' is replaced by the secret.")


class Tool(PackModel):
    description: str = ""
    effect: Effect = Effect.read
    method: HttpMethod = HttpMethod.POST
    url: str | None = Field(
        None,
        description="URL template; '{name}' placeholders are filled from arguments (URL-encoded).",
        max_length=2048,
    )
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="JSON Schema of the arguments object.",
    )
    output: dict[str, Any] | None = Field(None, description="JSON Schema of the response body, when declared.")
    secret: SecretRef | None = None
    timeoutSeconds: float = Field(10.0, gt=0, le=300)
    retries: int = Field(0, ge=0, le=10)
    idempotent: bool = False
    compensation: Name | None = Field(None, description="Tool that undoes this one (used by onFailure: compensate).")
    category: str | None = None


class OnFailure(StrEnum):
    escalate = "escalate"
    retry = "retry"
    compensate = "compensate"
    continue_ = "continue"


class PlaybookStep(PackModel):
    id: Name | None = Field(None, description="Step id; later steps read its output as steps.<id>.output.")
    description: str = ""
    tool: Name | None = Field(None, description="Tool to call. A step without a tool is a manual instruction.")
    args: dict[str, TemplateValue] = Field(default_factory=dict, description="Arguments; strings may hold ${CEL}.")
    when: CelExpr | None = None
    onFailure: OnFailure = OnFailure.escalate
    compensate: Name | None = Field(None, description="Compensation tool for onFailure: compensate.")
    compensateArgs: dict[str, TemplateValue] = Field(default_factory=dict)
    requiresApproval: bool = Field(False, description="Always pause for a human before this step.")


class PlaybookMatch(PackModel):
    types: list[TypeName] = Field(min_length=1)
    condition: CelExpr | None = None
    priority: int = Field(0, description="Higher wins when several playbooks match.")


class Playbook(PackModel):
    id: Name
    description: str = ""
    match: PlaybookMatch
    steps: list[PlaybookStep] = Field(min_length=1)
    successCriteria: list[str] = Field(default_factory=list)


class Guardrails(PackModel):
    noAutoActionIfSeverityIn: list[Severity] = Field(default_factory=list)
    escalateIfConfidenceBelow: Ratio | None = None
    maxAutoRetries: int | None = Field(None, ge=0, le=20)
    blockedTools: list[Name] = Field(default_factory=list)
    requireApprovalForTypes: list[TypeName] = Field(default_factory=list)


class IntakeSpec(PackModel):
    """How raw payloads become normalized context."""

    typeField: str = Field("exceptionType", description="Payload key carrying the exception type, if any.")
    timestampField: str = Field("timestamp", description="Payload key carrying the event time.")
    sourceIdField: str | None = Field(None, description="Payload key carrying the source's own id (dedupe key).")
    fields: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], TemplateValue] = Field(
        default_factory=dict,
        description="normalizedContext field → template over rawPayload, e.g. '${rawPayload.order.id}'.",
    )
    recurrenceThreshold: int = Field(3, ge=2, description="Occurrences of one fingerprint that make it 'recurring'.")


class PackTestExpect(PackModel):
    exceptionType: TypeName | None = None
    severity: Severity | None = None
    playbook: Name | None = Field(None, description="Expected playbook id; 'none' expects no playbook.")
    approvalRequired: bool | None = None
    actionability: Actionability | None = None
    status: ResolutionStatus | None = None


class PackTestCase(PackModel):
    name: str = Field(min_length=1)
    description: str = ""
    tenant: str | None = Field(None, description="Only run with this tenant policy (tenantId).")
    input: dict[str, Any] = Field(description="A raw exception: exceptionType?, sourceSystem?, rawPayload, ...")
    expect: PackTestExpect


class DomainPack(PackModel):
    kind: Literal["DomainPack"] = "DomainPack"
    name: Name
    version: SemVer
    description: str = ""
    defaultSeverity: Severity = Severity.MEDIUM
    ontology: dict[str, str] = Field(default_factory=dict, description="Glossary: term → definition.")
    entities: dict[Name, Entity] = Field(default_factory=dict)
    intake: IntakeSpec = Field(default_factory=IntakeSpec)
    exceptionTypes: dict[TypeName, ExceptionType] = Field(min_length=1)
    severityRules: list[SeverityRule] = Field(default_factory=list)
    tools: dict[Name, Tool] = Field(default_factory=dict)
    playbooks: list[Playbook] = Field(default_factory=list)
    guardrails: Guardrails = Field(default_factory=Guardrails)
    tests: list[PackTestCase] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------- tenant policy


class DomainBinding(PackModel):
    name: Name
    versionRange: VersionRange = "*"


class OverrideMode(StrEnum):
    replace_ = "replace"
    atLeast = "atLeast"
    atMost = "atMost"


class SeverityOverride(PackModel):
    exceptionType: TypeName
    severity: Severity
    mode: OverrideMode = Field(
        OverrideMode.replace_,
        description="replace the domain's severity, or only raise it to (atLeast) / lower it to (atMost) this one.",
    )
    condition: CelExpr | None = None
    reason: str = ""


class ToolOverride(PackModel):
    url: str | None = Field(None, max_length=2048)
    timeoutSeconds: float | None = Field(None, gt=0, le=300)
    retries: int | None = Field(None, ge=0, le=10)
    secret: SecretRef | None = None


class ToolPolicy(PackModel):
    allow: list[Name] = Field(default_factory=list, description="Tools this tenant may run. Nothing else runs.")
    overrides: dict[Name, ToolOverride] = Field(default_factory=dict)
    allowedHosts: list[str] = Field(default_factory=list, description="Hosts tools may call (exact or *.suffix).")
    allowPrivateNetworks: bool = Field(False, description="Allow loopback/private/link-local tool addresses.")


class ApprovalRule(PackModel):
    """Require a human approval when every given criterion matches (criteria left empty match everything)."""

    id: Name | None = None
    severities: list[Severity] = Field(default_factory=list)
    exceptionTypes: list[TypeName] = Field(default_factory=list)
    toolEffects: list[Effect] = Field(default_factory=list)
    confidenceBelow: Ratio | None = None
    condition: CelExpr | None = None
    requireApproval: bool = True
    approverRoles: list[str] = Field(default_factory=lambda: ["approver"])
    approvalsNeeded: int = Field(1, ge=1, le=10)


class ApprovalSettings(PackModel):
    """How this tenant's approval requests behave once created (which ones are created is `approvalRules`)."""

    ttlMinutes: int | None = Field(
        None,
        ge=1,
        le=525_600,
        description="Minutes a request waits for a decision before it expires and escalates the exception "
        "(1 minute to 1 year). Unset: $BREAKDESK_APPROVAL_TTL_MINUTES, else 24 hours.",
    )


class TenantGuardrails(PackModel):
    noAutoActionIfSeverityIn: list[Severity] | None = Field(
        None, description="Severities that never auto-execute (added to the domain pack's list; guardrails only tighten)."
    )
    allowAutoActionOnCritical: bool = Field(False, description="CRITICAL never auto-executes unless this is true.")
    escalateIfConfidenceBelow: Ratio | None = None
    maxAutoRetries: int | None = Field(None, ge=0, le=20)
    blockedTools: list[Name] = Field(default_factory=list)
    blockedPlaybooks: list[Name] = Field(default_factory=list)
    requireApprovalForTypes: list[TypeName] = Field(default_factory=list)


class NotificationRoute(PackModel):
    exceptionTypes: list[TypeName] = Field(default_factory=list)
    severities: list[Severity] = Field(default_factory=list)
    condition: CelExpr | None = None
    group: str = Field(min_length=1)
    channels: list[str] = Field(default_factory=list)
    recipients: list[str] = Field(default_factory=list)


class Retention(PackModel):
    days: int = Field(365, ge=1, le=36500)


class EmbeddingSettings(PackModel):
    """Which embedder the similar-case memory uses for this tenant (`none`: lexical + structured only)."""

    provider: Literal["none", "minilm", "openai"] = "none"
    baseUrl: str | None = Field(None, max_length=2048, description="openai: the API base, e.g. http://host:8080/v1")
    model: str | None = Field(None, max_length=200, description="openai: the embedding model name.")
    apiKeyRef: str | None = Field(None, pattern=r"^env:[A-Za-z_][A-Za-z0-9_]*$", description="openai: env:NAME")
    batchSize: int = Field(64, ge=1, le=2048, description="Cases embedded per request / model call.")
    timeoutSeconds: float = Field(
        30.0, gt=0, le=300,
        description="openai: how long to wait for the endpoint per request, retries of a busy endpoint "
                    "(408, 429, 5xx, after its Retry-After) included. A similar-cases query whose exception "
                    "has no vector yet waits at most this long, then answers without vectors.",
    )

    @model_validator(mode="after")
    def _openai_needs_endpoint(self) -> EmbeddingSettings:
        if self.provider == "openai" and not (self.baseUrl and self.model):
            raise ValueError("provider openai needs baseUrl and model")
        return self


class TenantPolicy(PackModel):
    kind: Literal["TenantPolicy"] = "TenantPolicy"
    tenantId: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")]
    name: str = ""
    version: SemVer
    domain: DomainBinding
    severityOverrides: list[SeverityOverride] = Field(default_factory=list)
    approvedPlaybooks: list[Name] = Field(default_factory=list)
    tools: ToolPolicy = Field(default_factory=ToolPolicy)
    approvalRules: list[ApprovalRule] = Field(default_factory=list)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    guardrails: TenantGuardrails = Field(default_factory=TenantGuardrails)
    notifications: list[NotificationRoute] = Field(default_factory=list)
    retention: Retention = Field(default_factory=Retention)
    dryRun: bool = Field(False, description="Record plans without calling tools.")
    similarCases: int = Field(5, ge=0, le=50, description="How many similar past cases triage shows.")
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    tests: list[PackTestCase] = Field(default_factory=list)


def pack_json_schema() -> dict[str, Any]:
    """One JSON Schema accepting either pack kind (discriminated by `kind`)."""

    class _Gen(GenerateJsonSchema):
        pass

    domain = DomainPack.model_json_schema(schema_generator=_Gen)
    tenant = TenantPolicy.model_json_schema(schema_generator=_Gen)
    defs = {**domain.pop("$defs", {}), **tenant.pop("$defs", {})}
    defs["DomainPack"] = domain
    defs["TenantPolicy"] = tenant
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://breakdesk.dev/schema/pack.json",
        "title": "Breakdesk pack (DomainPack or TenantPolicy)",
        "oneOf": [{"$ref": "#/$defs/DomainPack"}, {"$ref": "#/$defs/TenantPolicy"}],
        "$defs": defs,
    }
