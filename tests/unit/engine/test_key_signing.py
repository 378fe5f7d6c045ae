"""Keys whose secrets the gateway derives again (engine/key_signing.py, KeyRing)."""

from __future__ import annotations

import pytest

from asyncnb.contract.keys import Scope, parse_key
from asyncnb.engine.key_signing import KeySigning
from asyncnb.engine.keys import KeyRing

from .harness import memory_storage

SECRET = "k" * 40


def test_a_derived_key_is_an_ordinary_key_whose_text_can_be_derived_again() -> None:
    storage = memory_storage()
    ring = KeyRing(storage, KeySigning(SECRET))
    key, text = ring.new("team", ["double"], [Scope.INVOKE])
    ring.save(key)
    assert parse_key(text) is not None and key.sigv4
    assert ring.signing_text(key.id) == text
    assert SECRET not in str(storage.read_json(storage.key_path(key.id)))
    assert text.split("_", 2)[2] not in str(storage.read_json(storage.key_path(key.id)))
    again = KeyRing(storage, KeySigning(SECRET))
    again.load()
    assert again.check(text).id == key.id and again.signing_text(key.id) == text


def test_keys_made_without_a_signing_secret_or_after_a_change_cannot_sign() -> None:
    storage = memory_storage()
    plain = KeyRing(storage)
    key, _ = plain.new("team", ["*"], [Scope.INVOKE])
    plain.save(key)
    assert not key.sigv4 and plain.signing_text(key.id) is None
    assert "sigv4" not in storage.read_json(storage.key_path(key.id))
    signing = KeyRing(storage, KeySigning(SECRET))
    signing.load()
    assert signing.signing_text(key.id) is None and signing.signing_text("0" * 16) is None
    derived, derived_text = signing.new("other", ["*"], [Scope.INVOKE])
    signing.save(derived)
    changed = KeyRing(storage, KeySigning("c" * 40))
    changed.load()
    assert changed.signing_text(derived.id) != derived_text  # its hash then refuses it
    assert changed.check(derived_text).id == derived.id  # the bearer form still works


def test_a_short_signing_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        KeySigning("short")
    assert "k" not in repr(KeySigning(SECRET)).replace("KeySigning", "")
