"""The pure hash-chain functions: canonical form, hashing, and naming the first broken entry."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from breakdesk.audit import (
    GENESIS_HASH,
    AuditEntry,
    ChainVerifier,
    body_json,
    canonical_json,
    entry_body,
    entry_hash,
    link,
    link_json,
    verify,
)

T0 = datetime(2025, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)


def _chain(n: int = 5) -> list[AuditEntry]:
    return link(
        "acme",
        0,
        GENESIS_HASH,
        [(T0 + timedelta(seconds=i), "bot", "act", f"EXC-{i}", {"i": i}) for i in range(n)],
    )


def test_canonical_json_is_sorted_compact_and_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    value = {"b": 1, "a": {"z": [1, 2], "y": datetime(2025, 1, 2, 5, 4, 5, tzinfo=plus_two)}}
    assert canonical_json(value) == b'{"a":{"y":"2025-01-02T03:04:05.000000Z","z":[1,2]},"b":1}'
    assert canonical_json({"at": datetime(2025, 1, 2, 3, 4, 5)}) == canonical_json(
        {"at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)}
    )


def test_entry_hash_is_sha256_of_prev_hex_and_canonical_json() -> None:
    entry = {"seq": 1, "actor": "a"}
    expected = hashlib.sha256(GENESIS_HASH.encode() + b'{"actor":"a","seq":1}').hexdigest()
    assert entry_hash(GENESIS_HASH, entry) == expected


def test_spliced_body_is_byte_identical_to_the_canonical_body() -> None:
    """The chain encodes an entry's detail once and splices it into the body: the bytes hashed must be
    exactly the canonical JSON of the whole body, which is what verification recomputes."""
    plus_two = timezone(timedelta(hours=2))
    details: list[dict[str, object]] = [
        {},
        {"i": 1},
        {"stages": [{"stage": "triage", "evidence": [{"kind": "rule", "data": {"ä": "ü", "n": None}}]}]},
        {"z": 1.5e300, "a": [True, False], "emoji": "\U0001f600", "quote": 'a"b\\c', 3: "non-str key"},
        {"at": datetime(2025, 1, 2, 5, 4, 5, tzinfo=plus_two), "seq": "shadows nothing"},
    ]
    for n, detail in enumerate(details, 1):
        for at in (T0, T0.astimezone(plus_two), datetime(2025, 1, 2, 3, 4, 5)):
            for subject, actor in (("EXC-1", "bot"), ("é\"x", "ünïcode actor")):
                spliced = body_json("tenant-ä", n, at, actor, "pipeline.decided", subject, canonical_json(detail))
                assert spliced == canonical_json(entry_body("tenant-ä", n, at, actor, "pipeline.decided", subject, detail))


def test_link_json_returns_the_stored_detail_text_and_the_same_chain_as_link() -> None:
    items = [(T0 + timedelta(seconds=i), "bot", "act", f"EXC-{i}", {"i": i, "b": [i]}) for i in range(4)]
    pairs = link_json("acme", 7, "f" * 64, items)
    assert [e for e, _ in pairs] == link("acme", 7, "f" * 64, items)
    assert [d for _, d in pairs] == [canonical_json(e.detail).decode() for e, _ in pairs]
    assert all(entry_hash(e.prev_hash, e.body()) == e.hash for e, _ in pairs)


def test_link_and_verify_ok() -> None:
    chain = _chain()
    assert [e.seq for e in chain] == [1, 2, 3, 4, 5]
    assert chain[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))
    assert verify(chain).ok
    assert verify(chain).checked == 5
    assert verify([]).ok


def test_altered_content_is_a_hash_mismatch_at_that_seq() -> None:
    chain = _chain()
    chain[2] = replace(chain[2], detail={"i": 999})
    result = verify(chain)
    assert (result.ok, result.first_broken_seq, result.checked) == (False, 3, 2)
    assert result.reason is not None and "hash mismatch" in result.reason


def test_rehashed_entry_breaks_the_next_link() -> None:
    chain = _chain()
    forged = replace(chain[2], actor="mallory")
    chain[2] = replace(forged, hash=entry_hash(forged.prev_hash, forged.body()))
    result = verify(chain)
    assert result.first_broken_seq == 4
    assert result.reason is not None and "prev_hash mismatch" in result.reason


def test_missing_entry_is_a_gap() -> None:
    chain = _chain()
    del chain[1]
    result = verify(chain)
    assert result.first_broken_seq == 2
    assert result.reason is not None and "gap" in result.reason


def test_entry_moved_to_another_tenant_does_not_verify() -> None:
    chain = _chain(2)
    moved = replace(chain[1], tenant_id="other")
    result = ChainVerifier(tenant_id="acme")
    result.feed(chain[0])
    assert not result.feed(moved)
    assert result.finish().first_broken_seq == 2


def test_truncated_tail_detected_against_head() -> None:
    chain = _chain()
    verifier = ChainVerifier()
    for entry in chain[:3]:
        verifier.feed(entry)
    result = verifier.finish(head_seq=5, head_hash=chain[-1].hash)
    assert (result.ok, result.first_broken_seq) == (False, 4)
    assert verifier.finish(head_seq=3, head_hash=chain[2].hash).ok
