"""The documented variables every pack condition sees (see docs/packs.md, "Evaluation context")."""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from breakdesk.domain.models import ExceptionRecord
from breakdesk.rules.cel import is_plain_scalar, make_context


def condition_vars(
    record: ExceptionRecord,
    *,
    severity: str | None = None,
    confidence: float | None = None,
    recurrence: int = 0,
    steps: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "exceptionId": record.exception_id,
        "tenantId": record.tenant_id,
        "sourceSystem": record.source_system,
        "exceptionType": record.exception_type,
        "timestamp": record.timestamp,
        "rawPayload": record.raw_payload,
        "normalizedContext": record.normalized_context,
        "severity": severity,
        "confidence": confidence,
        "recurrence": recurrence,
        "steps": steps or {},
    }


_RECORD_VARS: dict[str, Callable[[ExceptionRecord], Any]] = {
    "exceptionId": attrgetter("exception_id"),
    "tenantId": attrgetter("tenant_id"),
    "sourceSystem": attrgetter("source_system"),
    "exceptionType": attrgetter("exception_type"),
    "timestamp": attrgetter("timestamp"),
    "rawPayload": attrgetter("raw_payload"),
    "normalizedContext": attrgetter("normalized_context"),
}
#: Context variables that come from `condition_vars`' keyword arguments, with their defaults there.
_OTHER_VARS = {"severity": "severity", "confidence": "confidence", "recurrence": "recurrence", "steps": "steps"}
_DEFAULTS: dict[str, Any] = {"severity": None, "confidence": None, "recurrence": 0, "steps": None}


def fields_read(source: str, root: str) -> frozenset[str] | None:
    """Top-level keys of `root` a CEL source reads as `root.key`; None when it uses `root` any other way."""
    keys: set[str] = set()
    for m in re.finditer(rf"(?<![\w.]){root}\b", source):
        follow = _FIELD.match(source, m.end())
        if follow is None:
            return None
        keys.add(follow.group(1))
    return frozenset(keys)


_FIELD = re.compile(r"\s*\.\s*([A-Za-z_]\w*)")


def condition_context(
    record: ExceptionRecord,
    needed: frozenset[str] | None = None,
    fields: dict[str, frozenset[str] | None] | None = None,
    lookups: dict[str, frozenset[str]] | None = None,
    **kw: Any,
) -> Any:
    """A CEL context holding only the variables some condition will read.

    Converting a large payload into CEL values dominates evaluation cost, so variables no candidate condition
    references are left out (a condition can only read what it references). `lookups` names map keys read
    only by `${root.key}` templates rendered with the plain data (`Template.render(ctx, data)`): such a key
    is converted only when its value is not a plain scalar (the one case the template leaves to CEL), and a
    map only lookups read is left out when none of its keys needs converting.
    """
    if needed is None:
        variables = condition_vars(record, **kw)
    else:
        variables = {}
        for name in needed:
            getter = _RECORD_VARS.get(name)
            if getter is not None:
                variables[name] = getter(record)
            elif name in _OTHER_VARS:
                value = kw.get(_OTHER_VARS[name], _DEFAULTS[name])
                variables[name] = {} if name == "steps" and not value else value
    for root, keys in (fields or {}).items():
        if keys is not None and root in variables and isinstance(variables[root], dict):
            value = variables[root]
            variables[root] = {k: value[k] for k in keys if k in value}
    for root, keys in (lookups or {}).items():
        value = record.normalized_context if root == "normalizedContext" else record.raw_payload
        extra = {k: value[k] for k in keys if k in value and not is_plain_scalar(value[k])}
        if root in variables:
            if extra and (fields or {}).get(root) is not None:
                variables[root] = {**variables[root], **extra}
        elif extra:
            variables[root] = extra
    return make_context(variables)
