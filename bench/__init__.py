"""Benchmarks. Run all with `make bench` (python -m bench) or one with `python -m bench.rules`."""

from __future__ import annotations

import platform
from datetime import UTC, datetime


def machine_line() -> str:
    """What every benchmark prints first: the machine, Python, whether the decision core runs compiled, when."""
    from breakdesk import native

    return (f"machine: {platform.node()} {platform.machine()} python {platform.python_version()} "
            f"decision core: {native.status()} date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
