"""Build hook: the decision core (`breakdesk.native.COMPILED`) is compiled with mypyc and the kernels
(`breakdesk.native.KERNELS`) with Cython; the rest ships as source.

Project metadata lives in pyproject.toml; this file only declares the compiled modules.
- `BREAKDESK_COMPILE=0`: no compilation, and compiled modules an earlier in-place build left are removed, so
  the sources run.
- No C compiler or headers: the same package as pure Python, with a warning. Same decisions, slower.
- Kernels are compiled with `-ffp-contract=off`: a fused multiply-add would round once where the numpy
  equivalent rounds twice, and their results must be numpy's bit for bit.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

ROOT = Path(__file__).resolve().parent
NATIVE = runpy.run_path(str(ROOT / "src" / "breakdesk" / "native.py"))


class OptionalBuildExt(build_ext):
    """Compiling is an optimisation: when it fails, install the sources and say so."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, CompileError, ExecError, PlatformError, OSError) as exc:
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            self.extensions = []
            self.warn(f"breakdesk: compiling the decision core failed ({exc}); it will run as pure Python")


#: Commands that only read metadata: pip asks for it before building, and generating C takes seconds.
METADATA = {"egg_info", "dist_info", "sdist"}


def extensions() -> list[Any]:
    commands = {a for a in sys.argv[1:] if not a.startswith("-")}
    if commands and commands <= METADATA:
        return []
    for orphan in NATIVE["orphans"](ROOT / "src"):  # an earlier build's, for a module no longer compiled
        orphan.unlink()
    if os.environ.get("BREAKDESK_COMPILE", "1") == "0":
        for ext in NATIVE["built_extensions"](ROOT / "src").values():
            ext.unlink()
        for shared in (ROOT / "src").glob("*__mypyc*"):
            shared.unlink()
        return []
    return core() + kernels()


def core() -> list[Any]:
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("breakdesk: mypyc is not installed; the decision core will run as pure Python")
        return []
    # The same input on every machine: no config file (its pydantic plugin needs pydantic) and no installed
    # packages (a fresh venv builds this before installing dependencies), so third-party types are Any.
    opts = ["--config-file=", "--no-site-packages", "--ignore-missing-imports"]
    return mypycify(opts + [f"src/{p}" for p in NATIVE["COMPILED"]], opt_level="3", group_name="breakdesk_core")


def kernels() -> list[Any]:
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("breakdesk: Cython is not installed; the kernels' numpy equivalents will run")
        return []
    exts = [Extension(NATIVE["module_name"](rel), [f"src/{rel}"],
                      extra_compile_args=["-O3", "-ffp-contract=off"]) for rel in NATIVE["KERNELS"]]
    # The generated C goes to build/, not next to the sources.
    return list(cythonize(exts, build_dir="build/cython", language_level=3, quiet=True))


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
