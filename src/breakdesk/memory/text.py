"""How a case reads to the memory: its text rendering, its key fields, and the terms lexical search uses.

Pure functions. The rendering is what people and the embedder see, so it keeps what a person would use to
recognise "the same kind of problem" — the type and its description, the source, identifying and categorical
fields, free-text messages — and leaves out what only adds noise: amounts, counts, dates and timestamps
(they differ between otherwise identical cases).

Search reads a case through two lenses, because a case's text mixes two kinds of evidence:

- *key fields* (`key_fields`): identifiers and short categorical values — the exception's own ids, and the
  counterparty, account, payer, reason code it is about. They match exactly (`field=value`), so a shared
  counterparty LEI or payer id counts as one strong fact instead of a few common words;
- *text terms* (`analyze`): the words of the messages, which say what went wrong in different words each
  time. The words of key-field values are left out: they already match as fields and would drown the
  message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from breakdesk.domain.digest import stable_digest
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
#: Longer strings read as prose, not as a categorical value.
MAX_FIELD_VALUE = 100
#: Key fields kept per case (the exception's own ids first): bounds the structured work per query.
MAX_FIELDS = 40
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_TOKEN = re.compile(r"[a-z0-9]+")
_DATELIKE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$")
_UUIDLIKE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "into", "is", "it", "its",
     "of", "on", "or", "our", "the", "their", "this", "to", "was", "were", "with", "not", "no", "than", "that",
     "these", "those", "which", "who", "will", "would", "can", "could", "should", "been", "being", "did", "does",
     "do", "so", "we", "they", "there", "them", "us", "what", "when", "while", "after", "before", "but", "if",
     "had", "up", "out", "yet", "still", "all", "any", "some", "other", "another"]
)


#: name -> `humanize(name)` and word -> `stem(word)`: field names and vocabularies repeat. Plain dicts, emptied
#: when full, rather than `lru_cache`: the compiled callers reach a dict look-up directly, while a cached
#: function is a Python call with its argument tuple (about 1 µs per exception in `describe`).
_HUMANIZED: dict[str, str] = {}
_STEMMED: dict[str, str] = {}
_CACHE_MAX = 1 << 16


def _remember(cache: dict[str, str], key: str, value: str) -> str:
    """Keep `value` for `key` in one of the caches above (emptied when full); returns `value`."""
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


def humanize(name: str) -> str:
    """`failReason` → `fail reason`, `SETTLEMENT_FAIL` → `settlement fail`."""
    out = _HUMANIZED.get(name)
    if out is None:
        out = _remember(_HUMANIZED, name, _CAMEL.sub(" ", name).replace("_", " ").replace("-", " ").lower().strip())
    return out


def stem(word: str) -> str:
    """A deliberately light stemmer (plurals and common verb endings): enough to meet `failed`/`fails`/`fail`
    and `settlements`/`settlement` without conflating unrelated words."""
    out = _STEMMED.get(word)
    if out is None:
        out = _remember(_STEMMED, word, _stem(word))
    return out


def _stem(word: str) -> str:
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


def term_counts(text: str) -> dict[str, float]:
    """Term frequencies of a free text (every line counts as prose)."""
    out: dict[str, float] = {}
    for t in terms(text):
        out[t] = out.get(t, 0.0) + 1.0
    return out


def field_line(name: str, value: str) -> str:
    """How `render` shows a field: `counterparty lei: K6Q0...`."""
    return f"{humanize(name)}: {value}"


def analyze(body: str, fields: Mapping[str, str]) -> dict[str, float]:
    """Text terms of a rendered case: the words of its messages and other prose lines. Left out: the lines
    of its key fields (they match exactly as fields; their words would only echo them) and the header
    `render` writes (type name, type description, source), the same for every case of the type and source,
    which the type and source boosts already say."""
    shown = {field_line(k, v) for k, v in fields.items()}
    out: dict[str, float] = {}
    lines = body.split("\n")
    for i in range(min(3, len(lines))):
        if lines[i].startswith("source "):
            lines = lines[i + 1:]
            break
    # the prose lines as one text: one pass of the two regular expressions instead of two per line, and
    # the same terms in the same order (neither a token nor a camelCase split spans a line break)
    for t in terms("\n".join([line for line in lines if line not in shown])):
        out[t] = out.get(t, 0.0) + 1.0
    return out


def field_token(name: str, value: str) -> str:
    """The exact-match token of a key field: case- and spacing-insensitive (`counterparty=jefferies llc`)."""
    return f"{name.lower()}={' '.join(value.lower().split())}"


def _datelike(text: str) -> bool:
    """A non-empty text that is a date or a timestamp (the pattern only runs on a leading digit)."""
    return text[0].isdigit() and _DATELIKE.match(text) is not None


def _scalar_text(value: Any) -> str | None:
    """A value worth rendering, as text; None for numbers, dates, ids that are UUIDs and empty values.
    Lists are sorted: the order a source lists `conflictFields` in says nothing about the problem."""
    if isinstance(value, str):  # the common case first (a bool is never a str)
        v = value.strip()
        if not v or _datelike(v) or (len(v) == 36 and _UUIDLIKE.match(v)):
            return None
        return v[:MAX_VALUE]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        parts = sorted(p for p in (_scalar_text(x) for x in value[:10] if not isinstance(x, dict | list)) if p)
        return ", ".join(parts) if parts else None
    return None  # numbers (amounts, counts, ages) and objects


def _sorted_keys(d: Mapping[Any, Any]) -> list[Any]:
    """A payload object's keys in the order of their text. JSON keys are strings and sort as they are,
    without a `str` call per key (`describe` 7.0 -> 6.4 µs per exception); any other keys as their text."""
    keys = list(d)
    if all(isinstance(k, str) for k in keys):
        keys.sort()
    else:
        keys.sort(key=str)
    return keys


def _type_facts(domain: CompiledDomainPack | None, exception_type: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the pack alone says about a type's cases: the names of the fields that identify its entities
    (fingerprint fields, entity keys) and the header lines of its rendering (name, description). Derived once
    per pack and type (`type_cache`): `describe` runs for every exception the pipeline triages."""
    key = ("memory.text", exception_type)
    hit = domain.type_cache.get(key) if domain is not None else None
    if hit is None:
        names: list[str] = []
        header = [humanize(exception_type)]
        et = domain.types.get(exception_type) if domain is not None else None
        if et is not None and domain is not None:
            names.extend(et.fingerprintFields)
            for ent in et.entities:
                spec = domain.spec.entities.get(ent)
                if spec:
                    names.extend(spec.keys)
            if et.description:
                header.append(et.description.strip())
        hit = (tuple(names), tuple(header))
        if domain is not None:
            domain.type_cache[key] = hit
    return hit


_MISSING = object()


def _instance_keys(type_keys: tuple[str, ...], ctx: Mapping[str, Any]) -> dict[str, None]:
    """Names of the fields that identify the exception's own entities, each once, in order: the type's
    (fingerprint fields, entity keys), then the normalized context's `...Id` fields."""
    names = dict.fromkeys(type_keys)
    for k in ctx:
        if k.endswith(("Id", "_id", "ID")):
            names[k] = None
    return names


def _field_value(ctx: Mapping[str, Any], raw: Mapping[str, Any], name: str) -> Any:
    """A field as the normalized context has it, else as the payload does."""
    value = ctx.get(name, _MISSING)
    return raw.get(name) if value is _MISSING else value


def describe(
    record: ExceptionRecord, domain: CompiledDomainPack | None, resolution: str | None = None
) -> tuple[str, dict[str, str]]:
    """The case's text (`render`) and its key fields (`key_fields`), in one pass over the payload."""
    ctx = record.normalized_context
    raw = record.raw_payload
    exception_type = record.exception_type
    type_keys, header = _type_facts(domain, exception_type)
    fields: dict[str, str] = {}
    for name in _instance_keys(type_keys, ctx):
        value = _field_value(ctx, raw, name)
        if isinstance(value, str | int) and not isinstance(value, bool):
            text = str(value).strip()
            # (a value date is part of a fingerprint, not of what went wrong)
            if text and not _datelike(text):
                fields[name] = text[:MAX_VALUE]
    for name in similarity_keys(domain, exception_type):  # declared: kept whatever their name or form
        if name not in fields:
            value = _field_value(ctx, raw, name)
            shown = str(value) if isinstance(value, int) and not isinstance(value, bool) else _scalar_text(value)
            if shown is not None:
                fields[name] = shown
    lines = list(header)
    lines.append(f"source {record.source_system}")
    facts: list[str] = []
    seen: set[str] = set()
    for key, value in ctx.items():
        shown = _scalar_text(value)
        if shown is None:
            continue
        seen.add(key)
        facts.append(field_line(key, shown))
        if (key not in fields and len(fields) < MAX_FIELDS and len(shown) <= MAX_FIELD_VALUE
                and key.lower() not in MESSAGE_KEYS):
            fields[key] = shown
    messages: list[str] = []
    extra: list[str] = []
    for key in _sorted_keys(raw):
        if key in seen:
            continue
        value = raw[key]
        if isinstance(value, dict):  # one level of nesting: `error: {code, message}` is common
            for sub in _sorted_keys(value):
                shown = _scalar_text(value[sub])
                if shown is not None:
                    name = str(sub)
                    (messages if name.lower() in MESSAGE_KEYS else extra).append(f"{humanize(name)}: {shown}")
            continue
        shown = _scalar_text(value)
        if shown is None:
            continue
        name = str(key)
        if name.lower() in MESSAGE_KEYS:
            messages.append(shown)
            continue
        extra.append(field_line(name, shown))
        if name not in fields and len(fields) < MAX_FIELDS and len(shown) <= MAX_FIELD_VALUE:
            fields[name] = shown
    lines.extend(messages)
    lines.extend(facts)
    lines.extend(extra)
    if resolution:
        lines.append(f"resolution: {resolution}")
    return "\n".join(lines)[:MAX_BODY], fields


def key_fields(record: ExceptionRecord, domain: CompiledDomainPack | None) -> dict[str, str]:
    """The case's key fields: its entity ids (fingerprint fields and entity keys first, numbers allowed, dates
    not), the fields its type declares to define the problem (`similarity.keyFields`, lists included), then
    every short scalar value of the normalized context and the payload that is not prose
    (messages), a number, or a date. Matched exactly by search; rarer shared values weigh more, up to a cap."""
    return describe(record, domain)[1]


def render(record: ExceptionRecord, domain: CompiledDomainPack | None, resolution: str | None = None) -> str:
    """The case's text: type and description, source, payload messages, normalized fields and other payload
    strings, and the resolution once there is one. Field order in the payload does not matter."""
    return describe(record, domain, resolution)[0]


def semantic_text(body: str, fields: Mapping[str, str]) -> str:
    """What an embedder reads: the rendering without the lines of key fields that are ids or codes (a
    sentence model learns nothing from `ST-3100010`, and such lines dilute the meaning of the message);
    categorical values written in words (`failReason: LATE_AFFIRMATION`) stay.

    The type header and the categorical lines stay on purpose. Measured with `bench.memory --split` (tuning
    half): embedding the messages alone, or the messages in a separate view averaged with the rest, ranked
    worse (minilm recall@5 0.896 -> 0.82-0.89). A short message with a typo embeds far from its paraphrases
    (a misspelt word splits into meaningless word pieces), and a message-only cosine lets the same words
    from another payer or specialty outrank the same problem. Dropping the type header scored the same or
    lower (0.879-0.896); writing code values in words (`late affirmation`) the same."""
    drop = {field_line(k, v) for k, v in fields.items() if any(c.isdigit() for c in v)}
    return "\n".join(line for line in body.split("\n") if line not in drop)


def resolution_summary(resolution: Mapping[str, Any] | None) -> str | None:
    """The one-line summary a case's resolution carries, if any (what hits and case texts show)."""
    return str(resolution["summary"]) if resolution and resolution.get("summary") else None


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
    body, fields = describe(record, domain, resolution_summary(resolution))
    return CaseDoc(
        exception_id=record.exception_id,
        exception_type=record.exception_type,
        source_system=record.source_system,
        status=status,
        received_at=received_at,
        body=body,
        entities=fields,
        severity=severity,
        domain=domain.spec.name if domain else None,
        fingerprint=fingerprint,
        resolution=dict(resolution) if resolution else None,
        resolved_at=resolved_at,
        rendering=type_rendering(domain, record.exception_type),
    )


def type_rendering(domain: CompiledDomainPack | None, exception_type: str) -> str:
    """A digest of what the domain pack says that a case of `exception_type` is rendered with: the domain's
    name, the type's identifying fields and header (`_type_facts`) and its `similarity.keyFields`. Stored with
    each case (`memory_cases.rendering`), so that after a new pack version the background indexer re-renders
    exactly the cases whose rendering it changes (`MemoryIndexer.rerender`), and not those of a playbook edit."""
    key = ("memory.rendering", exception_type)
    hit = domain.type_cache.get(key) if domain is not None else None
    if hit is None:
        names, header = _type_facts(domain, exception_type)
        facts = [domain.spec.name if domain is not None else None, list(names), list(header),
                 list(similarity_keys(domain, exception_type))]
        hit = stable_digest(facts)[:32]
        if domain is not None:
            domain.type_cache[key] = hit
    return hit


def pack_rendering(domain: CompiledDomainPack) -> str:
    """A digest of every type's `type_rendering` under `domain` (and of the domain's name, which a type the
    pack does not declare is rendered with): when it differs from the one a tenant's cases were last checked
    against, some of them may read differently now."""
    key = ("memory.rendering",)
    hit = domain.type_cache.get(key)
    if hit is None:
        hit = domain.type_cache[key] = stable_digest(
            [domain.spec.name, sorted((t, type_rendering(domain, t)) for t in domain.types)])[:32]
    return str(hit)


def similarity_keys(domain: CompiledDomainPack | None, exception_type: str) -> tuple[str, ...]:
    """The fields the domain pack says define "the same problem" for a type (`similarity.keyFields`, inherited
    from the nearest ancestor that declares them); () when it declares none or there is no pack."""
    if domain is None:
        return ()
    return domain.similarity_fields.get(exception_type, ())


def key_tokens(fields: Mapping[str, str], fingerprint: str | None) -> list[str]:
    """Structured tokens of a case: its key fields (`counterparty=jefferies llc`) and its fingerprint."""
    out = [field_token(k, v) for k, v in fields.items()]
    if fingerprint:
        out.append(f"fp:{fingerprint}")
    return out


