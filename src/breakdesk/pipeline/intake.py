"""Intake: raw, untrusted submission → canonical ExceptionRecord, type, fingerprint and dedupe keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from breakdesk.domain.construct import decision, ev, new_record
from breakdesk.domain.digest import stable_digest
from breakdesk.domain.models import UNCLASSIFIED, Evidence, ExceptionRecord
from breakdesk.domain.timestamps import parse_timestamp
from breakdesk.packs.compiler import CompiledDomainPack
from breakdesk.pipeline.context import fields_read
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
    """Whether anything sits deeper than `limit` (the top-level value is at depth 0). Only containers are
    walked: a scalar is too deep exactly when its container is at `limit` and not empty."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        if depth >= limit:
            if depth > limit or children:
                return True
            continue
        for v in children:
            if isinstance(v, dict | list):
                stack.append((v, depth + 1))
    return False


def _lookup(payload: dict[str, Any], dotted: str) -> Any:
    if "." not in dotted:
        return payload.get(dotted)
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


class _TypeIntake:
    """What intake derives from the pack for one exception type (memoized in `CompiledDomainPack.type_cache`)."""

    __slots__ = ("entity_keys", "fingerprint_fields", "relevant", "relevant_plan")

    def __init__(self, domain: CompiledDomainPack, exception_type: str) -> None:
        et = domain.types.get(exception_type)
        self.fingerprint_fields: tuple[str, ...] = tuple(et.fingerprintFields) if et else ()
        keys: list[str] = []  # entity keys in entity order, repeats kept (they are part of the fingerprint)
        relevant: set[str] = set(self.fingerprint_fields)
        if et is not None:
            for ent in et.entities:
                spec = domain.spec.entities.get(ent)
                if spec:
                    keys.extend(spec.keys)
                    relevant.update(spec.keys)
        self.entity_keys: tuple[str, ...] = tuple(keys)
        #: Absent fields worth reporting (fingerprint and entity keys); None for a type not in the taxonomy.
        self.relevant: frozenset[str] | None = frozenset(relevant) if et is not None else None
        #: The intake fields worth reporting when absent, with their rawPayload key, in field order.
        self.relevant_plan: tuple[tuple[str, str | None], ...] = tuple(
            (name, key) for name, key, _ in domain.intake_plan if name in relevant
        ) if et is not None else ()


def _type_intake(domain: CompiledDomainPack, exception_type: str) -> _TypeIntake:
    key = ("intake", exception_type)
    found = domain.type_cache.get(key)
    if found is None:
        found = domain.type_cache[key] = _TypeIntake(domain, exception_type)
    return found


def _plain_plan(domain: CompiledDomainPack) -> tuple[tuple[str, str], ...] | None:
    """(field, rawPayload key) of every intake field when all are plain `${rawPayload.key}` reads (the usual
    pack), else None: then normalizing is one pass of dictionary reads."""
    key = ("plain-plan",)
    if key not in domain.type_cache:
        plan = domain.intake_plan
        domain.type_cache[key] = (
            tuple((name, k) for name, k, _ in plan if k is not None) if all(k is not None for _, k, _ in plan) else None
        )
    return domain.type_cache[key]


def _detection_keys(domain: CompiledDomainPack) -> frozenset[str] | None:
    """rawPayload keys detection rules and CEL field mappings can read (None: possibly any), so the
    detection context converts only those: converting a whole payload into CEL values is the main cost."""
    key = ("detection-keys",)
    if key in domain.type_cache:
        return domain.type_cache[key]
    sources = [d.condition.source for d in domain.detection if "rawPayload" in d.condition.variables]
    for _, plain_key, tmpl in domain.intake_plan:
        if plain_key is None and tmpl.path is None:
            sources.extend(e.source for e in tmpl.expressions if "rawPayload" in e.variables)
    keys: set[str] = set()
    exact = True
    for src in sources:
        found = fields_read(src, "rawPayload")
        if found is None:
            exact = False
            break
        keys |= found
    result = frozenset(keys) if exact else None
    domain.type_cache[key] = result
    return result


def _base_context(base_vars: dict[str, Any], keys: frozenset[str] | None) -> Any:
    if keys is None:
        return make_context(base_vars)
    payload = base_vars["rawPayload"]
    return make_context({**base_vars, "rawPayload": {k: payload[k] for k in keys if k in payload}})


def fingerprint_of(
    domain: CompiledDomainPack, exception_type: str, source: str, ctx: dict[str, Any], payload: dict[str, Any]
) -> tuple[str, list[str]]:
    """Fingerprint = type + the type's fingerprint fields; default: type + source + key entity ids."""
    ti = _type_intake(domain, exception_type)
    fields: list[str] = list(ti.fingerprint_fields)
    parts: list[Any]
    if fields and any(ctx.get(f) is not None for f in fields):
        parts = [exception_type, *[ctx.get(f) for f in fields]]
    elif fields:  # none of the identifying fields is present: only exact repeats of the payload recur
        parts = [exception_type, source, payload]
    else:
        keys = [k for k in ti.entity_keys if k in ctx]
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
            ctx = _base_context(base_vars, _detection_keys(domain))
        for det in domain.detection:
            res = det.condition.evaluate(ctx)
            if res.matched:
                etype, type_source, type_conf = det.exception_type, "detected", det.confidence
                evidence.append(
                    ev("classification", f"type {etype} detected by rule {det.id}: {det.condition.source}", det.id)
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
    ti = _type_intake(domain, etype)
    plain = _plain_plan(domain)
    if plain is not None:
        get = payload.get
        for name, pkey in plain:
            value = get(pkey)
            if value is not None:
                normalized[name] = value
        # absent (not merely null) fields, in field order: only the ones worth reporting are looked for
        missing = [name for name, rkey in ti.relevant_plan if rkey not in payload]
    for name, key, tmpl in domain.intake_plan if plain is None else ():
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
                    ctx = _base_context(base_vars, _detection_keys(domain))
                value = tmpl.render(ctx)
        except ValueError:
            missing.append(name)
            continue
        if value is not None:
            normalized[name] = _to_json_safe(value)
    # Report only the absent fields that matter for this type (its fingerprint and its entities' keys):
    # intake.fields spans the whole domain, so most fields are legitimately absent for any one type.
    relevant = ti.relevant
    if relevant is not None and missing:
        absent = [m for m in missing if m in relevant]
        if absent:
            evidence.append(ev("intake", message=f"key fields absent from the payload: {', '.join(absent)}"))

    fp, fp_fields = fingerprint_of(domain, etype, source, normalized, payload)
    record: ExceptionRecord = new_record(exception_id, tenant_id, source, etype, ts, payload, normalized)
    next_step = "escalate" if etype == UNCLASSIFIED else "triage"
    evidence.append(ev("fingerprint", message=f"fingerprint over {', '.join(fp_fields) or 'payload'}", ref=fp))
    made = decision(f"{etype} ({type_source})", type_conf, tuple(evidence), next_step)
    return IntakeResult(record, made, type_source, type_conf, fp, idem, source_id)
