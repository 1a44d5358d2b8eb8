"""Double opt-in and opt-out on SQLite and on the real PostgreSQL server alike.

What a reader sees is email, so these tests read the confirmation message from the outbox
as a mail client would and follow its link. They pin the outcomes of every repeat
(pending, resent, rate limited, already confirmed, refused), that suppressed addresses get
no mail at all, and that tampered, expired, wrong-purpose and retired-secret tokens fail.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import time
import types

import itsdangerous.timed
import pytest
from sqlalchemy import select

import subscribers.optin
from mailer.content.render import Renderer
from mailer.delivery.outbox import OutboxBackend
from mailer.errors import InvalidAddress, TokenError, TokenExpired
from mailer.sending.confirmation import ConfirmationMail
from mailer.tokens import Purpose, Signer
from subscribers import store
from subscribers.models import Activity, Status, Subscriber, SuppressionReason
from subscribers.optin import OptIn

CONSENT = store.Consent(
    source="form", text="I agree", ip="198.51.100.4", user_agent="Mozilla/5.0 (test)"
)
CONFIRM_URL = re.compile(r"https://mail\.example\.org/confirm/[A-Za-z0-9_.\-]+")


@pytest.fixture
def outbox(tmp_path):
    return tmp_path / "outbox"


@pytest.fixture
def make_optin(settings, sessions, outbox):
    def make(**overrides):
        current = settings.model_copy(update=overrides)
        mail = ConfirmationMail(current, Renderer(current), OutboxBackend(outbox))
        return OptIn(current, sessions, Signer(current.secret_keys), mail)

    return make


@pytest.fixture
def clock(monkeypatch):
    """The opt-in module's clock, set by the test (tokens keep the real time)."""
    state = types.SimpleNamespace(now=dt.datetime(2030, 1, 7, 12, 0, 0, 100_000, tzinfo=dt.UTC))
    monkeypatch.setattr(subscribers.optin, "utcnow", lambda: state.now)
    return state


def _mail(outbox):
    if not outbox.exists():
        return []
    paths = sorted(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in paths]


def _confirm_url(message):
    text, html = (part.get_content() for part in message.iter_parts())
    found = CONFIRM_URL.findall(text)
    assert len(found) == 1, text
    assert found[0] in html
    return found[0]


def _token(url):
    return url.rsplit("/", 1)[1]


def _subscriber(sessions, email_address):
    with sessions() as session:
        return store.find(session, email_address)


def test_subscribe_sends_one_confirmation_and_its_link_confirms(make_optin, sessions, outbox):
    optin = make_optin()
    result = optin.subscribe(" Reader@Example.COM ", CONSENT, name="Rita Reader")
    assert (result.outcome, result.email) == ("pending", "Reader@example.com")
    pending = _subscriber(sessions, "reader@example.com")
    assert pending.status == Status.PENDING
    assert pending.confirmation_sent_at is not None
    assert (pending.consent_ip, pending.consent_user_agent) == (CONSENT.ip, CONSENT.user_agent)

    [message] = _mail(outbox)
    assert str(message["From"]) == "The Weekly <newsletter@example.com>"
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Rita Reader", "Reader@example.com")
    assert message["Subject"] == "Confirm your subscription to The Weekly"
    assert message.get_content_type() == "multipart/alternative"
    types_ = [part.get_content_type() for part in message.iter_parts()]
    assert types_ == ["text/plain", "text/html"]
    url = _confirm_url(message)

    confirmed = optin.confirm(_token(url))
    assert confirmed.id == pending.id
    assert _subscriber(sessions, "reader@example.com").status == Status.CONFIRMED
    assert optin.confirm(_token(url)).status == Status.CONFIRMED  # following it twice is fine
    assert len(_mail(outbox)) == 1


def test_repeat_while_pending_is_rate_limited_then_resent(make_optin, sessions, outbox, clock):
    optin = make_optin()  # resend_confirmation_minutes defaults to 10
    assert optin.subscribe("pat@example.com", CONSENT).outcome == "pending"
    clock.now += dt.timedelta(minutes=9)
    assert optin.subscribe("PAT@example.com", CONSENT).outcome == "rate_limited"
    assert len(_mail(outbox)) == 1
    clock.now += dt.timedelta(minutes=2)
    assert optin.subscribe("pat@example.com", CONSENT).outcome == "resent"
    first, second = _mail(outbox)
    assert first["Message-ID"] != second["Message-ID"]
    # Both links work: the reader may follow the older one.
    optin.confirm(_token(_confirm_url(first)))
    optin.confirm(_token(_confirm_url(second)))
    assert _subscriber(sessions, "pat@example.com").status == Status.CONFIRMED


def test_resend_without_a_wait_sends_a_new_email(make_optin, outbox, clock):
    optin = make_optin(resend_confirmation_minutes=0)
    assert optin.subscribe("quinn@example.com", CONSENT).outcome == "pending"
    clock.now += dt.timedelta(milliseconds=300)  # within the same second
    assert optin.subscribe("quinn@example.com", CONSENT).outcome == "resent"
    mail = _mail(outbox)
    assert len(mail) == 2, "the second confirmation email replaced the first"
    assert mail[0]["Message-ID"] != mail[1]["Message-ID"]


def test_confirmed_subscriber_gets_no_mail_when_subscribing_again(make_optin, sessions, outbox):
    optin = make_optin()
    optin.subscribe("sam@example.com", CONSENT)
    optin.confirm(_token(_confirm_url(_mail(outbox)[0])))
    result = optin.subscribe("Sam@EXAMPLE.com", CONSENT)
    assert result.outcome == "already_confirmed"
    assert len(_mail(outbox)) == 1
    assert _subscriber(sessions, "sam@example.com").status == Status.CONFIRMED


def test_unsubscribe_twice_and_resubscribe_is_refused(make_optin, sessions, outbox):
    optin = make_optin()
    optin.subscribe("una@example.com", CONSENT)
    confirm_token = _token(_confirm_url(_mail(outbox)[0]))
    subscriber = optin.confirm(confirm_token)
    token = _token(optin.unsubscribe_url(subscriber.id))
    assert optin.subscriber_for_unsubscribe(token).email == "una@example.com"
    assert optin.unsubscribe(token, how="one-click").status == Status.UNSUBSCRIBED
    assert optin.unsubscribe(token, how="one-click").status == Status.UNSUBSCRIBED
    with sessions() as session:
        assert store.suppression_of(session, "una@example.com").reason == "unsubscribed"
        kinds = session.scalars(
            select(Activity.kind).where(Activity.subscriber_id == subscriber.id)
        ).all()
        assert kinds.count("unsubscribed") == 1

    assert optin.subscribe("UNA@example.com", CONSENT).outcome == "refused"
    assert len(_mail(outbox)) == 1
    assert _subscriber(sessions, "una@example.com").status == Status.UNSUBSCRIBED
    with sessions() as session:
        refused = session.scalars(select(Activity).where(Activity.kind == "resubscribe_refused"))
        assert [(a.subscriber_id, a.detail) for a in refused] == [
            (subscriber.id, {"source": "form"})
        ]
    # The old confirmation link does not bring them back either.
    with pytest.raises(TokenError):
        optin.confirm(confirm_token)
    assert _subscriber(sessions, "una@example.com").status == Status.UNSUBSCRIBED


def test_erased_address_is_refused_and_its_links_are_dead(make_optin, sessions, outbox):
    optin = make_optin()
    optin.subscribe("vic@example.com", CONSENT)
    subscriber = optin.confirm(_token(_confirm_url(_mail(outbox)[0])))
    with sessions.begin() as session:
        store.erase(session, "vic@example.com")
    assert optin.subscribe("vic@example.com", CONSENT).outcome == "refused"
    assert len(_mail(outbox)) == 1
    with pytest.raises(TokenError):
        optin.unsubscribe(_token(optin.unsubscribe_url(subscriber.id)), how="one-click")
    with sessions() as session:
        refused = session.scalars(select(Activity).where(Activity.kind == "resubscribe_refused"))
        assert [a.subscriber_id for a in refused] == [None]


def test_a_suppressed_pending_address_gets_no_confirmation(make_optin, sessions, outbox, clock):
    optin = make_optin()
    optin.subscribe("wes@example.com", CONSENT)
    pending = _subscriber(sessions, "wes@example.com")
    with sessions.begin() as session:  # e.g. the operator suppresses it by hand
        store.suppress(session, pending.email_hash, SuppressionReason.MANUAL, "operator")
    clock.now += dt.timedelta(minutes=1)  # within the resend interval, in another second
    outcome = optin.subscribe("wes@example.com", CONSENT).outcome
    after = _subscriber(sessions, "wes@example.com")
    assert (outcome, len(_mail(outbox))) == ("refused", 1)
    assert after.confirmation_sent_at == pending.confirmation_sent_at


def test_single_opt_in_confirms_at_once_without_mail(make_optin, sessions, outbox):
    optin = make_optin(double_opt_in=False)
    assert optin.subscribe("xena@example.com", CONSENT).outcome == "confirmed"
    assert optin.subscribe("xena@example.com", CONSENT).outcome == "already_confirmed"
    subscriber = _subscriber(sessions, "xena@example.com")
    assert subscriber.status == Status.CONFIRMED
    assert subscriber.confirmed_at is not None
    assert _mail(outbox) == []


def test_invalid_address_is_refused(make_optin, sessions, outbox):
    with pytest.raises(InvalidAddress):
        make_optin().subscribe("not an address", CONSENT)
    with sessions() as session:
        assert session.scalars(select(Subscriber)).all() == []
    assert _mail(outbox) == []


def test_tampered_wrong_purpose_and_expired_tokens(make_optin, sessions, outbox, monkeypatch):
    optin = make_optin()
    optin.subscribe("yan@example.com", CONSENT)
    token = _token(_confirm_url(_mail(outbox)[0]))
    subscriber_id = _subscriber(sessions, "yan@example.com").id
    middle = len(token) - 10  # inside the signature
    tampered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    with pytest.raises(TokenError):
        optin.confirm(tampered)
    with pytest.raises(TokenError):
        optin.confirm(optin.signer.sign_ids(Purpose.UNSUBSCRIBE, subscriber_id))
    with pytest.raises(TokenError):
        optin.unsubscribe(token, how="one-click")  # a confirm token does not unsubscribe

    eight_days_ago = time.time() - 8 * 86400
    with monkeypatch.context() as m:
        m.setattr(itsdangerous.timed, "time", types.SimpleNamespace(time=lambda: eight_days_ago))
        expired = optin.signer.sign(Purpose.CONFIRM, subscriber_id)
    with pytest.raises(TokenExpired):
        optin.confirm(expired)
    assert _subscriber(sessions, "yan@example.com").status == Status.PENDING
    optin.confirm(token)
    assert _subscriber(sessions, "yan@example.com").status == Status.CONFIRMED


def test_secret_rotation(make_optin, sessions, outbox):
    before = make_optin(secret_keys=["old-secret"])
    before.subscribe("zoe@example.com", CONSENT)
    old_token = _token(_confirm_url(_mail(outbox)[0]))
    subscriber_id = _subscriber(sessions, "zoe@example.com").id
    old_unsubscribe = _token(before.unsubscribe_url(subscriber_id))

    retired = make_optin(secret_keys=["new-secret"])
    with pytest.raises(TokenError):
        retired.confirm(old_token)
    with pytest.raises(TokenError):
        retired.unsubscribe(old_unsubscribe, how="one-click")

    rotated = make_optin(secret_keys=["new-secret", "old-secret"])
    assert rotated.confirm(old_token).status == Status.CONFIRMED
    assert rotated.unsubscribe(old_unsubscribe, how="one-click").status == Status.UNSUBSCRIBED
    new_token = _token(rotated.unsubscribe_url(subscriber_id))
    assert retired.subscriber_for_unsubscribe(new_token).id == subscriber_id
