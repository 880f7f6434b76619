"""Which modules are compiled to C with mypyc, and the guard against running a stale compiled module.

Why compile: the pure decision core builds about twenty objects and runs about ten CEL calls per exception, and
interpreted Python spends most of that time on the interpreter itself (a flat profile, bench/RESULTS.md).
mypyc compiles the same type-annotated source; nothing is written twice, and with `BREAKDESK_COMPILE=0` at
install time the same modules run interpreted.

Why guard: an editable install builds the extensions next to their sources, and Python imports an extension
before a `.py` of the same name. A source edited after the build would silently not run, so in a source checkout
importing `breakdesk` refuses a compiled module older than its source (or left by an earlier build for a module
no longer listed here) and says how to rebuild.

`BREAKDESK_INTERPRETED=1` makes a process import those modules from their sources even when compiled: the
differential test (tests/unit/test_native.py) decides the same exceptions both ways and compares.

Standard library only: `setup.py` reads `COMPILED` before anything is installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

#: Paths relative to `src/`. Pure code over data only: no I/O, no monkeypatching targets, no pydantic models
#: (mypyc cannot compile pydantic's class machinery). The decision core, and the similar-case memory's text
#: analysis and in-memory index, which the pipeline runs for every exception it triages.
COMPILED: tuple[str, ...] = (
    "breakdesk/domain/digest.py",
    "breakdesk/domain/construct.py",
    "breakdesk/domain/timestamps.py",
    "breakdesk/rules/cel.py",
    "breakdesk/rules/templates.py",
    "breakdesk/pipeline/context.py",
    "breakdesk/pipeline/types.py",
    "breakdesk/pipeline/intake.py",
    "breakdesk/pipeline/triage.py",
    "breakdesk/pipeline/policy.py",
    "breakdesk/pipeline/resolution.py",
    "breakdesk/pipeline/supervisor.py",
    "breakdesk/pipeline/feedback.py",
    "breakdesk/pipeline/stages.py",
    "breakdesk/memory/text.py",
    "breakdesk/memory/index.py",
)

#: Loops that numpy cannot express cheaply, written in Cython (paths relative to `src/`); without a build the
#: callers use their numpy equivalent (`load_kernel`).
KERNELS: tuple[str, ...] = (
    "breakdesk/memory/_scoring.pyx",
)

_SRC = Path(__file__).resolve().parent.parent
INTERPRET_ENV = "BREAKDESK_INTERPRETED"


def module_name(path: str) -> str:
    """`breakdesk/memory/index.py` or `breakdesk/memory/_scoring.pyx` → the module's dotted name."""
    return path.removesuffix(".pyx").removesuffix(".py").replace("/", ".")


_SOURCES = {module_name(rel): rel for rel in COMPILED}


def built_extensions(src: Path = _SRC) -> dict[Path, Path]:
    """Source → compiled extension, for the compiled modules that have an extension next to their source."""
    found: dict[Path, Path] = {}
    for rel in COMPILED + KERNELS:
        source = src / rel
        stem = source.with_suffix("")
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            ext = stem.with_name(stem.name + suffix)
            if ext.exists():
                found[source] = ext
                break
    return found


def stale(src: Path = _SRC, built: dict[Path, Path] | None = None) -> list[Path]:
    """Compiled modules whose source changed after they were built (`built`: `built_extensions(src)`)."""
    return [source for source, ext in (built_extensions(src) if built is None else built).items()
            if source.exists() and source.stat().st_mtime > ext.stat().st_mtime]


def orphans(src: Path = _SRC, built: dict[Path, Path] | None = None) -> list[Path]:
    """Extensions inside the package for modules no longer compiled (an earlier build's): they would still be
    imported instead of their sources."""
    known = set((built_extensions(src) if built is None else built).values())
    found = {p for suffix in importlib.machinery.EXTENSION_SUFFIXES for p in (src / "breakdesk").rglob("*" + suffix)}
    return sorted(found - known)


def compiled_modules() -> list[str]:
    """The compiled modules this process imports as extensions (what `breakdesk version` reports)."""
    out = []
    for rel in COMPILED:
        mod = sys.modules.get(module_name(rel))
        if mod is None:
            mod = importlib.import_module(module_name(rel))
        if not (getattr(mod, "__file__", "") or "").endswith(".py"):
            out.append(module_name(rel))
    return out


def load_kernel(name: str) -> ModuleType | None:
    """The compiled kernel `name` (one of `KERNELS`), or None when it was not built or this process interprets
    (`BREAKDESK_INTERPRETED=1`): its caller then runs the numpy equivalent."""
    if os.environ.get(INTERPRET_ENV) == "1":
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def status() -> str:
    """How the decision core runs in this process, as `breakdesk version` and the benchmarks print it."""
    compiled = len(compiled_modules())
    kernels = sum(load_kernel(module_name(rel)) is not None for rel in KERNELS)
    return (f"compiled ({compiled} of {len(COMPILED)} modules, {kernels} of {len(KERNELS)} kernels)"
            if compiled or kernels else "interpreted")


class StaleBuild(ImportError):
    """A compiled module is older than its source: the source's changes would not run."""


def check_fresh(src: Path = _SRC) -> None:
    """Refuse stale compiled modules, in a source checkout only (an installed wheel has no sources to edit)."""
    if not (src.parent / "pyproject.toml").exists():
        return
    built = built_extensions(src)
    old = stale(src, built)
    left = orphans(src, built)
    if old or left:
        names = ", ".join(str(p.relative_to(src.parent)) for p in old)
        problem = f"{names} changed after it was compiled" if old else ""
        if left:
            problem += ("; " if problem else "") + ", ".join(str(p.relative_to(src.parent)) for p in left) + \
                " compiled by an earlier build, no longer listed in breakdesk.native.COMPILED"
        raise StaleBuild(
            f"{problem}, so the compiled module would run instead of your source. "
            "Rebuild with `.venv/bin/pip install -e .` (`make test` and `make run` do when a listed source changed); "
            "`BREAKDESK_COMPILE=0 .venv/bin/pip install -e .` runs everything from source."
        )


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' sources before the extensions next to them."""

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        rel = _SOURCES.get(name)
        return None if rel is None else importlib.util.spec_from_file_location(name, _SRC / rel)


def setup_imports() -> None:
    """What importing `breakdesk` does first: interpret the compiled modules if asked, else refuse stale ones."""
    if os.environ.get(INTERPRET_ENV) == "1":
        if not any(isinstance(f, _FromSource) for f in sys.meta_path):
            sys.meta_path.insert(0, _FromSource())
        return
    check_fresh()
