"""Store errors. Messages describe the problem in domain terms and never carry SQL or driver internals."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: the store could not do what was asked."""


class NotFound(StoreError):
    """The tenant, exception, pack version or activation does not exist (for this tenant)."""


class Conflict(StoreError):
    """The write contradicts stored data: duplicate id or key, or an immutable version with new content."""


class InvalidCursor(StoreError):
    """A pagination cursor was malformed or made for a different sort order."""
