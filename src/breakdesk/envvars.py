"""`BREAKDESK_*` variables read where they are used, outside the server's settings (`api/settings.py`): the
approval TTL default, the embedder's threads and the similar-case memory's bounds and search process.

Parsed strictly: a value that is not what the variable takes is an error that names it, never a silent
default (an operator who sets a bound expects it to hold). `check()` parses them all; every `breakdesk`
command and the server's settings call it before any work starts. Standard library only, so that check
costs a command nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

APPROVAL_TTL = "BREAKDESK_APPROVAL_TTL_MINUTES"
EMBED_THREADS = "BREAKDESK_EMBED_THREADS"
MEMORY_MAX_CASES = "BREAKDESK_MEMORY_MAX_CASES"
MEMORY_TRIAGE_WINDOW = "BREAKDESK_MEMORY_TRIAGE_WINDOW"
MEMORY_SEARCH_PROCESS = "BREAKDESK_MEMORY_SEARCH_PROCESS"
#: The longest approval TTL, as a policy's `approvals.ttlMinutes` (a year).
MAX_TTL_MINUTES = 525_600


def _raw(name: str, environ: Mapping[str, str] | None) -> str:
    """The variable's value, stripped; "" when unset or empty (both mean: the default)."""
    return (os.environ if environ is None else environ).get(name, "").strip()


def approval_ttl_minutes(environ: Mapping[str, str] | None = None) -> float | None:
    """$BREAKDESK_APPROVAL_TTL_MINUTES: minutes above 0, at most a year; None when unset."""
    raw = _raw(APPROVAL_TTL, environ)
    if not raw:
        return None
    try:
        minutes = float(raw)
    except ValueError:
        minutes = math.nan
    if not 0 < minutes <= MAX_TTL_MINUTES:  # NaN too
        raise ValueError(f"{APPROVAL_TTL} must be a number of minutes above 0 and at most {MAX_TTL_MINUTES}, "
                         f"not {raw!r}")
    return minutes


def embed_threads(environ: Mapping[str, str] | None = None) -> int | None:
    """$BREAKDESK_EMBED_THREADS: a whole number of threads, 1 or more; None (torch's choice) when unset."""
    raw = _raw(EMBED_THREADS, environ)
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{EMBED_THREADS} must be a whole number of threads (1 or more), not {raw!r}")
    return int(raw)


def count(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    """A count of cases (`BREAKDESK_MEMORY_*`): a whole number, 0 or more; `default` when unset."""
    raw = _raw(name, environ)
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number of cases, not {raw!r}")
    return int(raw)


def search_process(environ: Mapping[str, str] | None = None) -> bool | None:
    """$BREAKDESK_MEMORY_SEARCH_PROCESS: whether the pipeline's similar-case searches run in a process of their
    own (`memory.sidecar`): `on`, `off`, or `auto` (None: the memory decides; also when unset)."""
    raw = _raw(MEMORY_SEARCH_PROCESS, environ).lower()
    if raw in ("", "auto"):
        return None
    if raw in ("on", "true", "1", "yes"):
        return True
    if raw in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"{MEMORY_SEARCH_PROCESS} must be on, off or auto, not {raw!r}")


def check(environ: Mapping[str, str] | None = None) -> None:
    """Parse every variable of this module: ValueError naming the first bad one."""
    approval_ttl_minutes(environ)
    embed_threads(environ)
    count(MEMORY_MAX_CASES, 0, environ)
    count(MEMORY_TRIAGE_WINDOW, 0, environ)
    search_process(environ)
