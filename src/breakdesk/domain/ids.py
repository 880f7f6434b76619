"""Exception ids: time-ordered (so 'newest first' is an index scan) and unguessable (so ids leak nothing)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_exception_id(now_ms: int | None = None) -> str:
    """'EX-' + 10 chars of millisecond time + 16 chars of randomness (a ULID)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return "EX-" + _b32(ms, 10) + _b32(int.from_bytes(os.urandom(10), "big"), 16)
