"""The export files of the tools people leave, recognised by their header.

A header names the tool (Mailchimp's audience exports, Substack's, Buttondown's,
listmonk's, our own ``mailer subscribers export``, or any file with an email column),
and the tool says which column is the address, the name, the tags, the time and IP of
the opt-in, and what a row's status means here: still subscribed, not yet confirmed, or
gone (unsubscribed, cleaned after bounces, blocked), which becomes a suppression.
``Layout.describe()`` says in one line which mapping was used.
"""

from __future__ import annotations

import csv
import datetime as dt
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["GONE", "Layout", "RowError", "layout_for", "split_tags"]

# What a row asks of us. "confirmed" and "pending" add a subscriber (at most as confirmed as
# the import allows); the others are suppression reasons (subscribers.models).
CONFIRMED, PENDING = "confirmed", "pending"
UNSUBSCRIBED, BOUNCED, COMPLAINED, MANUAL = "unsubscribed", "bounced", "complained", "manual"
GONE = (UNSUBSCRIBED, BOUNCED, COMPLAINED, MANUAL)


class RowError(ValueError):
    """A value of a row that cannot be used; the message names its column."""


@dataclass(frozen=True)
class Layout:
    """Where our fields are in one tool's export, and how to read its status."""

    tool: str
    email: int
    names: tuple[int, ...] = ()  # one column, or first and last name
    tags: int | None = None
    consent_at: int | None = None
    confirmed_at: int | None = None
    consent_ip: int | None = None
    status: int | None = None
    outcome: Callable[[str], str | None] | None = None  # status → CONFIRMED … MANUAL, or None
    fixed: str = CONFIRMED  # every row's outcome when there is no status column
    columns: tuple[str, ...] = ()  # the header as written, to describe the mapping
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """``Mailchimp audience export: Email Address → email, …``."""
        c = self.columns
        parts = [f"{c[self.email]} → email"]
        if self.fixed in GONE:  # every row suppresses an address: nothing else is read
            return f"{self.tool}: {parts[0]}"
        if self.names:
            parts.append(" + ".join(c[i] for i in self.names) + " → name")
        for at, what in (
            (self.tags, "tags"),
            (self.consent_at, "consent time"),
            (self.confirmed_at, "confirmation time"),
            (self.consent_ip, "consent IP"),
            (self.status, "status"),
        ):
            if at is not None:
                parts.append(f"{c[at]} → {what}")
        return f"{self.tool}: {', '.join(parts)}" + "".join(f"; {n}" for n in self.notes)


def layout_for(names: list[str]) -> Layout | None:
    """The layout of a header, or None when it has no email column."""
    index = {_key(name): at for at, name in enumerate(names) if name.strip()}
    columns = tuple(name.strip() for name in names)
    for recognise in (_mailchimp, _substack, _buttondown, _listmonk, _ours):
        layout = recognise(index, columns)
        if layout is not None:
            return layout
    email = _first(index, "email", "email address", "e-mail", "e-mail address")
    if email is None:
        return None
    names_at = _first(index, "name", "full name")
    first_last = _present(_first(index, "first name"), _first(index, "last name"))
    return Layout(
        "CSV",
        email,
        names=(names_at,) if names_at is not None else first_last,
        tags=_first(index, "tags", "tag"),
        status=_first(index, "status"),
        outcome=_OURS.get,
        columns=columns,
    )


def _key(name: str) -> str:
    """A header name as compared: case, spaces and underscores do not matter."""
    return " ".join(name.replace("_", " ").split()).lower()


def _first(index: dict[str, int], *keys: str) -> int | None:
    return next((index[k] for k in keys if k in index), None)


def _present(*columns: int | None) -> tuple[int, ...]:
    return tuple(at for at in columns if at is not None)


def _mailchimp(index: dict[str, int], columns: tuple[str, ...]) -> Layout | None:
    """Mailchimp's audience export: a zip of subscribed, unsubscribed and cleaned members,
    each a CSV with the merge fields first, then OPTIN_TIME, CONFIRM_TIME, LEID, TAGS…"""
    if "email address" not in index or not {"optin time", "leid", "euid"} & index.keys():
        return None
    kind, fixed = "audience export", CONFIRMED
    if "unsub time" in index:
        kind, fixed = "unsubscribed members export (suppressed)", UNSUBSCRIBED
    elif "clean time" in index:
        kind, fixed = "cleaned members export (bounced: suppressed)", BOUNCED
    names = _present(_first(index, "first name"), _first(index, "last name"))
    return Layout(
        f"Mailchimp {kind}",
        index["email address"],
        names=names,
        tags=index.get("tags"),
        consent_at=index.get("optin time"),
        confirmed_at=index.get("confirm time"),
        consent_ip=_first(index, "optin ip", "confirm ip"),
        fixed=fixed,
        columns=columns,
        notes=("times in UTC",) if fixed == CONFIRMED else (),
    )


def _substack(index: dict[str, int], columns: tuple[str, ...]) -> Layout | None:
    """Substack's subscriber export: email, active_subscription, expiry, plan,
    email_disabled, created_at (or subscription_date), first_payment_at."""
    marks = {"active subscription", "email disabled", "subscription date", "first payment at"}
    if "email" not in index or not marks & index.keys():
        return None
    disabled = index.get("email disabled")
    return Layout(
        "Substack subscriber export",
        index["email"],
        names=_present(index.get("name")),
        consent_at=_first(index, "subscription date", "created at"),
        status=disabled,
        outcome=_substack_disabled,
        columns=columns,
        notes=("paid plans are not kept",),
    )


def _buttondown(index: dict[str, int], columns: tuple[str, ...]) -> Layout | None:
    """Buttondown's subscriber export: email, creation_date, tags, notes, metadata,
    subscriber_type (regular, premium, unactivated, unsubscribed, removed, …), ip_address."""
    email = _first(index, "email", "email address")
    if email is None or not {"subscriber type", "creation date"} & index.keys():
        return None
    kind = _first(index, "subscriber type", "type")
    return Layout(
        "Buttondown subscriber export",
        email,
        tags=index.get("tags"),
        consent_at=index.get("creation date"),
        consent_ip=index.get("ip address"),
        status=kind,
        outcome=_BUTTONDOWN.get,
        columns=columns,
        notes=("notes and metadata are not kept",),
    )


def _listmonk(index: dict[str, int], columns: tuple[str, ...]) -> Layout | None:
    """listmonk's subscriber export: uuid, email, name, attributes (JSON), status
    (enabled, disabled, blocklisted), created_at, updated_at."""
    if "email" not in index or not {"uuid", "attributes"} <= index.keys():
        return None
    status = index.get("status")
    return Layout(
        "listmonk subscriber export",
        index["email"],
        names=_present(index.get("name")),
        consent_at=index.get("created at"),
        status=status,
        outcome=_LISTMONK.get,
        columns=columns,
        notes=("attributes are not kept",),
    )


def _ours(index: dict[str, int], columns: tuple[str, ...]) -> Layout | None:
    """``mailer subscribers export``: email, name, status, tags, created_at, confirmed_at,
    source."""
    if not {"email", "status", "confirmed at", "source"} <= index.keys():
        return None
    return Layout(
        "mailer export",
        index["email"],
        names=_present(index.get("name")),
        tags=index.get("tags"),
        confirmed_at=index["confirmed at"],
        status=index["status"],
        outcome=_OURS.get,
        columns=columns,
    )


_BUTTONDOWN = {
    **dict.fromkeys(
        ("regular", "premium", "trialed", "unpaid", "gifted", "churning", "churned", "paused",
         "past due", "past_due"),
        CONFIRMED,
    ),
    "unactivated": PENDING,
    "unsubscribed": UNSUBSCRIBED,
    "undeliverable": BOUNCED,
    "complained": COMPLAINED,
    "removed": MANUAL,
    "spammy": MANUAL,
}  # fmt: skip
_LISTMONK = {"enabled": CONFIRMED, "disabled": MANUAL, "blocklisted": MANUAL}
_OURS = {
    "confirmed": CONFIRMED,
    "subscribed": CONFIRMED,
    "active": CONFIRMED,
    "pending": PENDING,
    "unconfirmed": PENDING,
    "unsubscribed": UNSUBSCRIBED,
    "bounced": BOUNCED,
    "cleaned": BOUNCED,
    "complained": COMPLAINED,
}


_TRUE, _FALSE = {"true", "yes", "1", "t"}, {"false", "no", "0", "f", ""}


def _substack_disabled(value: str) -> str | None:
    """``email_disabled``: true when the reader turned Substack's emails off."""
    if value in _TRUE:
        return UNSUBSCRIBED
    return CONFIRMED if value in _FALSE else None


def outcome_of(layout: Layout, record: list[str]) -> str:
    """What the row asks of us; ``RowError`` for a status the tool does not write."""
    if layout.outcome is None or layout.status is None or layout.status >= len(record):
        return layout.fixed
    value = record[layout.status].strip().lower()
    outcome = layout.outcome(value)
    if outcome is None:
        name = layout.columns[layout.status]
        raise RowError(f"{name}: {value[:40]!r} is not a status this import knows")
    return outcome


_SPLIT = re.compile(r"[;,]")


def split_tags(cell: str) -> list[str]:
    """Tags separated by ``;`` or ``,``; Mailchimp's ``"a","b, c"`` (commas kept inside
    quotes) and a JSON list (``["a", "b"]``) too."""
    cell = cell.strip()
    if not cell:
        return []
    if cell.startswith("[") and cell.endswith("]"):
        try:
            listed = json.loads(cell)
        except ValueError:
            listed = None
        if isinstance(listed, list):
            return [str(tag).strip() for tag in listed if str(tag).strip()]
    if cell.startswith('"'):
        quoted = next(csv.reader([cell], skipinitialspace=True), [])
        return [tag.strip() for tag in quoted if tag.strip()]
    return [tag for part in _SPLIT.split(cell) if (tag := part.strip())]


# Go's time.String(), as listmonk writes it: "2024-01-02 03:04:05.123456 +0000 UTC".
_GO_TIME = re.compile(r"(\S+ \S+?)(?:\.(\d+))? ([+-]\d{4})(?: \S+)?\Z")


def parse_time(value: str, column: str) -> dt.datetime | None:
    """An aware UTC time from an export's time cell (ISO 8601, Mailchimp's naive UTC
    ``2024-01-02 03:04:05``, Go's ``… +0000 UTC``); None for an empty cell."""
    value = value.strip()
    if not value:
        return None
    go = _GO_TIME.match(value)
    if go:
        fraction = (go[2] or "")[:6]
        value = f"{go[1]}{'.' + fraction if fraction else ''}{go[3]}"
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise RowError(f"{column}: {value[:40]!r} is not a date and time") from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def parse_ip(value: str, column: str) -> str:
    """An IP address as written, checked; '' for an empty cell."""
    value = value.strip()
    if not value:
        return ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise RowError(f"{column}: {value[:50]!r} is not an IP address") from None
