"""Tamper-evident audit log: a sha256 hash chain per tenant. Storage lives in `breakdesk.store`."""

from breakdesk.audit.chain import (
    GENESIS_HASH,
    AuditEntry,
    ChainVerifier,
    VerifyResult,
    body_json,
    canonical_json,
    content_hash,
    entry_body,
    entry_hash,
    link,
    link_json,
    utc_iso,
    verify,
)

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "ChainVerifier",
    "VerifyResult",
    "body_json",
    "canonical_json",
    "content_hash",
    "entry_body",
    "entry_hash",
    "link",
    "link_json",
    "utc_iso",
    "verify",
]
