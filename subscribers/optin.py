"""Opting in and out: subscribe, the confirmation email, confirm, unsubscribe.

Whatever the address's state, ``subscribe`` reports an outcome to the caller but
the web app answers every visitor the same way, before calling it, so nobody can
learn from the form whether an address is on the list. Suppressed addresses are
never mailed, not even a confirmation: their attempt is recorded for the operator.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy.orm import Session, sessionmaker

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.errors import TokenError
from mailer.tokens import Purpose, Signer
from subscribers import store
from subscribers.addresses import normalize
from subscribers.models import Status, Subscriber

__all__ = ["OptIn", "SendConfirmation", "SubscribeOutcome"]

Outcome = Literal["pending", "confirmed", "already_confirmed", "resent", "rate_limited", "refused"]


@dataclass(frozen=True)
class SubscribeOutcome:
    outcome: Outcome
    email: str


class SendConfirmation(Protocol):
    """Mails a reader the link that confirms their address. Handed in (the Runtime builds
    it from the renderer and the backend), so the store imports neither."""

    def __call__(self, subscriber_id: int, address: str, name: str, confirm_url: str) -> None: ...


class OptIn:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        signer: Signer,
        send: SendConfirmation,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.signer = signer
        self.send = send

    def subscribe(self, email: str, consent: store.Consent, name: str = "") -> SubscribeOutcome:
        """Handle a request to join; raises ``InvalidAddress`` for an unusable address.

        The confirmation email goes out after the transaction commits, so its link
        never names a subscriber that was rolled back.
        """
        email = normalize(email)
        status = Status.PENDING if self.settings.double_opt_in else Status.CONFIRMED
        with self.sessions.begin() as session:
            result = store.add(session, email, consent, name=name, status=status)
            subscriber = result.subscriber
            if (
                result.outcome == "suppressed"
                or subscriber is None
                or subscriber.status not in (Status.PENDING, Status.CONFIRMED)
            ):
                subscriber_id = subscriber.id if subscriber is not None else None
                store.record(session, subscriber_id, "resubscribe_refused", source=consent.source)
                return SubscribeOutcome("refused", email)
            if subscriber.status == Status.CONFIRMED:
                added = result.outcome == "added"
                return SubscribeOutcome("confirmed" if added else "already_confirmed", email)
            if result.outcome == "exists" and not self._may_resend(subscriber):
                return SubscribeOutcome("rate_limited", email)
            subscriber.confirmation_sent_at = utcnow()
        self.send_confirmation(subscriber)
        return SubscribeOutcome("pending" if result.outcome == "added" else "resent", email)

    def _may_resend(self, subscriber: Subscriber) -> bool:
        sent = subscriber.confirmation_sent_at
        wait = dt.timedelta(minutes=self.settings.resend_confirmation_minutes)
        return sent is None or utcnow() - sent >= wait

    def send_confirmation(self, subscriber: Subscriber) -> None:
        self.send(subscriber.id, subscriber.email, subscriber.name, self.confirm_url(subscriber))

    def confirm_url(self, subscriber: Subscriber) -> str:
        token = self.signer.sign(Purpose.CONFIRM, subscriber.id)
        return f"{self.settings.public_url}/confirm/{token}"

    def unsubscribe_url(self, subscriber_id: int) -> str:
        token = self.signer.sign_ids(Purpose.UNSUBSCRIBE, subscriber_id)
        return f"{self.settings.public_url}/unsubscribe/{token}"

    def subscriber_to_confirm(self, token: str) -> Subscriber:
        """The subscriber a confirmation token names, for the page that asks to confirm;
        ``TokenError`` where ``confirm`` would raise it."""
        with self.sessions() as session:
            return _still_joining(_subscriber(session, self._confirm_id(token)))

    def confirm(self, token: str) -> Subscriber:
        """Confirm the subscriber a confirmation token names; ``TokenError`` if it cannot."""
        subscriber_id = self._confirm_id(token)
        with self.sessions.begin() as session:
            subscriber = _still_joining(_subscriber(session, subscriber_id))
            if subscriber.status == Status.PENDING:
                store.confirm(session, subscriber)
            return subscriber

    def _confirm_id(self, token: str) -> object:
        max_age = self.settings.confirm_link_days * 86400
        return self.signer.verify(Purpose.CONFIRM, token, max_age=max_age)

    def subscriber_for_unsubscribe(self, token: str) -> Subscriber:
        """The subscriber an unsubscribe token names, for the page that asks to confirm."""
        (subscriber_id,) = self.signer.verify_ids(Purpose.UNSUBSCRIBE, token, 1)
        with self.sessions() as session:
            return _subscriber(session, subscriber_id)

    def unsubscribe(self, token: str, how: str) -> Subscriber:
        """Unsubscribe the token's subscriber; doing it twice is fine."""
        (subscriber_id,) = self.signer.verify_ids(Purpose.UNSUBSCRIBE, token, 1)
        with self.sessions.begin() as session:
            subscriber = _subscriber(session, subscriber_id)
            store.unsubscribe(session, subscriber, how)
            return subscriber


def _still_joining(subscriber: Subscriber) -> Subscriber:
    if subscriber.status not in (Status.PENDING, Status.CONFIRMED):
        raise TokenError("this address has left the list; subscribe again")
    return subscriber


def _subscriber(session: Session, subscriber_id: object) -> Subscriber:
    subscriber = session.get(Subscriber, subscriber_id) if isinstance(subscriber_id, int) else None
    if subscriber is None:
        raise TokenError("this link names no subscriber (the address may have been erased)")
    return subscriber
