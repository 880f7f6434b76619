"""Intake: raw, untrusted submission → canonical ExceptionRecord, type, fingerprint and dedupe keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from breakdesk.domain.digest import stable_digest
from breakdesk.domain.models import (
    UNCLASSIFIED,
    AgentDecision,
    Evidence,
    ExceptionRecord,
    ev,
    parse_timestamp,
)
from breakdesk.packs.compiler import CompiledDomainPack
from breakdesk.pipeline.types import IntakeResult, Submission
from breakdesk.rules.cel import make_context

#: Envelope keys an integrator may set next to (or instead of) `rawPayload`.
ENVELOPE_KEYS = frozenset(
    {"exceptionId", "tenantId", "sourceSystem", "exceptionType", "timestamp", "rawPayload", "idempotencyKey", "sourceId"}
)
MAX_ID_LENGTH = 200
#: Deeper payloads are rejected: nothing legitimate nests this deep, and JSON encoders and CEL have limits.
MAX_PAYLOAD_DEPTH = 64
_ABSENT = object()


class IntakeRejected(ValueError):
    """The submission cannot become an exception record (the caller reports it; nothing is written)."""


def _str_field(data: dict[str, Any], key: str) -> str | None:
    v = data.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise IntakeRejected(f"{key} must be a string, got {type(v).__name__}")
    text = str(v).strip()
    if not text:
        return None
    if len(text) > MAX_ID_LENGTH:
        raise IntakeRejected(f"{key} is longer than {MAX_ID_LENGTH} characters")
    return text


def _too_deep(value: Any, limit: int = MAX_PAYLOAD_DEPTH) -> bool:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _lookup(payload: dict[str, Any], dotted: str) -> Any:
    cur: Any = payload
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _to_json_safe(value: Any) -> Any:
    """CEL values come back as Python values; keep the context JSON-shaped (timestamps as ISO strings)."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_to_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json_safe(v) for k, v in value.items()}
    return value


def fingerprint_of(
    domain: CompiledDomainPack, exception_type: str, source: str, ctx: dict[str, Any], payload: dict[str, Any]
) -> tuple[str, list[str]]:
    """Fingerprint = type + the type's fingerprint fields; default: type + source + key entity ids."""
    et = domain.types.get(exception_type)
    fields: list[str] = list(et.fingerprintFields) if et else []
    parts: list[Any]
    if fields and any(ctx.get(f) is not None for f in fields):
        parts = [exception_type, *[ctx.get(f) for f in fields]]
    elif fields:  # none of the identifying fields is present: only exact repeats of the payload recur
        parts = [exception_type, source, payload]
    else:
        keys: list[str] = []
        if et:
            for ent in et.entities:
                spec = domain.spec.entities.get(ent)
                if spec:
                    keys.extend(k for k in spec.keys if k in ctx)
        if not keys:
            keys = sorted(k for k in ctx if k.endswith(("Id", "_id", "ID")))
        fields = keys
        if keys:
            parts = [exception_type, source, *[ctx.get(k) for k in keys]]
        else:  # nothing identifies the problem: the payload itself does, so only exact repeats recur
            parts = [exception_type, source, payload]
    return stable_digest(parts)[:32], fields


def intake(
    sub: Submission,
    tenant_id: str,
    exception_id: str,
    domain: CompiledDomainPack,
) -> IntakeResult:
    """Normalize one submission. Raises IntakeRejected only when no record can be formed at all."""
    data = sub.data
    if not isinstance(data, dict):
        raise IntakeRejected(f"an exception must be a JSON object, got {type(data).__name__}")
    spec = domain.spec.intake
    evidence: list[Evidence] = []

    given_tenant = _str_field(data, "tenantId")
    if given_tenant is not None and given_tenant != tenant_id:
        raise IntakeRejected(f"tenantId {given_tenant!r} does not match the tenant {tenant_id!r} it was sent to")

    if "rawPayload" in data:
        payload = data["rawPayload"]
        if not isinstance(payload, dict):
            raise IntakeRejected(f"rawPayload must be a JSON object, got {type(payload).__name__}")
    else:
        payload = {k: v for k, v in data.items() if k not in ENVELOPE_KEYS}
        if not payload:
            raise IntakeRejected("the exception carries no payload (no rawPayload and no other fields)")
    if _too_deep(payload):
        raise IntakeRejected(f"payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels")

    source = _str_field(data, "sourceSystem")
    if source is None and isinstance(payload.get("sourceSystem"), str):
        source = _str_field(payload, "sourceSystem")
    if source is None:
        source = "unknown"
        evidence.append(ev("intake", message="no sourceSystem given; recorded as 'unknown'"))

    # timestamp: envelope, then payload, else the time we received it
    raw_ts = data.get("timestamp")
    if raw_ts is None:
        raw_ts = _lookup(payload, spec.timestampField)
    ts = sub.received_at
    if raw_ts is not None:
        try:
            ts = parse_timestamp(raw_ts)
        except ValueError as exc:
            evidence.append(ev("intake", message=f"timestamp ignored ({exc}); using receive time"))
    idem = _str_field(data, "idempotencyKey")
    source_id = _str_field(data, "sourceId")
    if source_id is None and spec.sourceIdField:
        sid = _lookup(payload, spec.sourceIdField)
        if isinstance(sid, str | int) and not isinstance(sid, bool) and str(sid).strip():
            source_id = str(sid)[:MAX_ID_LENGTH]

    # exception type: explicit if known, else detection rules, else UNCLASSIFIED
    given_type = data.get("exceptionType")
    if given_type is None:
        given_type = _lookup(payload, spec.typeField)
    if given_type is not None and not isinstance(given_type, str):
        evidence.append(ev("intake", message=f"exceptionType of type {type(given_type).__name__} ignored"))
        given_type = None
    base_vars = {
        "rawPayload": payload,
        "sourceSystem": source,
        "exceptionType": given_type or "",
        "tenantId": tenant_id,
        "timestamp": ts,
    }
    ctx: Any = None
    type_source = "unclassified"
    type_conf = 0.0
    etype = UNCLASSIFIED
    if isinstance(given_type, str) and given_type in domain.types:
        etype, type_source, type_conf = given_type, "explicit", 1.0
        evidence.append(ev("classification", message=f"type {etype} given by the source", ref=etype))
    else:
        if isinstance(given_type, str) and given_type:
            evidence.append(
                ev("classification", message=f"type {given_type[:80]!r} is not in the taxonomy", ref=None)
            )
        if domain.detection:
            ctx = make_context(base_vars)
        for det in domain.detection:
            res = det.condition.evaluate(ctx)
            if res.matched:
                etype, type_source, type_conf = det.exception_type, "detected", det.confidence
                evidence.append(
                    Evidence(
                        kind="classification",
                        message=f"type {etype} detected by rule {det.id}: {det.condition.source}",
                        ref=det.id,
                    )
                )
                break
        if type_source == "unclassified":
            evidence.append(ev("classification", message="no detection rule matched: UNCLASSIFIED"))

    # normalized context from the pack's field mapping, with the decided type
    if base_vars["exceptionType"] != etype:
        base_vars["exceptionType"] = etype
        ctx = None
    normalized: dict[str, Any] = {}
    missing: list[str] = []
    for name, key, tmpl in domain.intake_plan:
        if key is not None:  # `${rawPayload.<key>}`: a plain read of JSON data, the common case
            value = payload.get(key, _ABSENT)
            if value is _ABSENT:
                missing.append(name)
            elif value is not None:
                normalized[name] = value
            continue
        try:
            if tmpl.path is not None:
                value = tmpl.lookup(base_vars)
            else:
                if ctx is None:
                    ctx = make_context(base_vars)
                value = tmpl.render(ctx)
        except ValueError:
            missing.append(name)
            continue
        if value is not None:
            normalized[name] = _to_json_safe(value)
    # Report only the absent fields that matter for this type (its fingerprint and its entities' keys):
    # intake.fields spans the whole domain, so most fields are legitimately absent for any one type.
    et = domain.types.get(etype)
    if et is not None and missing:
        relevant = set(et.fingerprintFields)
        for ent in et.entities:
            spec_ent = domain.spec.entities.get(ent)
            if spec_ent:
                relevant.update(spec_ent.keys)
        absent = [m for m in missing if m in relevant]
        if absent:
            evidence.append(ev("intake", message=f"key fields absent from the payload: {', '.join(absent)}"))

    fp, fp_fields = fingerprint_of(domain, etype, source, normalized, payload)
    record = ExceptionRecord(
        exception_id=exception_id,
        tenant_id=tenant_id,
        source_system=source,
        exception_type=etype,
        timestamp=ts,
        raw_payload=payload,
        normalized_context=normalized,
    )
    next_step = "escalate" if etype == UNCLASSIFIED else "triage"
    decision = AgentDecision(
        decision=f"{etype} ({type_source})",
        confidence=type_conf,
        evidence=(
            *evidence,
            ev("fingerprint", message=f"fingerprint over {', '.join(fp_fields) or 'payload'}", ref=fp),
        ),
        next_step=next_step,
    )
    return IntakeResult(record, decision, type_source, type_conf, fp, idem, source_id)
