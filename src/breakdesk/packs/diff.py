"""Structured diff of two versions of a pack: what an admin reviews before activating a new version."""

from __future__ import annotations

from typing import Any

#: Sections compared item by item, with the key that identifies an item in list-shaped sections.
DOMAIN_SECTIONS: dict[str, str | None] = {
    "exceptionTypes": None,
    "severityRules": "id",
    "tools": None,
    "playbooks": "id",
    "entities": None,
    "tests": "name",
}
TENANT_SECTIONS: dict[str, str | None] = {
    "severityOverrides": "exceptionType",
    "approvalRules": "id",
    "notifications": "group",
    "tests": "name",
}


def _keyed(section: Any, key: str | None) -> dict[str, Any]:
    if isinstance(section, dict):
        return {str(k): v for k, v in section.items()}
    if isinstance(section, list):
        out: dict[str, Any] = {}
        for i, item in enumerate(section):
            name = item.get(key) if key and isinstance(item, dict) else None
            label = str(name) if name else f"#{i}"
            if label in out:
                label = f"{label}#{i}"
            out[label] = item
        return out
    return {}


def _changed_fields(a: Any, b: Any) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
    return ["value"] if a != b else []


def diff_packs(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """{'section': {'added': [...], 'removed': [...], 'changed': {name: [fields]}}, 'other': [keys]}."""
    kind = new.get("kind") or old.get("kind")
    sections = TENANT_SECTIONS if kind == "TenantPolicy" else DOMAIN_SECTIONS
    result: dict[str, Any] = {}
    for name, key in sections.items():
        a = _keyed(old.get(name), key)
        b = _keyed(new.get(name), key)
        added = sorted(set(b) - set(a))
        removed = sorted(set(a) - set(b))
        changed = {k: _changed_fields(a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k]}
        if added or removed or changed:
            result[name] = {"added": added, "removed": removed, "changed": changed}
    other = sorted(k for k in {*old, *new} if k not in sections and old.get(k) != new.get(k))
    if other:
        result["other"] = other
    return result
