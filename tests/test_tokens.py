"""Unit tests of the link signer: a token opens only what it was made for, and only while fresh.

Every confirm and unsubscribe link in email rests on these guarantees: a changed character,
a token of another purpose, a removed secret or an old confirm token must all be refused,
while rotating in a new secret must not break the links already sent.
"""

from __future__ import annotations

import itertools
import time
import types

import itsdangerous.timed
import pytest

from mailer.errors import TokenError, TokenExpired
from mailer.tokens import Purpose, Signer


def _sign_at(signer: Signer, purpose: Purpose, payload: object, when: float, monkeypatch) -> str:
    """A token signed as if the clock said ``when`` (itsdangerous reads ``time.time``)."""
    with monkeypatch.context() as m:
        m.setattr(itsdangerous.timed, "time", types.SimpleNamespace(time=lambda: when))
        return signer.sign(purpose, payload)


def _change(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


def test_round_trip_for_every_purpose():
    signer = Signer(["s3cret"])
    for purpose in Purpose:
        assert signer.verify(purpose, signer.sign(purpose, 42)) == 42
    assert signer.verify(Purpose.TRACK, signer.sign(Purpose.TRACK, [7, "https://x.test/"])) == [
        7,
        "https://x.test/",
    ]


def test_a_token_is_refused_for_any_other_purpose():
    signer = Signer(["s3cret"])
    for made, used in itertools.permutations(Purpose, 2):
        with pytest.raises(TokenError):
            signer.verify(used, signer.sign(made, 1))


@pytest.mark.parametrize("part", [0, 1, 2])  # payload, timestamp, signature
def test_changing_a_single_character_is_refused(part):
    signer = Signer(["s3cret"])
    token = signer.sign(Purpose.UNSUBSCRIBE, 12345)
    pieces = token.split(".")
    assert len(pieces) == 3
    # A character in the middle of the part: it carries six whole bits, never padding.
    index = sum(len(p) + 1 for p in pieces[:part]) + len(pieces[part]) // 2
    with pytest.raises(TokenError) as caught:
        signer.verify(Purpose.UNSUBSCRIBE, _change(token, index))
    assert not isinstance(caught.value, TokenExpired)


def test_garbage_and_empty_tokens_are_refused():
    signer = Signer(["s3cret"])
    for token in ("", "not-a-token", "a.b.c", "...."):
        with pytest.raises(TokenError):
            signer.verify(Purpose.CONFIRM, token)


def test_another_secret_does_not_verify():
    token = Signer(["one"]).sign(Purpose.CONFIRM, 5)
    with pytest.raises(TokenError):
        Signer(["two"]).verify(Purpose.CONFIRM, token)


def test_rotation_newest_signs_and_older_still_verifies():
    old_token = Signer(["old"]).sign(Purpose.CONFIRM, 5)
    rotated = Signer(["new", "old"])
    assert rotated.verify(Purpose.CONFIRM, old_token) == 5
    new_token = rotated.sign(Purpose.CONFIRM, 6)
    # The first secret signs: a signer that knows only the new one accepts it...
    assert Signer(["new"]).verify(Purpose.CONFIRM, new_token) == 6
    # ...and one that knows only the old one does not.
    with pytest.raises(TokenError):
        Signer(["old"]).verify(Purpose.CONFIRM, new_token)
    # Once the old secret is removed, its tokens stop working.
    with pytest.raises(TokenError):
        Signer(["new"]).verify(Purpose.CONFIRM, old_token)


def test_max_age(monkeypatch):
    signer = Signer(["s3cret"])
    day = 86400
    old = _sign_at(signer, Purpose.CONFIRM, 9, time.time() - 8 * day, monkeypatch)
    with pytest.raises(TokenExpired):
        signer.verify(Purpose.CONFIRM, old, max_age=7 * day)
    assert signer.verify(Purpose.CONFIRM, old, max_age=9 * day) == 9
    assert signer.verify(Purpose.CONFIRM, old) == 9  # no max_age: age does not matter
    fresh = signer.sign(Purpose.CONFIRM, 9)
    assert signer.verify(Purpose.CONFIRM, fresh, max_age=7 * day) == 9


def test_expired_is_a_token_error():
    assert issubclass(TokenExpired, TokenError)


@pytest.mark.parametrize("secrets", [[], [""], ["good", ""]])
def test_missing_secret_is_refused(secrets):
    with pytest.raises(TokenError, match="MAILER_SECRET_KEYS"):
        Signer(secrets)
