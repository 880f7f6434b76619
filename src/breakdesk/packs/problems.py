"""Pack problems: every error names the file, the JSON path and the reason, so an admin can fix all at once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_IDENT_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def json_path(loc: Iterable[Any]) -> str:
    """Render a location tuple as a JSON path: ('a', 3, 'b c') → $.a[3]['b c']."""
    out = ["$"]
    for part in loc:
        if isinstance(part, int):
            out.append(f"[{part}]")
        else:
            text = str(part)
            if text and all(c in _IDENT_OK for c in text):
                out.append(f".{text}")
            else:
                out.append("[" + repr(text) + "]")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class PackProblem:
    file: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.path}: {self.reason}"

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "path": self.path, "reason": self.reason}


class PackError(Exception):
    """Raised when a pack cannot be loaded; carries *all* the problems found."""

    def __init__(self, problems: Sequence[PackProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid pack")
