"""One stable content digest for fingerprints, pack identity and event digests."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def stable_digest(value: Any) -> str:
    """sha256 hex of `value` as key-sorted JSON; the same value always gives the same digest.

    orjson refuses integers beyond 64 bits (20-digit account numbers sent as numbers), so those values fall
    back to the standard library's encoder."""
    try:
        raw = orjson.dumps(value, option=_OPTIONS)
    except TypeError:
        raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()
