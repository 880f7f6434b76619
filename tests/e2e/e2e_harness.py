"""Helpers for the end-to-end tests: set up a tenant with the example packs, run an example file through the
real pipeline, and read back per input line what was decided (the golden-file view)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from breakdesk.catalog import Catalog
from breakdesk.cli.run_cmds import run_file
from breakdesk.packs.loader import read_file
from breakdesk.pipeline.intake import ENVELOPE_KEYS
from breakdesk.pipeline.orchestrator import BatchReport
from breakdesk.store import Store

REPO = Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO / "tests" / "golden"
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN", "") not in ("", "0", "false", "no")

#: tenant -> domain; the sibling is the other tenant policy of the same domain pack.
TENANTS: dict[str, str] = {
    "acme-capital": "finance",
    "northwind-securities": "finance",
    "riverside-health": "healthcare",
    "summit-care": "healthcare",
}
SIBLING: dict[str, str] = {
    "acme-capital": "northwind-securities",
    "northwind-securities": "acme-capital",
    "riverside-health": "summit-care",
    "summit-care": "riverside-health",
}
#: The events every newly decided exception gets, in order (a recurrence adds one "recurrence" event).
STAGES = ("intake", "triage", "policy", "supervisor", "resolution", "supervisor", "feedback")


@cache
def gen_examples() -> ModuleType:
    """scripts/gen_examples.py imported as a module (scripts/ is not a package)."""
    path = REPO / "scripts" / "gen_examples.py"
    spec = importlib.util.spec_from_file_location("gen_examples", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_examples", module)
    spec.loader.exec_module(module)
    return module


def example_file(tenant: str) -> Path:
    return REPO / "examples" / f"{TENANTS[tenant]}.jsonl"


def pack_files(tenant: str) -> tuple[Path, Path]:
    domain = TENANTS[tenant]
    return REPO / "packs" / domain / "domain.yaml", REPO / "packs" / domain / "tenants" / f"{tenant}.yaml"


async def setup_tenant(store: Any, tenant: str) -> None:
    """Create the tenant, publish and activate its domain pack and tenant policy (the README's step 2)."""
    dom_path, pol_path = pack_files(tenant)
    dom_data, dom_src = read_file(dom_path)
    pol_data, pol_src = read_file(pol_path)
    await store.create_tenant(tenant, pol_data.get("name") or tenant)
    cat = Catalog(store)
    await cat.publish(tenant, dom_data, dom_src, "e2e", activate=True)
    await cat.publish(tenant, pol_data, pol_src, "e2e", activate=True)


def parse_lines(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed JSON or None) for every non-blank line, numbered like `breakdesk run` does."""
    out: list[tuple[int, Any]] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.strip()
            if not text:
                continue
            try:
                out.append((lineno, json.loads(text)))
            except ValueError:
                out.append((lineno, None))
    return out


def payload_of(obj: dict[str, Any]) -> Any:
    """The raw payload intake records for a submission (rawPayload, or a bare payload minus the envelope)."""
    if "rawPayload" in obj:
        return obj["rawPayload"]
    return {k: v for k, v in obj.items() if k not in ENVELOPE_KEYS}


def canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def explicit_id(obj: Any) -> str | None:
    if isinstance(obj, dict) and isinstance(obj.get("exceptionId"), str):
        return obj["exceptionId"].strip()
    return None


def has_timestamp(obj: dict[str, Any], ts_field: str) -> bool:
    if obj.get("timestamp") is not None:
        return True
    payload = payload_of(obj)
    return isinstance(payload, dict) and payload.get(ts_field) is not None


async def all_rows(store: Any, tenant: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page, cursor = await store.list_exceptions(tenant, limit=1000, cursor=cursor, sort="received_at",
                                                   include_record=True)
        rows.extend(page)
        if cursor is None:
            return rows


async def all_audit(store: Any, tenant: str) -> list[Any]:
    entries: list[Any] = []
    after = 0
    while True:
        page = await store.get_audit(tenant, limit=1000, after_seq=after)
        if not page:
            return entries
        entries.extend(page)
        after = page[-1].seq


def counts_of(report: BatchReport, lines: int) -> dict[str, Any]:
    return {
        "lines": lines,
        "processed": report.processed,
        "recurrences": report.recurrences,
        "duplicates": report.duplicates,
        "rejected": [{"line": r.line, "reason": r.reason} for r in sorted(report.rejected, key=lambda r: r.line or 0)],
        "by_type": dict(sorted(report.by_type.items())),
        "by_severity": dict(sorted(report.by_severity.items())),
        "by_actionability": dict(sorted(report.by_actionability.items())),
        "by_status": dict(sorted(report.by_status.items())),
        "approval_required": report.approval_required,
        "escalated": report.escalated,
        "stage_errors": report.stage_errors,
    }


class RunView:
    """What one run stored, read back through the store's public API and mapped to input lines."""

    def __init__(self, tenant: str, path: Path, report: BatchReport) -> None:
        self.tenant = tenant
        self.path = path
        self.report = report
        self.parsed = parse_lines(path)
        self.rows: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.occurrence_of: dict[str, str] = {}  # occurrence id (recurrence) -> target exception id
        self.line_of: dict[str, int] = {}  # stored exception id -> input line
        self.per_line: dict[int, dict[str, Any]] = {}

    async def load(self, store: Any) -> RunView:
        for row in await all_rows(store, self.tenant):
            self.rows[row["exception_id"]] = row
        for eid in self.rows:
            evs = await store.get_events(self.tenant, eid)
            self.events[eid] = evs
            for e in evs:
                if e["stage"] == "recurrence":
                    self.occurrence_of[e["payload"]["occurrence"]] = eid
        self._map()
        return self

    def _map(self) -> None:
        ts_field = "detectedAt" if TENANTS[self.tenant] == "finance" else "occurredAt"
        rejected = {r.line: r.reason for r in self.report.rejected}
        explicit = {eid for _, obj in self.parsed if (eid := explicit_id(obj))}
        # exceptions and occurrences whose id Breakdesk generated, by payload, in processing order
        order = {eid: i for i, eid in enumerate(self.report.exception_ids)}
        gen_rows: dict[str, list[str]] = {}
        for eid in sorted((e for e in self.rows if e not in explicit), key=lambda e: order.get(e, 1 << 30)):
            gen_rows.setdefault(canon(self.rows[eid]["record"]["rawPayload"]), []).append(eid)
        gen_occ: dict[str, list[str]] = {}
        for evs in self.events.values():
            for e in evs:
                if e["stage"] == "recurrence" and e["payload"]["occurrence"] not in explicit:
                    gen_occ.setdefault(canon(e["payload"]["rawPayload"]), []).append(e["payload"]["occurrence"])
        claimed: set[str] = set()
        for lineno, obj in self.parsed:
            if lineno in rejected:
                self.per_line[lineno] = {"outcome": "rejected", "reason": rejected[lineno]}
                continue
            assert isinstance(obj, dict), f"line {lineno} was not rejected but is not an object"
            eid = explicit_id(obj)
            kind: str | None = None
            if eid is not None and eid not in claimed:
                if eid in self.rows:
                    kind = "new"
                elif eid in self.occurrence_of:
                    kind = "recurrence"
            elif eid is None:
                key = canon(payload_of(obj))
                if gen_rows.get(key):
                    eid, kind = gen_rows[key].pop(0), "new"
                elif gen_occ.get(key):
                    eid, kind = gen_occ[key].pop(0), "recurrence"
            if kind is None:
                self.per_line[lineno] = {"outcome": "duplicate"}
                continue
            assert eid is not None
            claimed.add(eid)
            if kind == "recurrence":
                target = self.occurrence_of[eid]
                self.per_line[lineno] = {"outcome": "recurrence", "of_line": self.line_of.get(target)}
                continue
            self.line_of[eid] = lineno
            row = self.rows[eid]
            intake_ev = next((e for e in self.events[eid] if e["stage"] == "intake"), None)
            ignored = intake_ev is not None and any(
                "timestamp ignored" in x.get("message", "") for x in (intake_ev["decision"] or {}).get("evidence", [])
            )
            if ignored:
                ts: Any = "<ignored: receive time>"
            elif not has_timestamp(obj, ts_field):
                ts = "<none: receive time>"
            else:
                ts = row["record"]["timestamp"]
            self.per_line[lineno] = {
                "outcome": "new",
                "exceptionType": row["exception_type"],
                "severity": row["severity"],
                "playbook": row["playbook_id"],
                "approvalRequired": bool(row["approval_required"]),
                "status": row["status"],
                "actionability": row["actionability"],
                "source": row["source_system"],
                "timestamp": ts,
                "recurrences": row["recurrence_count"],
            }

    def golden(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "file": str(self.path.relative_to(REPO)),
            "counts": counts_of(self.report, len(self.parsed)),
            "lines": {str(k): v for k, v in sorted(self.per_line.items())},
        }

    # ------------------------------------------------------------------------------ evidence for coverage

    def stage_events(self, stage: str) -> list[dict[str, Any]]:
        return [e for evs in self.events.values() for e in evs if e["stage"] == stage]

    def evidence(self, stage: str) -> list[dict[str, Any]]:
        return [x for e in self.stage_events(stage) for x in (e["decision"] or {}).get("evidence", [])]

    def outcome_counts(self) -> Counter[str]:
        return Counter(v["outcome"] for v in self.per_line.values())


def dump_golden(data: dict[str, Any]) -> str:
    """Stable JSON: counts indented, one input line per output line (reviewable diffs)."""
    head = {k: v for k, v in data.items() if k != "lines"}
    text = json.dumps(head, indent=2, ensure_ascii=False)[:-2]  # strip the closing "\n}"
    items = [f'    "{k}": {json.dumps(v, ensure_ascii=False)}' for k, v in data["lines"].items()]
    return text + ',\n  "lines": {\n' + ",\n".join(items) + "\n  }\n}\n"


def golden_path(tenant: str) -> Path:
    return GOLDEN_DIR / f"{tenant}.json"


@dataclass
class FreshRun:
    """One tenant, a fresh SQLite store, the example file of its domain processed once."""

    tenant: str
    db: Path
    view: RunView

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db}"


class Runs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._done: dict[str, FreshRun] = {}

    async def get(self, tenant: str) -> FreshRun:
        """Run on first use (inside the calling test's event loop); the store is closed again afterwards."""
        if tenant not in self._done:
            db = self.root / tenant / "t.db"
            db.parent.mkdir(parents=True, exist_ok=True)
            store = await Store.open(f"sqlite+aiosqlite:///{db}")
            try:
                await setup_tenant(store, tenant)
                path = example_file(tenant)
                report = await run_file(store, path, tenant, batch_size=100)
                view = await RunView(tenant, path, report).load(store)
            finally:
                await store.close()
            self._done[tenant] = FreshRun(tenant, db, view)
        return self._done[tenant]
