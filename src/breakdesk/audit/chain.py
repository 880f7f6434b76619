"""Per-tenant audit hash chain: canonical serialisation, hashing and verification (pure, no I/O).

Each entry's hash covers the previous entry's hash and the entry's canonical JSON, so editing, deleting,
reordering or moving an entry to another tenant breaks the chain at exactly that entry. The hash is
`sha256(prev_hash_ascii_hex || canonical_json(entry))`, which an outside auditor can recompute with
nothing but `sha256sum`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS_HASH = "0" * 64

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def utc_iso(value: datetime) -> str:
    """Fixed-width UTC ISO-8601 with microseconds and `Z`: one spelling per instant, so hashes are stable."""
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic models, serialised the way they travel on the wire
        return dump(mode="json", by_alias=True)
    raise TypeError(f"cannot serialise {type(value).__name__} to canonical JSON")


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, compact, UTC timestamps. Also used for every JSON column."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def content_hash(value: Any) -> str:
    """sha256 hex of the canonical JSON of `value` (used for pack content identity)."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One link of a tenant's audit chain, as stored."""

    tenant_id: str
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: Mapping[str, Any]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """The hashed content: everything except the hashes themselves."""
        return entry_body(
            self.tenant_id, self.seq, self.at, self.actor, self.action, self.subject, self.detail
        )


def entry_body(
    tenant_id: str, seq: int, at: datetime, actor: str, action: str, subject: str, detail: Mapping[str, Any]
) -> dict[str, Any]:
    """The dict whose canonical JSON is hashed; tenant and seq are inside so entries cannot be moved."""
    return {
        "tenant_id": tenant_id,
        "seq": seq,
        "at": utc_iso(at),
        "actor": actor,
        "action": action,
        "subject": subject,
        "detail": detail,
    }


def entry_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    """sha256(prev_hash as ASCII hex || canonical_json(entry)), hex encoded."""
    h = hashlib.sha256(prev_hash.encode("ascii"))
    h.update(canonical_json(entry))
    return h.hexdigest()


def body_json(
    tenant_id: str, seq: int, at: datetime, actor: str, action: str, subject: str, detail_json: bytes
) -> bytes:
    """`canonical_json(entry_body(...))` assembled around an already-encoded detail.

    The detail is by far the largest part of an entry and is stored as exactly these bytes, so encoding it
    once for both the hash and the column halves the audit chain's JSON work. The keys of the body sort as
    action, actor, at, detail, seq, subject, tenant_id, and orjson's output is compact, so splicing the
    encoded detail between the two encoded halves gives the same bytes as encoding the whole body."""
    head = orjson.dumps({"action": action, "actor": actor, "at": utc_iso(at)}, option=_OPTIONS)
    tail = orjson.dumps({"seq": seq, "subject": subject, "tenant_id": tenant_id}, option=_OPTIONS)
    return b"".join((head[:-1], b',"detail":', detail_json, b",", tail[1:]))


def link_json(
    tenant_id: str,
    head_seq: int,
    head_hash: str,
    items: Iterable[tuple[datetime, str, str, str, Mapping[str, Any]]],
) -> list[tuple[AuditEntry, str]]:
    """`link`, also returning each entry's detail as the canonical JSON text that was hashed (what the
    store writes to the `detail` column, so it is not encoded a second time)."""
    out: list[tuple[AuditEntry, str]] = []
    seq, prev = head_seq, head_hash
    for at, actor, action, subject, detail in items:
        seq += 1
        detail_json = canonical_json(detail)
        h = hashlib.sha256(prev.encode("ascii"))
        h.update(body_json(tenant_id, seq, at, actor, action, subject, detail_json))
        digest = h.hexdigest()
        out.append((AuditEntry(tenant_id, seq, at, actor, action, subject, detail, prev, digest), detail_json.decode()))
        prev = digest
    return out


def link(
    tenant_id: str,
    head_seq: int,
    head_hash: str,
    items: Iterable[tuple[datetime, str, str, str, Mapping[str, Any]]],
) -> list[AuditEntry]:
    """Chain new `(at, actor, action, subject, detail)` items onto a head; returns the entries to store."""
    return [entry for entry, _ in link_json(tenant_id, head_seq, head_hash, items)]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None


@dataclass(slots=True)
class ChainVerifier:
    """Incremental verifier, so a store can stream millions of entries through it in bounded memory.

    Feed entries in seq order; `feed` returns False once the chain is broken (further input is ignored).
    """

    tenant_id: str | None = None
    checked: int = 0
    expected_seq: int = 1
    prev_hash: str = GENESIS_HASH
    broken: VerifyResult | None = field(default=None)

    def feed(self, entry: AuditEntry) -> bool:
        if self.broken is not None:
            return False
        if self.tenant_id is None:
            self.tenant_id = entry.tenant_id
        if entry.seq != self.expected_seq:
            return self._fail(
                self.expected_seq, f"gap in seq: expected {self.expected_seq}, found {entry.seq}"
            )
        if entry.tenant_id != self.tenant_id:
            return self._fail(entry.seq, f"tenant mismatch: entry belongs to {entry.tenant_id!r}")
        if entry.prev_hash != self.prev_hash:
            return self._fail(entry.seq, "prev_hash mismatch: does not match the previous entry's hash")
        if entry_hash(entry.prev_hash, entry.body()) != entry.hash:
            return self._fail(entry.seq, "hash mismatch: entry content was altered")
        self.checked += 1
        self.expected_seq += 1
        self.prev_hash = entry.hash
        return True

    def finish(self, head_seq: int | None = None, head_hash: str | None = None) -> VerifyResult:
        """Result so far; with a recorded head, also detects entries cut off the end of the chain."""
        if self.broken is not None:
            return self.broken
        last_seq = self.expected_seq - 1
        if head_seq is not None and head_seq != last_seq:
            return VerifyResult(
                False,
                self.checked,
                last_seq + 1,
                f"gap in seq: head is at {head_seq}, entries end at {last_seq}",
            )
        if head_hash is not None and head_hash != self.prev_hash:
            return VerifyResult(False, self.checked, last_seq, "head hash mismatch: chain head was altered")
        return VerifyResult(True, self.checked)

    def _fail(self, seq: int, reason: str) -> bool:
        self.broken = VerifyResult(False, self.checked, seq, reason)
        return False


def verify(entries: Iterable[AuditEntry]) -> VerifyResult:
    """Check a complete chain from seq 1; names the first broken entry and why."""
    verifier = ChainVerifier()
    for entry in entries:
        if not verifier.feed(entry):
            break
    return verifier.finish()
