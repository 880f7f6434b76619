"""The pure hash-chain functions: canonical form, hashing, and naming the first broken entry."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from breakdesk.audit import GENESIS_HASH, AuditEntry, ChainVerifier, canonical_json, entry_hash, link, verify

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
