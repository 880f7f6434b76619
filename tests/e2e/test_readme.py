"""The README's tour works as written: what it runs needs nothing it does not set up."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from e2e_harness import REPO

TOUR_PACKS = ("packs/finance/domain.yaml", "packs/finance/tenants/acme-capital.yaml")


def _env_refs(node: Any) -> Iterator[str]:
    """Every `env:NAME` secret reference in a pack (tool secrets and the tenant's tool overrides)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ref" and isinstance(value, str) and value.startswith("env:"):
                yield value[4:]
            else:
                yield from _env_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _env_refs(value)


def test_the_tour_exports_every_secret_its_tenant_calls_tools_with() -> None:
    """The tour runs Acme Capital's exceptions against the demo tools and approves one: a secret the packs
    reference and the tour does not export fails that tool call, and the exception escalates instead."""
    readme = (REPO / "README.md").read_text()
    exported = {name for line in re.findall(r"^export (.+?)(?:\s+#.*)?$", readme, re.M)
                for name in re.findall(r"([A-Z_][A-Z0-9_]*)=\S+", line)}
    needed = {name for path in TOUR_PACKS for name in _env_refs(yaml.safe_load((REPO / path).read_text()))}
    assert needed, "the tour's packs reference no secret: this test checks nothing"
    assert needed <= exported, f"the README tour does not export {sorted(needed - exported)}"
