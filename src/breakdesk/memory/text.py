"""How a case reads to the memory: its text rendering, its key entity ids, and the terms lexical search uses.

Pure functions. The rendering is what both indexes see (lexical terms and the embedder's input), so it keeps
what a person would use to recognise "the same kind of problem" — the type and its description, the source,
identifying and categorical fields, free-text messages — and leaves out what only adds noise: amounts, counts,
dates and timestamps (they differ between otherwise identical cases).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from breakdesk.domain.models import ExceptionRecord
from breakdesk.packs.compiler import CompiledDomainPack
from breakdesk.store.cases import CaseDoc

#: Payload keys whose string values are prose worth indexing in full (messages, notes, reasons).
MESSAGE_KEYS = frozenset(
    {"message", "msg", "description", "note", "notes", "comment", "comments", "reason", "error", "errormessage",
     "detail", "details", "text", "summary", "title", "remarks", "narrative", "problem"}
)
MAX_BODY = 2000
MAX_VALUE = 240
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_TOKEN = re.compile(r"[a-z0-9]+")
_DATELIKE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$")
_UUIDLIKE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "into", "is", "it", "its", "of", "on", "or", "our", "the", "their", "this", "to", "was", "were", "with", "not", "no", "than", "that", "these", "those", "which", "who", "will", "would", "can", "could", "should", "been", "being", "did", "does", "do"]
)


def humanize(name: str) -> str:
    """`failReason` → `fail reason`, `SETTLEMENT_FAIL` → `settlement fail`."""
    return _CAMEL.sub(" ", name).replace("_", " ").replace("-", " ").lower().strip()


def stem(word: str) -> str:
    """A deliberately light stemmer (plurals and common verb endings): enough to meet `failed`/`fails`/`fail`
    and `settlements`/`settlement` without conflating unrelated words."""
    if len(word) <= 4 or word.isdigit():
        return word
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""), ("ly", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            if suffix == "s" and word.endswith("ss"):
                return word
            return word[: -len(suffix)] + keep
    return word


def terms(text: str) -> list[str]:
    """Lexical terms of a text: camelCase and snake_case split, lower-cased, stop words dropped, stemmed."""
    out: list[str] = []
    for tok in _TOKEN.findall(_CAMEL.sub(" ", text).lower()):
        if tok in STOPWORDS or (len(tok) < 2 and not tok.isdigit()):
            continue
        out.append(stem(tok))
    return out


def term_counts(text: str) -> Counter[str]:
    return Counter(terms(text))


def _scalar_text(value: Any) -> str | None:
    """A value worth rendering, as text; None for numbers, dates, ids that are UUIDs and empty values."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        v = value.strip()
        if not v or _DATELIKE.match(v) or _UUIDLIKE.match(v):
            return None
        return v[:MAX_VALUE]
    if isinstance(value, list):
        parts = [p for p in (_scalar_text(x) for x in value[:10] if not isinstance(x, dict | list)) if p]
        return ", ".join(parts) if parts else None
    return None  # numbers (amounts, counts, ages) and objects


def entity_keys(record: ExceptionRecord, domain: CompiledDomainPack | None) -> dict[str, str]:
    """The key entity ids of a record: its type's fingerprint fields and entity keys, else every `...Id`."""
    ctx = record.normalized_context
    names: list[str] = []
    et = domain.types.get(record.exception_type) if domain else None
    if et is not None and domain is not None:
        names.extend(et.fingerprintFields)
        for ent in et.entities:
            spec = domain.spec.entities.get(ent)
            if spec:
                names.extend(spec.keys)
    names.extend(k for k in ctx if k.endswith(("Id", "_id", "ID")))
    out: dict[str, str] = {}
    for name in dict.fromkeys(names):
        value = ctx.get(name, record.raw_payload.get(name))
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            out[name] = str(value).strip()[:MAX_VALUE]
    return out


def render(record: ExceptionRecord, domain: CompiledDomainPack | None, resolution: str | None = None) -> str:
    """The case's text: type and description, source, normalized fields, payload messages and strings,
    and the resolution once there is one. Field order in the payload does not matter (pack order first)."""
    etype = record.exception_type
    lines: list[str] = [humanize(etype)]
    et = domain.types.get(etype) if domain else None
    if et is not None and et.description:
        lines.append(et.description.strip())
    lines.append(f"source {record.source_system}")
    seen: set[str] = set()
    facts: list[str] = []
    for key, value in record.normalized_context.items():
        shown = _scalar_text(value)
        if shown is not None:
            facts.append(f"{humanize(key)}: {shown}")
            seen.add(key)
    messages: list[str] = []
    extra: list[str] = []
    for key in sorted(record.raw_payload, key=str):
        if key in seen:
            continue
        value = record.raw_payload[key]
        if isinstance(value, dict):  # one level of nesting: `error: {code, message}` is common
            for sub in sorted(value, key=str):
                shown = _scalar_text(value[sub])
                if shown is not None:
                    (messages if sub.lower() in MESSAGE_KEYS else extra).append(f"{humanize(sub)}: {shown}")
            continue
        shown = _scalar_text(value)
        if shown is None:
            continue
        if str(key).lower() in MESSAGE_KEYS:
            messages.append(shown)
        else:
            extra.append(f"{humanize(str(key))}: {shown}")
    lines.extend(messages)
    lines.extend(facts)
    lines.extend(extra)
    if resolution:
        lines.append(f"resolution: {resolution}")
    body = "\n".join(lines)
    return body[:MAX_BODY]


def case_doc(
    record: ExceptionRecord,
    domain: CompiledDomainPack | None,
    *,
    status: str,
    received_at: datetime,
    severity: str | None,
    fingerprint: str | None,
    resolution: Mapping[str, Any] | None = None,
    resolved_at: datetime | None = None,
) -> CaseDoc:
    """The memory row of one exception."""
    summary = str(resolution.get("summary")) if resolution and resolution.get("summary") else None
    return CaseDoc(
        exception_id=record.exception_id,
        exception_type=record.exception_type,
        source_system=record.source_system,
        status=status,
        received_at=received_at,
        body=render(record, domain, summary),
        entities=entity_keys(record, domain),
        severity=severity,
        domain=domain.spec.name if domain else None,
        fingerprint=fingerprint,
        resolution=dict(resolution) if resolution else None,
        resolved_at=resolved_at,
    )


def key_tokens(entities: Mapping[str, str], fingerprint: str | None) -> list[str]:
    """Structured tokens: entity ids (`orderId=ORD-1`) and the fingerprint; matched exactly."""
    out = [f"{k}={v}" for k, v in entities.items()]
    if fingerprint:
        out.append(f"fp:{fingerprint}")
    return out


def join_nonempty(parts: Iterable[str | None], sep: str = "; ") -> str:
    return sep.join(p for p in parts if p)
