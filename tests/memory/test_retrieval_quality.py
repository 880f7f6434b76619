"""The labeled retrieval set (tests/data/retrieval) through the real pipeline, lexical + structured (`none`).

A regression guard a little under the level measured with the example packs' `similarity.keyFields` (recall@5
0.881, MRR 0.963 with `none`, target 0.85; `python -m bench.memory --only quality` reports both embedders),
and the hard requirement: zero cross-tenant hits.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.memory import evaluate  # noqa: E402


async def test_retrieval_set_lexical_quality_and_isolation(tmp_path: Path) -> None:
    q = await evaluate("none", f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    assert q.queries >= 150
    assert q.cross_tenant_hits == 0
    assert q.recall_at_5 >= 0.86 and q.mrr >= 0.94, (q.recall_at_5, q.mrr)


def test_retrieval_set_shape() -> None:
    import json

    cases = [json.loads(x) for x in (ROOT / "tests/data/retrieval/cases.jsonl").open()]
    queries = [json.loads(x) for x in (ROOT / "tests/data/retrieval/queries.jsonl").open()]
    assert len(cases) >= 2000 and len(queries) >= 150
    assert {c["domain"] for c in cases} == {"finance", "healthcare"}
    ids = {c["submission"]["exceptionId"]: c["tenant"] for c in cases}
    for q in queries:
        assert q["relevant"] and all(ids[r] == q["tenant"] for r in q["relevant"])
        assert q["query"]["exceptionId"] not in ids  # queries are never indexed themselves
