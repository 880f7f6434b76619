"""The documented variables every pack condition sees (see docs/packs.md, "Evaluation context")."""

from __future__ import annotations

import re
from typing import Any

from breakdesk.domain.models import ExceptionRecord
from breakdesk.rules.cel import make_context


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
    **kw: Any,
) -> Any:
    """A CEL context holding only the variables some condition will read.

    Converting a large payload into CEL values dominates evaluation cost, so variables no candidate condition
    references are left out (a condition can only read what it references).
    """
    variables = condition_vars(record, **kw)
    if needed is not None:
        variables = {k: v for k, v in variables.items() if k in needed}
    for root, keys in (fields or {}).items():
        if keys is not None and root in variables and isinstance(variables[root], dict):
            value = variables[root]
            variables[root] = {k: value[k] for k in keys if k in value}
    return make_context(variables)
