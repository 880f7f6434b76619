"""Timestamps as senders write them, as aware UTC datetimes.

Its own module so that it can be compiled (breakdesk.native): intake parses one per exception, and the
pydantic models that also use it cannot be compiled."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_timestamp(value: Any) -> datetime:
    """Parse ISO-8601 (with `Z`), epoch seconds/milliseconds, or a datetime; always return an aware UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, bool):
        raise ValueError("timestamp must be an ISO-8601 string or epoch number, not a boolean")
    elif isinstance(value, int | float):
        try:
            number = float(value)  # first: compiled, `int / float` of a huge int is a TypeError, not an overflow
            secs = number / 1000.0 if abs(number) > 1e11 else number
            return datetime.fromtimestamp(secs, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"epoch timestamp out of range: {str(value)[:40]}") from exc
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("timestamp is empty")
        if text.isdigit():
            if len(text) > 20:
                raise ValueError(f"epoch timestamp out of range: {text[:40]}")
            return parse_timestamp(int(text))
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from exc
    else:
        raise ValueError(f"timestamp must be a string or number, got {type(value).__name__}")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first representable UTC instant
        raise ValueError(f"timestamp out of range once converted to UTC: {str(value)[:40]}") from None
