"""The mypyc-compiled decision core: CI runs it compiled, and a stale compiled module is refused."""

from __future__ import annotations

import importlib.machinery
import os
import re
from pathlib import Path

import pytest

from breakdesk import native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
ROOT = Path(__file__).resolve().parents[2]


def checkout(tmp_path: Path, *, source_newer: bool) -> Path:
    """A source tree with one compiled module, its source older or newer than the extension."""
    (tmp_path / "pyproject.toml").write_text("")
    src = tmp_path / "src"
    source = src / native.COMPILED[0]
    source.parent.mkdir(parents=True)
    source.write_text("")
    ext = source.with_name(source.stem + SUFFIX)
    ext.write_bytes(b"")
    old, new = 1_700_000_000, 1_700_000_100
    os.utime(source, (new, new) if source_newer else (old, old))
    os.utime(ext, (old, old) if source_newer else (new, new))
    return src


def test_a_source_edited_after_the_build_is_refused(tmp_path: Path) -> None:
    src = checkout(tmp_path, source_newer=True)
    assert native.stale(src) == [src / native.COMPILED[0]]
    with pytest.raises(native.StaleBuild, match=re.escape(f"src/{native.COMPILED[0]} changed after it was compiled")):
        native.check_fresh(src)


def test_a_fresh_build_passes(tmp_path: Path) -> None:
    src = checkout(tmp_path, source_newer=False)
    assert native.stale(src) == []
    native.check_fresh(src)


def test_an_installed_package_is_not_checked(tmp_path: Path) -> None:
    """A wheel's files carry their extraction times: there is no source to edit, so no check."""
    src = checkout(tmp_path, source_newer=True)
    (tmp_path / "pyproject.toml").unlink()
    native.check_fresh(src)


def test_the_makefile_rebuilds_every_compiled_module() -> None:
    """The Makefile's stamps depend on the sources its sed finds in native.py: every entry must match."""
    makefile = (ROOT / "Makefile").read_text()
    assert "src/breakdesk/native.py)" in makefile
    text = (ROOT / "src/breakdesk/native.py").read_text()
    found = re.findall(r'^ *"(breakdesk/[a-z_/]*\.py)",$', text, flags=re.M)
    assert tuple(found) == native.COMPILED


def test_the_core_runs_compiled() -> None:
    """CI must measure and test what ships; a developer may install with BREAKDESK_COMPILE=0."""
    compiled = native.compiled_modules()
    if not compiled and os.environ.get("CI") != "true":
        pytest.skip("installed with BREAKDESK_COMPILE=0 or without a C compiler")
    assert compiled == [native.module_name(p) for p in native.COMPILED]
