"""Version ranges for domain bindings: PEP 440 specifiers plus the npm-style shorthands admins expect."""

from __future__ import annotations

import re

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

_CARET = re.compile(r"^\^(\d+)(?:\.(\d+))?(?:\.(\d+))?$")
_TILDE = re.compile(r"^~(\d+)(?:\.(\d+))?(?:\.(\d+))?$")
_X = re.compile(r"^(\d+)(?:\.(\d+|x|\*))?(?:\.(x|\*))?$")


def parse_range(text: str) -> SpecifierSet:
    """Parse a range; raises ValueError naming what is wrong."""
    t = text.strip()
    if t in ("", "*", "x"):
        return SpecifierSet("")
    m = _CARET.match(t)
    if m:  # npm semantics: the left-most non-zero part given is fixed (^0 → <1.0.0, ^0.0 → <0.1.0)
        given = [g for g in m.groups() if g is not None]
        major, minor, patch = (int(g) if g else 0 for g in m.groups())
        if major > 0 or len(given) == 1:
            upper = f"{major + 1}.0.0"
        elif minor > 0 or len(given) == 2:
            upper = f"0.{minor + 1}.0"
        else:
            upper = f"0.0.{patch + 1}"
        return SpecifierSet(f">={major}.{minor}.{patch},<{upper}")
    m = _TILDE.match(t)
    if m:  # npm semantics: ~1 → <2.0.0; ~1.2 and ~1.2.3 → <1.3.0
        major, minor, patch = (int(g) if g else 0 for g in m.groups())
        if m.group(2) is None:
            return SpecifierSet(f">={major}.0.0,<{major + 1}.0.0")
        return SpecifierSet(f">={major}.{minor}.{patch},<{major}.{minor + 1}.0")
    m = _X.match(t)
    if m and (m.group(2) in (None, "x", "*") or m.group(3) in ("x", "*")):
        major = int(m.group(1))
        if m.group(2) in (None, "x", "*"):
            return SpecifierSet(f">={major}.0.0,<{major + 1}.0.0")
        minor = int(m.group(2))
        return SpecifierSet(f">={major}.{minor}.0,<{major}.{minor + 1}.0")
    if re.match(r"^\d+\.\d+\.\d+", t) and not any(c in t for c in "<>=!~,"):
        t = f"=={t}"
    try:
        return SpecifierSet(t)
    except InvalidSpecifier:
        raise ValueError(
            f"invalid version range {text!r}: use specifiers like '>=1.0.0,<2', '^1.2.0', '~1.2.0', '1.x' or '*'"
        ) from None


def _version(text: str) -> Version | None:
    """A semver as a comparable Version; prerelease tags PEP 440 cannot spell count as an early prerelease."""
    core = text.split("+", 1)[0]
    try:
        return Version(core)
    except InvalidVersion:
        base, _, pre = core.partition("-")
        try:
            return Version(f"{base}a0") if pre else None
        except InvalidVersion:
            return None


def satisfies(version: str, range_text: str) -> bool:
    v = _version(version)
    if v is None:
        return False
    return parse_range(range_text).contains(v, prereleases=True)


def sort_key(version: str) -> Version:
    return _version(version) or Version("0")
