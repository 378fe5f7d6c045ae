"""The key ring: keys stored as hashes, checked in constant time, surviving a restart."""

from __future__ import annotations

import json
import uuid

import pytest

from asyncnb.contract.keys import Scope, looks_like_key, parse_key
from asyncnb.engine.keys import KeyRefused, KeyRing, TokenBucket
from asyncnb.storage import Storage


def storage() -> Storage:
    return Storage(f"memory://keys-{uuid.uuid4().hex}")


def test_a_new_key_is_stored_as_a_hash_only() -> None:
    store = storage()
    ring = KeyRing(store)
    key, text = ring.new("bob", ["iris"], [Scope.INVOKE])
    ring.save(key)
    parsed = parse_key(text)
    assert parsed is not None and parsed[0] == key.id
    raw = store.read_bytes(store.key_path(key.id))
    assert raw is not None
    assert parsed[1].encode() not in raw and text.encode() not in raw
    record = json.loads(raw)
    assert set(record) >= {"hash", "salt", "name", "apis", "scopes"}
    assert len(record["hash"]) == 64


def test_keys_survive_a_restart_and_revocation_holds() -> None:
    store = storage()
    ring = KeyRing(store)
    key, text = ring.new("bob", ["*"], [Scope.INVOKE, Scope.READ], max_queued=3)
    ring.save(key)
    again = KeyRing(store)
    again.load()
    found = again.check(text)
    assert (found.name, found.apis, found.max_queued) == ("bob", ("*",), 3)
    assert found.scopes == {Scope.INVOKE, Scope.READ}
    revoked = again.revoked(key.id)
    assert revoked is not None
    again.save(revoked)
    third = KeyRing(store)
    third.load()
    with pytest.raises(KeyRefused, match="revoked"):
        third.check(text)


def test_check_refuses_what_names_nobody() -> None:
    ring = KeyRing(storage())
    key, text = ring.new("bob", ["iris"], [Scope.INVOKE], expires_in_s=10, now=1000.0)
    ring.save(key)
    assert ring.check(text, now=1005.0) is key
    with pytest.raises(KeyRefused, match="expired"):
        ring.check(text, now=1010.0)
    with pytest.raises(KeyRefused, match="invalid API key"):
        ring.check(text[:-1] + ("A" if text[-1] != "A" else "B"), now=1005.0)
    with pytest.raises(KeyRefused, match="invalid API key"):
        ring.check("ank_ffffffffffffffff_" + "x" * 43)
    with pytest.raises(KeyRefused, match="malformed"):
        ring.check("ank_nope")


def test_last_use_is_flushed_once() -> None:
    store = storage()
    ring = KeyRing(store)
    key, text = ring.new("bob", ["iris"], [Scope.INVOKE])
    ring.save(key)
    ring.check(text, now=1234.0)
    assert ring.flush_usage() == 1
    assert ring.flush_usage() == 0
    reloaded = KeyRing(store)
    reloaded.load()
    found = reloaded.get(key.id)
    assert found is not None and found.last_used_at == 1234.0


def test_unreadable_records_are_skipped() -> None:
    store = storage()
    store.write_json(store.key_path("0123456789abcdef"), {"id": "0123456789abcdef"})
    store.write_json(store.path("keys", "stray.json"), {})
    ring = KeyRing(store)
    ring.load()
    assert len(ring) == 0


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(10.0) == pytest.approx(0.5)
    assert bucket.take(10.5) == 0.0  # one token came back in half a second
    assert bucket.take(100.0) == 0.0
    assert bucket.tokens == pytest.approx(2.0)  # refills to the burst, never past it


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer ank_0123456789abcdef_" + "A" * 43, True),
        ("token ank_0123456789abcdef_" + "A" * 43, True),
        ("ank_0123456789abcdef_" + "A" * 43, True),
        ("Basic ank_0123456789abcdef_" + "A" * 43, False),
        ("Bearer ank_0123456789abcdef_" + "A" * 42, False),
        ("Bearer jupytertoken", False),
        ("", False),
    ],
)
def test_looks_like_key(header: str, expected: bool) -> None:
    assert looks_like_key(header) is expected
