"""The mypyc-compiled decision core: CI runs it compiled, and a stale compiled module is refused."""

from __future__ import annotations

import importlib.machinery
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from breakdesk import native
from breakdesk.packs.workspace import compile_domain_file, compile_tenant_file
from breakdesk.pipeline.intake import IntakeRejected, intake
from breakdesk.pipeline.stages import decide
from breakdesk.pipeline.types import Submission

from .packkit import RECEIVED

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


def test_an_extension_no_longer_compiled_is_refused(tmp_path: Path) -> None:
    """A module dropped from COMPILED keeps its old extension until rebuilt: it would shadow the source."""
    src = checkout(tmp_path, source_newer=False)
    left = src / "breakdesk" / "memory" / ("service" + SUFFIX)
    left.parent.mkdir(parents=True)
    left.write_bytes(b"")
    assert native.orphans(src) == [left]
    with pytest.raises(native.StaleBuild, match=r"src/breakdesk/memory/service.* no longer listed"):
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
    found = re.findall(r'^ *"(breakdesk/[a-z_/]*\.pyx?)",$', text, flags=re.M)
    assert tuple(found) == native.COMPILED + native.KERNELS


def test_the_core_runs_compiled() -> None:
    """CI must measure and test what ships; a developer may install with BREAKDESK_COMPILE=0."""
    compiled = native.compiled_modules()
    if not compiled and os.environ.get("CI") != "true":
        pytest.skip("installed with BREAKDESK_COMPILE=0 or without a C compiler")
    assert compiled == [native.module_name(p) for p in native.COMPILED]


def test_the_kernels_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels' numpy equivalents give the same results (tests/memory compare both), slower: CI runs what
    ships. `BREAKDESK_INTERPRETED=1` leaves them out, as it does the compiled core."""
    names = [native.module_name(rel) for rel in native.KERNELS]
    built = [name for name in names if native.load_kernel(name) is not None]
    if not built and os.environ.get("CI") != "true":
        pytest.skip("installed with BREAKDESK_COMPILE=0, without Cython or without a C compiler")
    assert built == names
    monkeypatch.setenv(native.INTERPRET_ENV, "1")
    assert all(native.load_kernel(name) is None for name in names)


# ------------------------------------------------------------------ compiled and interpreted decide alike

#: Values a sender may put anywhere: the edges where compiled code could part from the interpreter
#: (huge and non-finite numbers, wrong types, empty and long strings, odd timestamps, deep containers).
ODD_VALUES: list[Any] = [None, True, 0, -1, 10**30, -(10**19), 1.5e308, float("nan"), "", "x" * 300, "2026-13-45",
                         "1767323045", [], {}, [1, [2, [3]]], {"a": {"b": {"c": None}}}, "ünïcødé ✓", 3.25]


def _scramble(value: Any, rng: random.Random) -> Any:
    """`value` with about a third of its leaves, at any depth, replaced by odd values."""
    if isinstance(value, dict):
        return {k: _scramble(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [_scramble(v, rng) for v in value]
    return rng.choice(ODD_VALUES) if rng.random() < 0.35 else value


def _variants(item: Any, rng: random.Random, seen: list[Any]) -> list[Any]:
    """The item; three copies with one leaf (or envelope field) replaced by an odd value; one with many leaves
    replaced; one carrying an earlier example's payload (often another type's) under this envelope."""
    out = [item]
    if not isinstance(item, dict):
        return out
    for _ in range(3):
        copy = json.loads(json.dumps(item))
        target = copy
        raw = copy.get("rawPayload")
        if isinstance(raw, dict) and raw and rng.random() < 0.7:
            target = raw
        key = rng.choice(sorted(target)) if target else "exceptionType"
        target[key] = rng.choice(ODD_VALUES)
        out.append(copy)
    out.append(_scramble(item, rng))
    if seen:
        out.append({**item, "rawPayload": rng.choice(seen)})
    if isinstance(item.get("rawPayload"), dict):
        seen.append(item["rawPayload"])
    return out


def decisions() -> list[Any]:
    """Every example exception (and odd variants of each) through intake and every stage, as plain data."""
    rng = random.Random(11)
    out: list[Any] = []
    seen: list[Any] = []
    for domain_name, tenant_name in (("finance", "acme-capital"), ("healthcare", "riverside-health")):
        domain = compile_domain_file(ROOT / f"packs/{domain_name}/domain.yaml")
        tenant = compile_tenant_file(ROOT / f"packs/{domain_name}/tenants/{tenant_name}.yaml", domain)
        for n, line in enumerate((ROOT / f"examples/{domain_name}.jsonl").read_text().splitlines()):
            try:
                item = json.loads(line)
            except ValueError:
                continue
            for data in _variants(item, rng, seen):
                try:
                    ir = intake(Submission(data, RECEIVED, line=n), tenant_name, f"E{n}", domain)
                    done = decide(ir, domain, tenant, received_at=RECEIVED, now=RECEIVED)
                except IntakeRejected as exc:
                    out.append(["rejected", str(exc)])
                    continue
                except Exception as exc:  # recorded, so that both builds must fail alike
                    out.append(["raised", type(exc).__name__, str(exc)])
                    continue
                out.append([ir.record.model_dump(mode="json"), ir.fingerprint, ir.type_source, done.status.value,
                            done.error, [[e.stage, e.payload, e.decision.model_dump(mode="json") if e.decision else None]
                                         for e in done.events]])
    return out


def test_compiled_and_interpreted_decide_alike(
        both_builds: Callable[[Callable[[], Any], str], tuple[Any, Any]]) -> None:
    """The compiled core must decide exactly what its source decides, on every example and on odd variants of
    each: a subprocess runs the same function with the sources imported instead of the extensions."""
    compiled, interpreted = both_builds(decisions, "tests.unit.test_native")
    assert len(compiled) == len(interpreted) > 2500
    assert sum(1 for d in compiled if d[0] == "rejected") > 0 and sum(1 for d in compiled if d[0] not in
                                                                       ("rejected", "raised")) > 1000
    for i, (c, p) in enumerate(zip(compiled, interpreted, strict=True)):
        assert c == p, f"decision {i} differs"


def test_version_says_how_the_core_runs() -> None:
    def version(**env: str) -> str:
        run = subprocess.run([sys.executable, "-m", "breakdesk", "version"], env={**os.environ, **env},
                             capture_output=True, text=True, check=True)
        return run.stdout

    assert "decision core interpreted" in version(**{native.INTERPRET_ENV: "1"})
    if native.compiled_modules():
        n, k = len(native.COMPILED), len(native.KERNELS)
        assert f"decision core compiled ({n} of {n} modules, {k} of {k} kernels)" in version()
